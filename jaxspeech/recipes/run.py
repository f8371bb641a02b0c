"""The main job: build data -> train (time budget, checkpoints, resume) -> evaluate -> report.

``train_and_evaluate(config, workdir)`` writes into ``workdir``: ``config.json`` (the resolved
experiment config, reread by ``jaxspeech eval`` / ``transcribe --checkpoint``), checkpoints,
``metrics.jsonl`` + TensorBoard events, ``eval/<set>.jsonl`` (per-example hypotheses and errors),
``plots/*.png`` and ``report.md``.
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
from jaxspeech.recipes.word_list import write_words
from jaxspeech.recipes.components import Components, build
from jaxspeech.recipes.evaluate import decode_manifest, evaluate_sets, score
from jaxspeech.recipes.pretrained import describe, has_checkpoints, write_pretrained_checkpoint
from jaxspeech.recipes.report import write_report
from jaxspeech.recipes.workdir import save_config
from jaxspeech.sharding import multihost
from jaxspeech.sharding.mesh import make_mesh
from jaxspeech.train.config import train_config_from_dict
from jaxspeech.train.loop import train
from jaxspeech.train.plots import plot_learning_curves

log = logging.getLogger(__name__)


def keep_tokenizer(components: Components, workdir: str) -> str:
    """Copies the tokenizer (a file, or a directory's tokenizer files: not an LLM directory's
    weights) into ``workdir`` so the run is self-contained."""
    source = components.tokenizer_path
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


def _eval_during_training(components: Components, workdir: str, progress: bool):
    """Dev-set WER on a few examples, logged as eval/<set> WER by the trainer."""
    eval_sets = components.config.data.eval_sets
    name = eval_sets if isinstance(eval_sets, str) else eval_sets[0]
    manifest = components.manifest(name)

    def eval_fn(params, step: int) -> dict[str, float]:
        decoded = decode_manifest(components, params, manifest, max_examples=components.eval.during_training_examples,
                                  progress=False)
        return {key.replace(" ", "_"): result.rate for key, result in score(decoded, "dev").items()}

    return eval_fn


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, *, progress: bool = True) -> dict[str, Any]:
    """Runs the whole job; returns {"scores": {name: rate}, "timings": {...}, "report": path}."""
    if config.get("recipe") == "whisper":
        from jaxspeech.recipes import whisper

        return whisper.train_and_evaluate(config, workdir, progress=progress)
    start = time.monotonic()
    # Joining a multi-process job must precede anything that touches a device (build() counts them).
    multihost.initialize(train_config_from_dict(config.train).distributed)
    components = build(config, progress)
    os.makedirs(workdir, exist_ok=True)
    config = ml_collections.ConfigDict(plain(config))
    config.data.tokenizer = keep_tokenizer(components, workdir)
    if components.eval.lexicon is not None:  # the run keeps its word list, as it keeps its tokenizer
        config.eval.lexicon = write_words(components.lexicon_words(), workdir)
    save_config(config, workdir)
    data_ready = time.monotonic()
    mesh = make_mesh(components.train.mesh)
    write_pretrained_checkpoint(components, workdir, mesh)  # when config.init names HF checkpoints
    initialised = time.monotonic()
    pipeline = components.train_pipeline()
    iterator = pipeline.iterator()
    eval_fn = _eval_during_training(components, workdir, progress) if components.train.eval_every else None
    try:
        result = train(components.task, components.train, iterator, workdir, eval_fn=eval_fn, mesh=mesh)
    finally:
        iterator.close()
    trained = time.monotonic()
    scores = evaluate_sets(components, result.state["params"], workdir, progress=progress)
    evaluated = time.monotonic()
    timings = {"data (corpus + tokenizer)": data_ready - start}
    notes = [f"Stopped at step {result.step} ({result.stop_reason})."]
    if has_checkpoints(components.init):
        timings["pretrained weights -> step-0 checkpoint"] = initialised - data_ready
        notes.insert(0, f"Initialised from {describe(components.init)}.")
    timings.update({
        "compile": result.compile_seconds,
        "train (incl. compile, checkpoints)": trained - initialised,
        "evaluation": evaluated - trained,
        "total": evaluated - start,
    })
    plots = plot_learning_curves(workdir)
    report = write_report(workdir, title=f"jaxspeech run: {os.path.basename(os.path.abspath(workdir))}",
                          config=plain(config), timings=timings, train_metrics=result.last_train_metrics,
                          scores=scores, plots=plots, notes=notes)
    return {"scores": {k: v.rate for k, v in scores.items()}, "timings": timings, "report": report,
            "step": result.step, "stop_reason": result.stop_reason}
