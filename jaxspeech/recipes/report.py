"""``report.md`` of a run: timings, throughput, the WER (or perplexity) table, learning curves and the config."""

from __future__ import annotations

import json
import os
from typing import Any, Mapping

from jaxspeech.evals.metrics import ErrorRateResult, PerplexityResult
from jaxspeech.evals.report import wer_table


def perplexity_table(results: Mapping[str, PerplexityResult]) -> str:
    """A Markdown table of held-out perplexities, one row per text set."""
    lines = ["| held-out text | tokens | perplexity |", "|---|---:|---:|"]
    lines += [f"| {name} | {r.tokens} | {r.perplexity:.3f} |" for name, r in results.items()]
    return "\n".join(lines) + "\n"


def write_report(
    workdir: str,
    *,
    title: str,
    config: Mapping[str, Any],
    timings: Mapping[str, float],
    train_metrics: Mapping[str, float],
    scores: Mapping[str, ErrorRateResult | PerplexityResult],
    plots: list[str],
    notes: list[str] = (),
) -> str:
    """Writes ``<workdir>/report.md`` and returns its path."""
    lines = [f"# {title}", ""]
    lines += ["## Results", ""]
    word = {k.removesuffix(" WER"): v for k, v in scores.items() if k.endswith(" WER")}
    char = {k.removesuffix(" CER"): v for k, v in scores.items() if k.endswith(" CER")}
    held_out = {k.removesuffix(" PPL"): v for k, v in scores.items() if isinstance(v, PerplexityResult)}
    if word:
        lines += [wer_table(word), ""]
    if char:
        lines += ["Character error rates:", "", wer_table(char), ""]
    if held_out:
        lines += [perplexity_table(held_out), ""]
    lines += ["## Timings", "", "| stage | seconds |", "|---|---:|"]
    lines += [f"| {name} | {seconds:.1f} |" for name, seconds in timings.items()]
    lines += ["", "## Training throughput (last logging window)", "", "| metric | value |", "|---|---:|"]
    for name in ("train/steps_per_s", "train/examples_per_s", "train/audio_seconds_per_s", "train/tokens_per_s",
                 "train/mfu", "train/loss", "train/token_accuracy", "train/nll", "train/ctc_loss"):
        if name in train_metrics:
            lines.append(f"| {name.removeprefix('train/')} | {train_metrics[name]:.4g} |")
    if "train/steps_per_s" in train_metrics and train_metrics["train/steps_per_s"] > 0:
        lines.append(f"| step time (s) | {1.0 / train_metrics['train/steps_per_s']:.3f} |")
    lines += [""]
    for note in notes:
        lines += [note, ""]
    if plots:
        lines += ["## Learning curves", ""]
        lines += [f"![{os.path.splitext(os.path.basename(p))[0]}]({os.path.relpath(p, workdir)})" for p in plots]
        lines += [""]
    lines += ["## Config", "", "```json", json.dumps(config, indent=2, default=str), "```", ""]
    path = os.path.join(workdir, "report.md")
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(lines))
    return path
