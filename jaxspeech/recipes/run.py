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
import shutil
import time
from typing import Any

import ml_collections

from jaxspeech.config_dict import plain
from jaxspeech.data.tokenizers import TOKENIZER_FILES
from jaxspeech.recipes.build import Run, build
from jaxspeech.recipes.dormancy_hook import dormancy_hooks
from jaxspeech.recipes.evaluate import during_training, evaluate_run, headline
from jaxspeech.recipes.report import write_report
from jaxspeech.recipes.word_list import write_words
from jaxspeech.recipes.workdir import save_config
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
    target = os.path.join(workdir, "tokenizer" + ("" if os.path.isdir(source) else os.path.splitext(source)[1]))
    if os.path.abspath(source) != os.path.abspath(target):
        if os.path.isdir(source):
            os.makedirs(target, exist_ok=True)
            for name in TOKENIZER_FILES:
                if os.path.isfile(os.path.join(source, name)):
                    shutil.copyfile(os.path.join(source, name), os.path.join(target, name))
        else:
            shutil.copyfile(source, target)
    return target


def write_pretrained(run: Run, workdir: str, mesh) -> State | None:
    """Makes step 0 of ``workdir`` hold the task's pretrained weights and returns that state; None
    (nothing read) when the task has none or the workdir already has a checkpoint to resume from."""
    pretrained = run.kind.pretrained()
    if pretrained is None:
        return None
    return write_step0_checkpoint(run, workdir, mesh, pretrained.load, pretrained.source, fresh=pretrained.fresh)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, *, progress: bool = True) -> dict[str, Any]:
    """Runs the whole job; returns {"scores": {name: rate or perplexity}, "timings": {...}, "report": path, "step", "stop_reason"}."""
    start = time.monotonic()
    # Joining a multi-process job must precede anything that touches a device (build() counts them).
    multihost.initialize(train_config_from_dict(config.train).distributed)
    run = build(config, progress)
    os.makedirs(workdir, exist_ok=True)
    config = ml_collections.ConfigDict(plain(config))
    config.data.tokenizer = keep_tokenizer(run, workdir)
    if run.eval.lexicon is not None:  # the run keeps its word list, as it keeps its tokenizer
        config.eval.lexicon = write_words(run.lexicon_words(), workdir)
    save_config(config, workdir)
    data_ready = time.monotonic()
    mesh = make_mesh(run.train.mesh)
    pretrained = run.kind.pretrained() is not None
    write_pretrained(run, workdir, mesh)  # step 0, so that a restart resumes from its newest checkpoint instead
    initialised = time.monotonic()
    iterator = run.train_pipeline().iterator()
    eval_fn = during_training(run) if run.train.eval_every else None
    try:
        result = train(run.task, run.train, iterator, workdir, eval_fn=eval_fn, mesh=mesh, hooks=dormancy_hooks(run))
    finally:
        iterator.close()
    trained = time.monotonic()
    notes = [f"Initialised from {run.kind.init_source}.", f"Stopped at step {result.step} ({result.stop_reason}).",
             *run.kind.notes(), *run.kind.after_training(result.state["params"], workdir)]
    exported = time.monotonic()
    decode_seconds: dict[str, float] = {}
    scores = evaluate_run(run, result.state["params"], workdir, progress=progress, seconds=decode_seconds)
    evaluated = time.monotonic()
    timings = {"data (corpus + tokenizer)": data_ready - start}
    if pretrained:
        timings["pretrained weights -> step-0 checkpoint"] = initialised - data_ready
    timings.update({"compile": result.compile_seconds, "train (incl. compile, checkpoints)": trained - initialised})
    if exported - trained > 0.05:
        timings["after training (export)"] = exported - trained
    timings.update({"evaluation": evaluated - exported, **decode_seconds, "total": evaluated - start})
    report = write_report(workdir, title=f"jaxspeech run: {os.path.basename(os.path.abspath(workdir))}",
                          config=plain(config), timings=timings, train_metrics=result.last_train_metrics,
                          scores=scores, plots=plot_learning_curves(workdir), notes=notes,
                          decoders=run.eval.decoders)
    return {"scores": {k: headline(v) for k, v in scores.items()}, "timings": timings, "report": report,
            "step": result.step, "stop_reason": result.stop_reason}
