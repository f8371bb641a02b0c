"""A sweep's results table: the finished cells grouped over their seed axes, each metric's mean and
spread (sample standard deviation over the seeds), as ``results.json`` and ``results.md``."""

from __future__ import annotations

import json
import math
import os
from typing import Any, Mapping, Sequence

from jaxspeech.recipes.report import DORMANCY_COLUMNS
from jaxspeech.sweep.grid import Grid

COST_METRICS = {  # name -> (column title, scale, format)
    "flops_per_step": ("GFLOP / step / device", 1e-9, "{:.3g}"),
    "step_time_s": ("step time (s)", 1.0, "{:.3f}"),
    "step_memory_bytes": ("step memory (MiB / device)", 1 / 2**20, "{:.1f}"),
}
# Does the LLM read the audio? The dormancy diagnostics (recipes/dormancy_hook.py) at the cell's last
# logged step: tabled beside the scores, not plotted as scores.
DIAGNOSTICS = {
    name: (title, 1.0, "{:.3g}" if name.endswith("rms_ratio") else "{:.3f}") for name, title in DORMANCY_COLUMNS.items()
}
TRAINING_METRICS = {**COST_METRICS, **DIAGNOSTICS}


def statistics(values: Sequence[float]) -> dict[str, Any]:
    """{"mean", "std" (sample, None for one value), "n", "values"} of the finite ``values``."""
    finite = [float(v) for v in values if v is not None and math.isfinite(v)]
    n = len(finite)
    mean = sum(finite) / n if n else None
    std = math.sqrt(sum((v - mean) ** 2 for v in finite) / (n - 1)) if n > 1 else None
    return {"mean": mean, "std": std, "n": n, "values": finite}


def metric_names(records: Sequence[Mapping[str, Any]]) -> list[str]:
    """The cells' score names (first seen first), then the cost metrics and diagnostics any cell logged."""
    names: list[str] = []
    for record in records:
        names += [name for name in record["scores"] if name not in names]
    return names + [name for name in TRAINING_METRICS if any(name in r["metrics"] for r in records)]


def value_of(record: Mapping[str, Any], name: str) -> float | None:
    return record["scores"].get(name, record["metrics"].get(name))


def group_records(grid: Grid, records: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One group per combination of the non-seed axes' labels (grid order), with each metric's statistics."""
    varied = [axis.name for axis in grid.axes if not axis.is_seed]
    groups: dict[tuple, list] = {}
    for record in records:
        groups.setdefault(tuple(record["labels"][name] for name in varied), []).append(record)
    names = metric_names(records)
    return [
        {
            "labels": dict(zip(varied, key)),
            "cells": [r["name"] for r in members],
            "metrics": {name: statistics([value_of(r, name) for r in members]) for name in names},
        }
        for key, members in groups.items()
    ]


def formatted(name: str, value: float | None) -> str:
    """Scores as the CLI prints them (error rates in %, perplexities as they are); costs scaled."""
    if value is None:
        return "–"
    if name in TRAINING_METRICS:
        _, scale, fmt = TRAINING_METRICS[name]
        return fmt.format(value * scale)
    return f"{value:.3f}" if name.endswith(" PPL") else f"{100 * value:.2f}"


def column_title(name: str) -> str:
    if name in TRAINING_METRICS:
        return TRAINING_METRICS[name][0]
    return name if name.endswith(" PPL") else f"{name} %"


def markdown(
    grid: Grid, groups: Sequence[Mapping[str, Any]], records: Sequence[Mapping[str, Any]], pending: Sequence[str]
) -> str:
    """The results as Markdown: the groups (mean ± spread over seeds), then every finished cell."""
    names = metric_names(records)
    varied = [axis.name for axis in grid.axes if not axis.is_seed]
    seeds = [axis.name for axis in grid.axes if axis.is_seed]
    lines = [f"# Sweep: {grid.config}", ""]
    if grid.sets:
        lines += ["Every cell: " + ", ".join(f"`{item}`" for item in grid.sets), ""]
    lines += [
        f"{len(records)} of {len(records) + len(pending)} cells finished. "
        + (
            f"Mean ± sample standard deviation over {' × '.join(seeds)} (n = seeds finished)."
            if seeds
            else "No seed axis: one run per row, no spread."
        ),
        "",
    ]
    header = [*varied, "n", *(column_title(n) for n in names)]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(varied) + "---:|" * (1 + len(names))]
    for group in groups:
        cells = [group["labels"][v] for v in varied]
        n = max((stats["n"] for stats in group["metrics"].values()), default=0)
        for name in names:
            stats = group["metrics"][name]
            text = formatted(name, stats["mean"])
            cells.append(text if stats["std"] is None else f"{text} ± {formatted(name, stats['std'])}")
        lines.append("| " + " | ".join([*cells[: len(varied)], str(n), *cells[len(varied) :]]) + " |")
    lines += [
        "",
        "## Cells",
        "",
        "| cell | steps | stop | " + " | ".join(column_title(n) for n in names) + " | report |",
        "|---|---:|---|" + "---:|" * len(names) + "---|",
    ]
    for record in records:
        values = [formatted(name, value_of(record, name)) for name in names]
        lines.append(
            f"| {record['name']} | {record['step']} | {record['stop_reason']} | "
            + " | ".join(values)
            + f" | [report]({record['report']}) |"
        )
    if pending:
        lines += ["", "Not finished yet: " + ", ".join(pending)]
    return "\n".join(lines) + "\n"


def write_results(grid: Grid, records: Sequence[Mapping[str, Any]], workdir: str) -> dict[str, str]:
    """Writes ``results.json`` (grid, cells, groups) and ``results.md`` in ``workdir``; returns their paths."""
    done = {record["name"] for record in records}
    pending = [cell.name for cell in grid.cells() if cell.name not in done]
    groups = group_records(grid, records)
    paths = {"json": os.path.join(workdir, "results.json"), "md": os.path.join(workdir, "results.md")}
    with open(paths["json"], "w", encoding="utf-8") as f:
        json.dump({"sweep": grid.describe(), "cells": list(records), "groups": groups, "pending": pending}, f, indent=2)
    with open(paths["md"], "w", encoding="utf-8") as f:
        f.write(markdown(grid, groups, records, pending))
    return paths
