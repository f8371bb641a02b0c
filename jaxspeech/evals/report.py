"""Evaluation outputs: per-example JSONL and Markdown tables of each metric (WER/CER, BLEU, exact match,
transcript echo)."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from typing import Any

from jaxspeech import paths
from jaxspeech.evals.metrics import BleuResult, ErrorRateResult, ExactMatchResult, ExampleScore, TranscriptEchoResult


def example_record(example: ExampleScore, unit: str = "word") -> dict[str, Any]:
    """One JSON-ready record: id, texts, normalised texts, S/D/I, reference length and error rate."""
    counts = example.counts
    return {
        "id": example.id,
        "reference": example.reference,
        "hypothesis": example.hypothesis,
        "reference_normalized": example.reference_normalized,
        "hypothesis_normalized": example.hypothesis_normalized,
        "substitutions": counts.substitutions,
        "deletions": counts.deletions,
        "insertions": counts.insertions,
        f"reference_{unit}s": counts.reference_length,
        "wer" if unit == "word" else "cer": counts.rate,
    }


def write_per_example_jsonl(path: str | os.PathLike, records: ErrorRateResult | Iterable[Mapping[str, Any]]) -> int:
    """Writes one JSON object per line (an ``ErrorRateResult``'s examples, or ready records);
    returns the number written. The file appears whole or not at all."""
    if isinstance(records, ErrorRateResult):
        records = [example_record(e, records.unit) for e in records.examples]
    path = os.fspath(path)
    lines = []
    for record in records:
        if not isinstance(record, Mapping):
            raise TypeError(f"{path}: record {len(lines)} is {type(record).__name__}, expected a mapping")
        lines.append(json.dumps(dict(record), ensure_ascii=False) + "\n")
    paths.write_whole(path, "".join(lines))
    return len(lines)


def wer_table(results: Mapping[str, ErrorRateResult], *, name_header: str = "set") -> str:
    """A Markdown table with one row per named result: examples, reference length, S, D, I and the rate."""
    units = {r.unit for r in results.values()}
    metric = "WER" if units <= {"word"} else "CER" if units == {"char"} else "error rate"
    length = "ref words" if units <= {"word"} else "ref chars" if units == {"char"} else "ref length"
    lines = [f"| {name_header} | examples | {length} | S | D | I | {metric} % |", "|---|---:|---:|---:|---:|---:|---:|"]
    for name, result in results.items():
        c = result.counts
        lines.append(
            f"| {name} | {len(result.examples)} | {c.reference_length} | {c.substitutions} | "
            f"{c.deletions} | {c.insertions} | {100 * c.rate:.2f} |"
        )
    return "\n".join(lines) + "\n"


def bleu_table(results: Mapping[str, BleuResult], *, name_header: str = "set") -> str:
    """A Markdown table with one row per named corpus BLEU: the score (0-100, higher is better), the
    1- to 4-gram precisions, the brevity penalty and the hypothesis / reference token counts."""
    lines = [
        f"| {name_header} | BLEU | 1/2/3/4-gram precision % | brevity penalty | hyp / ref tokens |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, r in results.items():
        precisions = "/".join(f"{p:.1f}" for p in r.precisions)
        lines.append(
            f"| {name} | {r.score:.2f} | {precisions} | {r.brevity_penalty:.3f} | "
            f"{r.hypothesis_length} / {r.reference_length} |"
        )
    return "\n".join(lines) + "\n"


def exact_match_table(results: Mapping[str, ExactMatchResult], *, name_header: str = "set") -> str:
    """A Markdown table with one row per named result: examples, exact matches and their share (higher
    is better)."""
    lines = [f"| {name_header} | examples | exact matches | exact match % |", "|---|---:|---:|---:|"]
    for name, r in results.items():
        lines.append(f"| {name} | {len(r.matches)} | {sum(r.matches)} | {100 * r.accuracy:.2f} |")
    return "\n".join(lines) + "\n"


def transcript_echo_table(results: Mapping[str, TranscriptEchoResult], *, name_header: str = "set") -> str:
    """A Markdown table with one row per named result: examples, those whose hypothesis is within the
    WER threshold of the transcript, and their share (on a set that asks for something else than the
    transcript, lower is better)."""
    lines = [f"| {name_header} | examples | WER threshold | transcript echoes | echo % |", "|---|---:|---:|---:|---:|"]
    for name, r in results.items():
        lines.append(f"| {name} | {len(r.echoes)} | {r.threshold:g} | {sum(r.echoes)} | {100 * r.share:.2f} |")
    return "\n".join(lines) + "\n"


# Per metric of ``PER_SET_METRICS``: the title above its table and the table.
METRIC_TABLES = {
    "wer": ("Word error rates:", wer_table),
    "cer": ("Character error rates:", wer_table),
    "bleu": ("BLEU (sacrebleu: 13a tokenisation of the raw text, one reference; higher is better):", bleu_table),
    "exact_match": ("Exact match (normalised hypothesis equals normalised reference):", exact_match_table),
    "transcript_echo": (
        "Transcript echo (the hypothesis within the WER threshold of the utterance's transcript: on a set "
        "whose instruction asks for something else, the model transcribed instead; lower is better):",
        transcript_echo_table,
    ),
}


def metric_tables(scores: Mapping[str, Any], metrics: Iterable[str]) -> list[str]:
    """For each of ``metrics`` with results in ``scores`` (keyed ``"<set> <METRIC>"``): its title and
    table, as one Markdown block."""
    blocks = []
    for metric in metrics:
        suffix = f" {metric.upper()}"
        results = {key.removesuffix(suffix): value for key, value in scores.items() if key.endswith(suffix)}
        if results:
            title, table = METRIC_TABLES[metric]
            blocks.append(f"{title}\n\n{table(results)}")
    return blocks
