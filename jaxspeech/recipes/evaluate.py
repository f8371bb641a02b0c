"""Decode evaluation manifests with a trained run's task and score them, for any task kind.

``decode_manifest`` runs the task's ``Decoder`` over a manifest; ``score`` computes
``eval.metrics`` (WER, CER, ...) per set, and for test sets of the embedded corpus (records with
``held_out_voice``) separately for the training voices and the held-out voice
(``<set>/train_voices``, ``<set>/held_out_voice``). ``evaluate_sets`` does this for every eval set
and writes ``<workdir>/eval/<set>.jsonl``; ``during_training`` gives the trainer's eval function.

Several decoders per set (e.g. the LLM alone, the CTC head alone, both jointly) are several
``decoders`` entries: their scores are keyed ``<set>/<decoder name>``.

A task that owns its data (``OwnsItsData``: a text LM) scores itself (``held_out_scores``:
perplexity); ``evaluate_run`` and ``during_training`` take either path.
"""

from __future__ import annotations

import os
from typing import Any, Callable, Mapping

from tqdm.auto import tqdm

from jaxspeech.evals.metrics import PER_SET_METRICS, ErrorRateResult, PerplexityResult
from jaxspeech.evals.report import example_record, write_per_example_jsonl
from jaxspeech.recipes.build import Run
from jaxspeech.tasks.kinds import Decoder


def decode_manifest(run: Run, decoder: Decoder, prepared: Any, manifest: str, *, max_examples: int | None = None,
                    progress: bool = True) -> list[dict]:
    """[{...record fields, id, reference, hypothesis}] for the examples of ``manifest``; rejected
    audio gives ``{"id", "reference": "", "hypothesis": "", "rejected": reason}``. ``prepared`` is
    ``decoder.prepare(params)``."""
    pipeline = run.eval_data(manifest, max_examples)
    results = []
    with pipeline.iterator() as batches, tqdm(total=len(pipeline.source), unit="utt", leave=False,
                                              desc=f"decoding {os.path.basename(manifest)}", disable=not progress) as bar:
        for host_batch in batches:
            hypotheses = decoder(prepared, host_batch.batch)
            for meta in host_batch.metadata:
                record = pipeline.source[meta["example_id"]]
                results.append({**record, "id": meta["id"], "reference": meta["text"],
                                "hypothesis": hypotheses[meta["row"]]})
            bar.update(len(host_batch.metadata))
            for reject in host_batch.rejects:
                results.append({"id": reject.id, "reference": "", "hypothesis": "", "rejected": reject.reason})
    return results


def score(decoded: list[dict], name: str, metrics=("wer", "cer")) -> dict[str, ErrorRateResult]:
    """``"<subset> <METRIC>"`` -> result, per named subset: all, and by ``held_out_voice`` when present."""
    kept = [d for d in decoded if "rejected" not in d]
    subsets = {name: kept}
    if any("held_out_voice" in d for d in kept):
        subsets[f"{name}/train_voices"] = [d for d in kept if not d.get("held_out_voice")]
        subsets[f"{name}/held_out_voice"] = [d for d in kept if d.get("held_out_voice")]
    results = {}
    for subset, rows in subsets.items():
        if not rows:
            continue
        refs, hyps, ids = [r["reference"] for r in rows], [r["hypothesis"] for r in rows], [r["id"] for r in rows]
        for metric in metrics:
            results[f"{subset} {metric.upper()}"] = PER_SET_METRICS[metric](refs, hyps, ids=ids)
    return results


def _set_name(name: str) -> str:
    return os.path.splitext(os.path.basename(name))[0]


def evaluate_sets(run: Run, params: Mapping[str, Any], workdir: str, *, progress: bool = True,
                  decoders: Mapping[str, Decoder] | None = None) -> dict[str, ErrorRateResult]:
    """Decodes every ``data.eval_sets`` manifest with each of ``decoders`` (default: the run's own,
    unnamed), writes ``<workdir>/eval/<set>[.<decoder>].jsonl`` and returns the scores.
    ``params`` is the parameter tree without the "params" level."""
    out_dir = os.path.join(workdir, "eval")
    os.makedirs(out_dir, exist_ok=True)
    decoders = decoders or {"": run.decoder()}
    scores: dict[str, ErrorRateResult] = {}
    for decoder_name, decoder in decoders.items():
        prepared = decoder.prepare(params)
        for name in run.data.eval_sets:
            decoded = decode_manifest(run, decoder, prepared, run.manifest(name), max_examples=run.eval.max_examples,
                                      progress=progress)
            label = _set_name(name) + (f"/{decoder_name}" if decoder_name else "")
            set_scores = score(decoded, label, run.eval.metrics)
            by_id = {e.id: e for e in set_scores[next(iter(set_scores))].examples} if set_scores else {}
            file = os.path.basename(name) + (f".{decoder_name}" if decoder_name else "")
            write_per_example_jsonl(os.path.join(out_dir, f"{file}.jsonl"), [
                {**{k: v for k, v in d.items() if k not in ("reference", "hypothesis")}, **example_record(by_id[d["id"]])}
                if d["id"] in by_id else d for d in decoded
            ])
            scores.update(set_scores)
    return scores


def evaluate_run(run: Run, params: Mapping[str, Any], workdir: str, *, progress: bool = True,
                 decoders: Mapping[str, Decoder] | None = None) -> dict[str, Any]:
    """The run's scores after training: ``evaluate_sets``, or the task's own held-out scores."""
    if not run.reads_audio:
        return dict(run.kind.held_out_scores(params, run.manifest))
    return evaluate_sets(run, params, workdir, progress=progress, decoders=decoders)


def headline(result: Any) -> float:
    """The number a score stands for: an error rate, or a perplexity."""
    return result.perplexity if isinstance(result, PerplexityResult) else result.rate


def during_training(run: Run) -> Callable[[Any, int], dict[str, float]]:
    """``eval_fn(params, step)`` for the trainer: ``eval.metrics`` on the first
    ``eval.during_training_examples`` of the first eval set, logged as ``eval/<set>_<METRIC>`` (a task
    that owns its data: its held-out scores)."""
    if not run.reads_audio:
        return lambda params, step: {key.replace(" ", "_"): headline(result)
                                     for key, result in run.kind.held_out_scores(params, run.manifest).items()}
    name = run.data.eval_sets[0]
    decoder = run.decoder()

    def eval_fn(params, step: int) -> dict[str, float]:
        decoded = decode_manifest(run, decoder, decoder.prepare(params), run.manifest(name),
                                  max_examples=run.eval.during_training_examples, progress=False)
        return {key.replace(" ", "_"): result.rate for key, result in score(decoded, _set_name(name),
                                                                            run.eval.metrics).items()}

    return eval_fn
