"""Decode evaluation manifests with a trained run's task and score them, for any task kind.

``decode_manifest`` runs the task's ``Decoder`` over a data set; ``score`` computes its metrics
(``eval.metrics`` or ``eval.set_metrics``: WER, CER, BLEU, exact match) against each example's
answer (``target``, else ``text``: ``data.sources.answer_text``; transcript echo against ``text``:
``evals.metrics.REFERENCE_FIELDS``), and for test sets of the embedded corpus (records with
``held_out_voice``) separately for the training voices and the held-out voice
(``<set>/train_voices``, ``<set>/held_out_voice``). ``evaluate_sets`` does this for every eval set
and writes ``<workdir>/eval/<set>.jsonl``; ``during_training`` gives the trainer's eval function.

Several decoders per set (``eval.decoders``: the LLM alone, the CTC head alone, both jointly) read
each batch once; their scores are keyed ``<set>/<decoder name>``. A set of the embedded corpus's
open-vocabulary split is never decoded with a lexicon that holds its held-out words.

A task that owns its data (``OwnsItsData``: a text LM) scores itself (``held_out_scores``:
perplexity); ``evaluate_run`` and ``during_training`` take either path.
"""

from __future__ import annotations

import json
import time
from typing import Any, Callable, Mapping

from tqdm.auto import tqdm

from jaxspeech import paths
from jaxspeech.data.sources import AUDIO_FIELDS, answer_text
from jaxspeech.evals.metrics import (
    PER_SET_METRICS,
    REFERENCE_FIELDS,
    ErrorRateResult,
    ExactMatchResult,
    MetricResult,
    TranscriptEchoResult,
    headline,
)
from jaxspeech.evals.report import example_record, write_per_example_jsonl
from jaxspeech.recipes.build import EvalDecoder, Run
from jaxspeech.recipes.config import is_tfds
from jaxspeech.recipes.word_list import read_words
from jaxspeech.tasks.kinds import Decoder


def decode_manifest(
    run: Run,
    decoders: Mapping[str, tuple[Decoder, Any]],
    manifest: str,
    *,
    max_examples: int | None = None,
    progress: bool = True,
    seconds: dict[str, float] | None = None,
) -> dict[str, list[dict]]:
    """{decoder name: [{...record fields but the audio, id, reference, hypothesis}]} for the examples
    of ``manifest`` (a data set name, see ``Run.source``, or a manifest path), each batch read once and decoded by every one of ``decoders`` (name ->
    (decoder, ``decoder.prepare(params)``)); rejected audio gives ``{"id", "reference": "",
    "hypothesis": "", "rejected": reason}``. ``seconds``, when given, gains each decoder's time."""
    pipeline = run.eval_data(manifest, max_examples)
    results: dict[str, list[dict]] = {name: [] for name in decoders}
    with (
        pipeline.iterator() as batches,
        tqdm(
            total=len(pipeline.source),
            unit="utt",
            leave=False,
            desc=f"decoding {run.set_label(manifest)}",
            disable=not progress,
        ) as bar,
    ):
        for host_batch in batches:
            for name, (decoder, prepared) in decoders.items():
                start = time.perf_counter()
                hypotheses = decoder(prepared, host_batch.batch)
                if seconds is not None:
                    seconds[name] = seconds.get(name, 0.0) + time.perf_counter() - start
                for meta in host_batch.metadata:
                    record = pipeline.source[meta["example_id"]]
                    fields = {k: v for k, v in record.items() if k not in AUDIO_FIELDS}
                    results[name].append(
                        {
                            **fields,
                            "id": meta["id"],
                            "reference": answer_text(meta),
                            "hypothesis": hypotheses[meta["row"]],
                        }
                    )
                results[name] += [
                    {"id": reject.id, "reference": "", "hypothesis": "", "rejected": reject.reason}
                    for reject in host_batch.rejects
                ]
            bar.update(len(host_batch.metadata))
    return results


def check_open_vocab_lexicon(run: Run, manifest: str, decoder_name: str, lexicon: str | None) -> None:
    """Raises if ``lexicon`` (an ``eval.lexicon`` source) holds a word that the records of
    ``manifest`` list as held out (``open_vocab_words``, the embedded corpus's open-vocabulary set):
    such a set must be decoded without its words in the lexicon."""
    if lexicon is None:
        return
    lines = paths.read_text(manifest).split("\n")
    held_out = {word for line in lines if line.strip() for word in json.loads(line).get("open_vocab_words", ())}
    leaked = sorted(held_out & set(read_words(lexicon, run.manifest)))
    if leaked:
        raise ValueError(
            f"{manifest} is an open-vocabulary set, but decoder {decoder_name or 'of eval.generation'} would decode it "
            f"with eval.lexicon {lexicon!r}, which holds {len(leaked)} of its held-out words (e.g. {leaked[:3]}): use "
            "a lexicon without them (the training transcripts, 'train') or none"
        )


def score(decoded: list[dict], name: str, metrics=("wer", "cer")) -> dict[str, MetricResult]:
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
        hyps, ids = [r["hypothesis"] for r in rows], [r["id"] for r in rows]
        for metric in metrics:
            refs = [r[REFERENCE_FIELDS.get(metric, "reference")] for r in rows]
            results[f"{subset} {metric.upper()}"] = PER_SET_METRICS[metric](refs, hyps, ids=ids)
    return results


def example_records(decoded: list[dict], scores: Mapping[str, MetricResult], label: str) -> list[dict]:
    """The per-example JSONL records of a set: each decoded example with what the metrics of subset
    ``label`` say of it (the first error rate's normalised texts and S/D/I, every error rate, and
    ``exact_match``; BLEU is a corpus score)."""
    extra: dict[str, dict] = {}
    detailed = False
    for key, result in scores.items():
        if key.rpartition(" ")[0] != label:
            continue
        if isinstance(result, ErrorRateResult):
            for e in result.examples:
                record = example_record(e, result.unit)
                extra.setdefault(e.id, {}).update(
                    record if not detailed else {k: record[k] for k in ("wer", "cer") if k in record}
                )
            detailed = True
        elif isinstance(result, ExactMatchResult):
            for example_id, match in zip(result.ids, result.matches):
                extra.setdefault(example_id, {})["exact_match"] = match
        elif isinstance(result, TranscriptEchoResult):
            for example_id, rate, echo in zip(result.ids, result.transcript_wers, result.echoes):
                extra.setdefault(example_id, {}).update(transcript_wer=rate, transcript_echo=echo)
    return [{**d, **extra.get(d["id"], {})} for d in decoded]


def evaluate_sets(
    run: Run,
    params: Mapping[str, Any],
    workdir: str,
    *,
    progress: bool = True,
    decoders: Mapping[str, EvalDecoder] | None = None,
    seconds: dict[str, float] | None = None,
) -> dict[str, MetricResult]:
    """Decodes every ``data.eval_sets`` manifest with each of ``decoders`` (default:
    ``run.decoders()``), writes ``<workdir>/eval/<set>[.<decoder>].jsonl`` and returns the scores
    (keyed ``<set>[/<decoder>]...``). ``params`` is the parameter tree without the "params" level;
    ``seconds``, when given, gains ``decoding <set>[/<decoder>]``: each decoder's time per set."""
    out_dir = paths.join(workdir, "eval")
    paths.make_dirs(out_dir)
    decoders = run.decoders() if decoders is None else decoders
    prepared = {name: (d.decoder, d.decoder.prepare(params)) for name, d in decoders.items()}
    scores: dict[str, MetricResult] = {}
    for name in run.data.eval_sets:
        if not is_tfds(name):
            for decoder_name, decoder in decoders.items():
                check_open_vocab_lexicon(run, run.manifest(name), decoder_name, decoder.lexicon)
        decode_seconds: dict[str, float] = {}
        decoded_by = decode_manifest(
            run, prepared, name, max_examples=run.eval.max_examples, progress=progress, seconds=decode_seconds
        )
        for decoder_name, decoded in decoded_by.items():
            label = run.set_label(name) + (f"/{decoder_name}" if decoder_name else "")
            if seconds is not None:
                seconds[f"decoding {label}"] = decode_seconds[decoder_name]
            set_scores = score(decoded, label, run.eval.metrics_of(name))
            file = run.set_label(name) + (f".{decoder_name}" if decoder_name else "")
            write_per_example_jsonl(paths.join(out_dir, f"{file}.jsonl"), example_records(decoded, set_scores, label))
            scores.update(set_scores)
    return scores


def evaluate_run(
    run: Run,
    params: Mapping[str, Any],
    workdir: str,
    *,
    progress: bool = True,
    decoders: Mapping[str, EvalDecoder] | None = None,
    seconds: dict[str, float] | None = None,
) -> dict[str, Any]:
    """The run's scores after training: ``evaluate_sets``, or the task's own held-out scores."""
    if not run.reads_audio:
        return dict(run.kind.held_out_scores(params, run.manifest))
    return evaluate_sets(run, params, workdir, progress=progress, decoders=decoders, seconds=seconds)


def during_training(run: Run) -> Callable[[Any, int], dict[str, float]]:
    """``eval_fn(params, step)`` for the trainer: ``eval.metrics`` on the first
    ``eval.during_training_examples`` of the first eval set, logged as ``eval/<set>_<METRIC>`` (a task
    that owns its data: its held-out scores)."""
    if not run.reads_audio:
        return lambda params, step: {
            key.replace(" ", "_"): headline(result)
            for key, result in run.kind.held_out_scores(params, run.manifest).items()
        }
    name = run.data.eval_sets[0]
    decoder = run.decoder()

    def eval_fn(params, step: int) -> dict[str, float]:
        decoded = decode_manifest(
            run,
            {"": (decoder, decoder.prepare(params))},
            name,
            max_examples=run.eval.during_training_examples,
            progress=False,
        )[""]
        return {
            key.replace(" ", "_"): headline(result)
            for key, result in score(decoded, run.set_label(name), run.eval.metrics_of(name)).items()
        }

    return eval_fn
