"""Evaluation of a Whisper fine-tuning run: batched greedy / beam decoding of the eval manifests,
WER / CER (``jaxspeech.recipes.evaluate.score``: per voice group where the corpus has them) and
per-example JSONL.

The eval batches come from the same pipeline as training (duration buckets, or the full window
with ``pad_to_30s``), and the encoder sees them as in training: with lengths on buckets, every
frame attended on full windows. Decoding is ``make_generate_fn`` with the checkpoint's prompt and
token suppression; its program is compiled once per bucket and reused across eval sets.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, Callable, Mapping

import jax
import numpy as np
from tqdm.auto import tqdm

from jaxspeech.data.pipeline import DataPipeline
from jaxspeech.data.sources import ManifestSource
from jaxspeech.decoding.whisper import make_generate_fn
from jaxspeech.evals.metrics import ErrorRateResult
from jaxspeech.evals.report import example_record, write_per_example_jsonl
from jaxspeech.recipes.evaluate import FirstN, score

if TYPE_CHECKING:
    from jaxspeech.recipes.whisper import WhisperRun

METHODS = ("greedy", "beam")


def generate_fn(run: "WhisperRun") -> Callable:
    """The jitted ``fn(variables, features f32[B, T, F], lengths i32[B] | None, active bool[B] | None) -> DecodeOutput``
    of ``run.eval``."""
    method = run.eval.method
    if method not in METHODS:
        raise ValueError(f"eval.method must be one of {METHODS} for Whisper, got {method!r}")
    return make_generate_fn(run.model, run.generation, language=run.encoder.language, task=run.encoder.task,
                            num_beams=run.eval.num_beams if method == "beam" else 1,
                            max_new_tokens=run.eval.max_new_tokens)


def decode_manifest(
    run: "WhisperRun", params: Mapping[str, Any], manifest: str, *, max_examples: int | None = None,
    progress: bool = True, generate: Callable | None = None,
) -> list[dict]:
    """[{...record fields, id, reference, hypothesis}] for the examples of ``manifest``; rejected
    audio gives ``{"id", "reference": "", "hypothesis": "", "rejected": reason}``.

    ``params`` is the parameter tree without the ``"params"`` wrapper; ``generate`` reuses a
    ``generate_fn(run)`` (and its compiled programs) across calls.
    """
    source = ManifestSource([manifest])
    if max_examples is not None:
        source = FirstN(source, max_examples)
    pipeline = DataPipeline(source, run.eval_pipeline, process_index=0, process_count=1)
    generate = generate or generate_fn(run)
    variables = {"params": params}
    results = []
    with pipeline.iterator() as batches, tqdm(total=len(source), unit="utt", desc=f"decoding {os.path.basename(manifest)}",
                                              disable=not progress, leave=False) as bar:
        for host_batch in batches:
            features, lengths = run.task.encoder_inputs(host_batch.batch.features, host_batch.batch.feature_lengths)
            out = generate(variables, features, lengths, np.asarray(host_batch.batch.weights) > 0)  # padding rows idle
            tokens, token_counts = jax.device_get((out.tokens, out.lengths))
            for meta in host_batch.metadata:
                row = meta["row"]
                hypothesis = run.tokenizer.decode(tokens[row, : token_counts[row]].tolist()).strip()
                record = source[meta["example_id"]]
                results.append({**record, "id": meta["id"], "reference": meta["text"], "hypothesis": hypothesis})
            bar.update(len(host_batch.metadata))
            for reject in host_batch.rejects:
                results.append({"id": reject.id, "reference": "", "hypothesis": "", "rejected": reject.reason})
    return results


def evaluate_sets(run: "WhisperRun", params, workdir: str, *, progress: bool = True) -> dict[str, ErrorRateResult]:
    """Decodes every ``data.eval_sets`` manifest, writes ``<workdir>/eval/<set>.jsonl``, returns the scores."""
    out_dir = os.path.join(workdir, "eval")
    os.makedirs(out_dir, exist_ok=True)
    generate = generate_fn(run)
    scores: dict[str, ErrorRateResult] = {}
    for name in run.eval_set_names():
        decoded = decode_manifest(run, params, run.manifest(name), max_examples=run.eval.max_examples,
                                  progress=progress, generate=generate)
        set_scores = score(decoded, os.path.splitext(os.path.basename(name))[0])
        by_id = {e.id: e for e in set_scores[next(iter(set_scores))].examples} if set_scores else {}
        write_per_example_jsonl(os.path.join(out_dir, f"{os.path.basename(name)}.jsonl"), [
            {**{k: v for k, v in d.items() if k not in ("reference", "hypothesis")}, **example_record(by_id[d["id"]])}
            if d["id"] in by_id else d for d in decoded
        ])
        scores.update(set_scores)
    return scores


def eval_during_training(run: "WhisperRun") -> Callable[[Any, int], dict[str, float]]:
    """``eval_fn(params, step)`` for the trainer: WER / CER on the first ``eval.during_training_examples``
    of the first eval set, logged as ``eval/<set>_WER``."""
    name = run.eval_set_names()[0]
    set_name = os.path.splitext(os.path.basename(name))[0]
    generate = generate_fn(run)

    def eval_fn(params, step: int) -> dict[str, float]:
        decoded = decode_manifest(run, params, run.manifest(name), max_examples=run.eval.during_training_examples,
                                  progress=False, generate=generate)
        return {key.replace(" ", "_"): result.rate for key, result in score(decoded, set_name).items()}

    return eval_fn
