"""The one recipe: build the run -> train (time budget, checkpoints, resume) -> evaluate -> report.

``train_and_evaluate(config, workdir)`` works for every task kind (``task.kind``) and writes into
``workdir``: ``config.json`` (the resolved experiment config, reread by ``jaxspeech eval`` /
``transcribe --checkpoint``), the tokenizer (and the decoding word list), checkpoints,
``metrics.jsonl`` + TensorBoard events, ``eval/<set>.jsonl`` (per-example hypotheses and errors),
``plots/*.png``, ``report.md``, and what the task writes after training (Whisper: ``whisper_hf/``).
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any

import ml_collections

from jaxspeech import paths
from jaxspeech.config_dict import plain
from jaxspeech.data.tokenizers import TOKENIZER_FILES
from jaxspeech.recipes.build import Run, build
from jaxspeech.recipes.dormancy_hook import dormancy_hooks
from jaxspeech.evals.metrics import headline
from jaxspeech.recipes.evaluate import during_training, evaluate_run
from jaxspeech.recipes.from_run import FromRuns
from jaxspeech.recipes.report import write_report
from jaxspeech.recipes.restore import restore
from jaxspeech.recipes.stages import train_stages
from jaxspeech.recipes.word_list import write_words
from jaxspeech.recipes.workdir import CONFIG_JSON, save_config
from jaxspeech.sharding import multihost
from jaxspeech.sharding.mesh import make_mesh
from jaxspeech.train.config import train_config_from_dict
from jaxspeech.train.loop import train
from jaxspeech.train.plots import plot_learning_curves
from jaxspeech.train.state import State
from jaxspeech.train.warm_start import write_step0_checkpoint

log = logging.getLogger(__name__)


def keep_tokenizer(run: Run, workdir: str) -> str:
    """Copies the tokenizer (a file, or a directory's tokenizer files: not a checkpoint's weights)
    into ``workdir`` so the run is self-contained; returns the copy's path."""
    source = run.tokenizer_path
    is_dir = paths.is_dir(source)
    target = paths.join(workdir, "tokenizer" + ("" if is_dir else os.path.splitext(source)[1]))
    if paths.absolute(source) != paths.absolute(target):
        if is_dir:
            paths.make_dirs(target)
            for name in TOKENIZER_FILES:
                if paths.is_file(paths.join(source, name)):
                    paths.copy_file(paths.join(source, name), paths.join(target, name))
        else:
            paths.copy_file(source, target)
    return target


def starting_point(run: Run):
    """The weights of step 0 (``Pretrained``, ``tasks/kinds.py``): ``init.from_run``'s runs over the
    task's pretrained checkpoints, or those alone; None for a random init."""
    pretrained = run.kind.pretrained()
    return FromRuns(run.from_run, _trained_params, pretrained) if run.from_run else pretrained


def _trained_params(folder: str) -> dict[str, Any]:
    """A finished run's newest parameters (read-only)."""
    return restore(folder)[1]


def keep_run_files(run: Run, config: ml_collections.ConfigDict, workdir: str) -> None:
    """Makes ``workdir`` self-contained: copies the tokenizer and writes the word list there, points
    ``config`` at them and saves it as ``config.json``."""
    config.data.tokenizer = keep_tokenizer(run, workdir)
    if run.eval.lexicon is not None:
        config.eval.lexicon = write_words(run.lexicon_words(), workdir)
    save_config(config, workdir)


def write_pretrained(run: Run, workdir: str, mesh) -> State | None:
    """Makes step 0 of ``workdir`` hold the starting weights and returns that state; None (nothing
    read) when there are none or the workdir already has a checkpoint to resume from."""
    start = starting_point(run)
    if start is None:
        return None
    return write_step0_checkpoint(
        run, workdir, mesh, start.load, start.source, fresh=start.fresh, subtrees=getattr(start, "subtrees", None)
    )


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, *, progress: bool = True) -> dict[str, Any]:
    """Runs the whole job; returns {"scores": {name: rate or perplexity}, "timings": {...}, "report": path, "step",
    "stop_reason", "trained_seconds" (over every start), "initialised_from"}. A staged config (``stages``)
    is run stage by stage (``recipes/stages.py``: the last stage's summary, with every stage's in "stages")."""
    if config.get("stages"):
        return train_stages(config, workdir, train_and_evaluate, progress=progress)
    start = time.monotonic()
    # Joining a multi-process job must precede anything that touches a device (build() counts them).
    multihost.initialize(train_config_from_dict(config.train).distributed)
    run = build(config, progress)
    paths.make_dirs(workdir)
    config = ml_collections.ConfigDict(plain(config))
    # A rerun into a run's folder replaces its config.json, tokenizer and word list only after training
    # from the checkpoints there: a config they do not fit is refused and leaves the run as it was.
    resuming = paths.exists(paths.join(workdir, CONFIG_JSON))
    if not resuming:
        keep_run_files(run, config, workdir)
    data_ready = time.monotonic()
    mesh = make_mesh(run.train.mesh)
    weights = starting_point(run)
    write_pretrained(run, workdir, mesh)  # step 0, so that a restart resumes from its newest checkpoint instead
    initialised = time.monotonic()
    iterator = run.train_pipeline().iterator()
    eval_fn = during_training(run) if run.train.eval_every else None
    try:
        result = train(run.task, run.train, iterator, workdir, eval_fn=eval_fn, mesh=mesh, hooks=dormancy_hooks(run))
    finally:
        iterator.close()
    if resuming:
        keep_run_files(run, config, workdir)
    trained = time.monotonic()
    initialised_from = weights.source if weights is not None else run.kind.init_source
    notes = [
        f"Initialised from {initialised_from}.",
        f"Stopped at step {result.step} ({result.stop_reason}).",
        *run.kind.notes(),
        *run.kind.after_training(result.state["params"], workdir),
    ]
    exported = time.monotonic()
    decode_seconds: dict[str, float] = {}
    scores = evaluate_run(run, result.state["params"], workdir, progress=progress, seconds=decode_seconds)
    evaluated = time.monotonic()
    timings = {"data (corpus + tokenizer)": data_ready - start}
    if weights is not None:
        timings["starting weights -> step-0 checkpoint"] = initialised - data_ready
    timings.update({"compile": result.compile_seconds, "train (incl. compile, checkpoints)": trained - initialised})
    if exported - trained > 0.05:
        timings["after training (export)"] = exported - trained
    timings.update({"evaluation": evaluated - exported, **decode_seconds, "total": evaluated - start})
    report = write_report(
        workdir,
        title=f"jaxspeech run: {paths.base_name(workdir)}",
        config=plain(config),
        timings=timings,
        train_metrics=result.last_train_metrics,
        scores=scores,
        plots=plot_learning_curves(workdir),
        notes=notes,
        decoders=run.eval.decoders,
    )
    return {
        "scores": {k: headline(v) for k, v in scores.items()},
        "timings": timings,
        "report": report,
        "step": result.step,
        "stop_reason": result.stop_reason,
        "trained_seconds": result.trained_seconds,
        "initialised_from": initialised_from,
    }
