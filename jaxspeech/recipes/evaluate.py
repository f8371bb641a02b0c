"""Decode evaluation manifests with a trained Speech LLM and score them (WER / CER).

Test sets of the embedded corpus carry ``held_out_voice``; their WER is reported separately for
the training voices and the held-out voice (``<set>/train_voices``, ``<set>/held_out_voice``).
"""

from __future__ import annotations

import json
import os
from typing import Any, Mapping

import jax
import numpy as np
from tqdm.auto import tqdm

from jaxspeech.data.pipeline import DataPipeline
from jaxspeech.data.sources import ManifestSource
from jaxspeech.decoding.generate import GenerationConfig
from jaxspeech.decoding.speech import decoding_params, generate_from_audio
from jaxspeech.evals.metrics import ErrorRateResult, cer, wer
from jaxspeech.evals.report import example_record, write_per_example_jsonl
from jaxspeech.recipes.components import Components


class FirstN:
    """The first ``n`` records of a random-access source (for quick evaluations during training)."""

    def __init__(self, source, n: int):
        self.source, self.n = source, min(n, len(source))

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int):
        if not 0 <= index < self.n:
            raise IndexError(index)
        return self.source[index]

    def durations(self) -> np.ndarray:
        return np.asarray(self.source.durations())[: self.n]


def generation_config(components: Components) -> GenerationConfig:
    tokenizer, cfg = components.tokenizer, components.eval
    return GenerationConfig(
        max_new_tokens=cfg.max_new_tokens, method=cfg.method, num_beams=cfg.num_beams,
        ctc_weight=cfg.ctc_weight, ctc_candidates=cfg.ctc_candidates, ctc_blank_penalty=cfg.ctc_blank_penalty,
        length_penalty=cfg.length_penalty,
        eos_ids=tuple(tokenizer.eos_ids), pad_id=tokenizer.pad_id or 0,
    )


def records_by_id(manifest: str) -> dict[str, dict]:
    """id -> the manifest's record (all its fields, e.g. ``held_out_voice``)."""
    with open(manifest, encoding="utf-8") as f:
        return {r["id"]: r for r in (json.loads(line) for line in f if line.strip())}


def eval_pipeline(components: Components, manifest: str, max_examples: int | None = None) -> DataPipeline:
    """The eval-bucket pipeline over ``manifest`` (its first ``max_examples`` records), single host."""
    source = ManifestSource([manifest])
    if max_examples is not None:
        source = FirstN(source, max_examples)
    return DataPipeline(source, components.eval_pipeline, tokenize=components.example_tokens(inference=True),
                        process_index=0, process_count=1)


def decode_manifest(
    components: Components, params: Mapping[str, Any], manifest: str, *, max_examples: int | None = None,
    progress: bool = True, decoding: tuple | None = None,
) -> list[dict]:
    """[{id, reference, hypothesis, ...record fields}] for the examples of ``manifest``.

    ``params`` is the trained parameter tree (without the ``"params"`` wrapper); ``decoding``
    reuses a ``decoding_params`` result across calls.
    """
    pipeline = eval_pipeline(components, manifest, max_examples)
    config, dparams = decoding or decoding_params(components.model, {"params": params}, components.task.lora)
    gen = generation_config(components)
    lexicon = components.lexicon()
    records = records_by_id(manifest)
    results = []
    with pipeline.iterator() as batches, tqdm(total=len(pipeline.source), unit="utt", desc=f"decoding {os.path.basename(manifest)}",
                                              disable=not progress, leave=False) as bar:
        for host_batch in batches:
            batch = host_batch.batch
            segment_ids = np.array(batch.segment_ids)
            padding = np.asarray(batch.weights) == 0
            segment_ids[padding, 0] = 1  # padding rows: a dummy one-token prompt, inactive
            out = generate_from_audio(config, dparams, batch.tokens, segment_ids, batch.features,
                                      batch.feature_lengths, gen, lexicon=lexicon, active=~padding)
            tokens, lengths = jax.device_get((out.tokens, out.lengths))
            for meta in host_batch.metadata:
                row = meta["row"]
                hypothesis = components.tokenizer.decode(tokens[row, : lengths[row]].tolist())
                record = records.get(meta["id"], {})
                results.append({**record, "id": meta["id"], "reference": meta["text"], "hypothesis": hypothesis})
            bar.update(len(host_batch.metadata))
            for reject in host_batch.rejects:
                results.append({"id": reject.id, "reference": "", "hypothesis": "", "rejected": reject.reason})
    return results


def score(decoded: list[dict], name: str) -> dict[str, ErrorRateResult]:
    """WER (and CER) per named subset: all, and split by ``held_out_voice`` when present."""
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
        results[f"{subset} WER"] = wer(refs, hyps, ids=ids)
        results[f"{subset} CER"] = cer(refs, hyps, ids=ids)
    return results


def evaluate_sets(components: Components, params, workdir: str, *, progress: bool = True) -> dict[str, ErrorRateResult]:
    """Decodes every ``data.eval_sets`` manifest, writes ``<workdir>/eval/<set>.jsonl``, returns the scores."""
    out_dir = os.path.join(workdir, "eval")
    os.makedirs(out_dir, exist_ok=True)
    decoding = decoding_params(components.model, {"params": params}, components.task.lora)
    scores: dict[str, ErrorRateResult] = {}
    eval_sets = components.config.data.eval_sets
    for name in ((eval_sets,) if isinstance(eval_sets, str) else eval_sets):
        manifest = components.manifest(name)
        decoded = decode_manifest(components, params, manifest, max_examples=components.eval.max_examples,
                                  progress=progress, decoding=decoding)
        set_scores = score(decoded, os.path.splitext(os.path.basename(name))[0])
        by_id = {e.id: e for e in set_scores[next(iter(set_scores))].examples} if set_scores else {}
        write_per_example_jsonl(os.path.join(out_dir, f"{os.path.basename(name)}.jsonl"), [
            {**{k: d[k] for k in d if k not in ("reference", "hypothesis")}, **example_record(by_id[d["id"]])}
            if d["id"] in by_id else d for d in decoded
        ])
        scores.update(set_scores)
    return scores
