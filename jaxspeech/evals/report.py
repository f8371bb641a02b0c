"""Evaluation outputs: per-example JSONL and a Markdown WER table."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from typing import Any

from jaxspeech import paths
from jaxspeech.evals.metrics import ErrorRateResult, ExampleScore


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
