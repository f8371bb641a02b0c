"""``report.md`` of a run: timings, throughput, the tables of ``eval.metrics`` (or perplexity), the
dormancy diagnostics, learning curves and the config."""

from __future__ import annotations

import json
import os

import numpy as np
from typing import Any, Mapping, Sequence

from jaxspeech import paths
from jaxspeech.evals.metrics import PER_SET_METRICS, ErrorRateResult, MetricResult, PerplexityResult
from jaxspeech.evals.report import metric_tables
from jaxspeech.train.metrics import LOG_FILENAME, read_log


def perplexity_table(results: Mapping[str, PerplexityResult]) -> str:
    """A Markdown table of held-out perplexities, one row per text set."""
    lines = ["| held-out text | tokens | perplexity |", "|---|---:|---:|"]
    lines += [f"| {name} | {r.tokens} | {r.perplexity:.3f} |" for name, r in results.items()]
    return "\n".join(lines) + "\n"


DECODER_TITLES = {"llm": "LLM alone", "ctc": "CTC head alone", "joint": "joint"}
DECODER_NOTES = {
    "llm": "eval.llm_generation, no CTC scores, no lexicon",
    "ctc": "greedy",
    "joint": "eval.generation with eval.lexicon",
}
DORMANCY_COLUMNS = {
    "dormancy/audio_text_rms_ratio": "audio/text embedding RMS",
    "dormancy/attention_on_audio": "LLM attention on audio",
    "dormancy/attention_on_instruction": "LLM attention on instruction",
}
ALIGNED_POSITIONS_NOTE = (
    "its rotary positions laid out against the audio by the CTC head's greedy path (model.audio_positions)"
)
VOICE_GROUPS = (("", "all"), ("/train_voices", "training voices"), ("/held_out_voice", "held-out voice"))


def decoder_notes(config: Mapping[str, Any], decoders: Sequence[str]) -> dict[str, str]:
    """How each of ``decoders`` decodes, for the report; the LLM's note says when the CTC head sets its
    positions (``model.audio_positions="ctc"``), since the LLM alone then still reads the CTC head's argmax."""
    notes = {d: DECODER_NOTES[d] for d in decoders if d in DECODER_NOTES}
    if "llm" in notes and config.get("model", {}).get("audio_positions") == "ctc":
        notes["llm"] += f"; {ALIGNED_POSITIONS_NOTE}"
    return notes


def decoder_table(word: Mapping[str, ErrorRateResult], decoders: Sequence[str]) -> str:
    """A Markdown table of WER % with one row per eval set and voice group and one column per decoder,
    from results keyed ``<set>/<decoder>[/train_voices|/held_out_voice]``; "" when none match."""
    sets = list(
        dict.fromkeys(key.split("/")[0] for key in word if key.count("/") >= 1 and key.split("/")[1] in decoders)
    )
    rows = []
    for name in sets:
        for suffix, group in VOICE_GROUPS:
            cells = [word.get(f"{name}/{decoder}{suffix}") for decoder in decoders]
            present = [cell for cell in cells if cell is not None]
            if present:
                rates = [f"{100 * cell.rate:.2f}" if cell is not None else "–" for cell in cells]
                rows.append(f"| {name} | {group} | {len(present[0].examples)} | " + " | ".join(rates) + " |")
    if not rows:
        return ""
    header = "| set | voices | utterances | " + " | ".join(f"{DECODER_TITLES.get(d, d)} WER %" for d in decoders)
    return "\n".join([header + " |", "|---|---|---:|" + "---:|" * len(decoders), *rows]) + "\n"


def dormancy_table(log: Mapping[str, tuple[np.ndarray, np.ndarray]], rows: int = 8) -> str:
    """A Markdown table of the dormancy diagnostics logged during training (``recipes/dormancy_hook.py``)
    at up to ``rows`` steps spread over the run, first and last included; "" when none were logged."""
    keys = [key for key in DORMANCY_COLUMNS if key in log]
    if not keys:
        return ""
    steps = np.unique(np.concatenate([log[key][0] for key in keys]))
    shown = steps[np.unique(np.linspace(0, len(steps) - 1, min(rows, len(steps))).round().astype(int))]
    lines = ["| step | " + " | ".join(DORMANCY_COLUMNS[key] for key in keys) + " |", "|---:|" + "---:|" * len(keys)]
    for step in shown:
        cells = []
        for key in keys:
            key_steps, values = log[key]
            hit = np.nonzero(key_steps == step)[0]
            cells.append(f"{values[hit[0]]:.3f}" if hit.size else "–")
        lines.append(f"| {int(step)} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_report(
    workdir: str,
    *,
    title: str,
    config: Mapping[str, Any],
    timings: Mapping[str, float],
    train_metrics: Mapping[str, float],
    scores: Mapping[str, MetricResult],
    plots: list[str],
    notes: list[str] = (),
    decoders: Sequence[str] = (),
) -> str:
    """Writes ``<workdir>/report.md`` and returns its path; ``decoders`` (``eval.decoders``) are
    compared side by side first."""
    lines = [f"# {title}", ""]
    lines += ["## Results", ""]
    word = {k.removesuffix(" WER"): v for k, v in scores.items() if k.endswith(" WER")}
    held_out = {k.removesuffix(" PPL"): v for k, v in scores.items() if isinstance(v, PerplexityResult)}
    comparison = decoder_table(word, decoders)
    if comparison:
        lines += [
            "Word error rates by decoder ("
            + "; ".join(f"{DECODER_TITLES.get(d, d)}: {note}" for d, note in decoder_notes(config, decoders).items())
            + "):",
            "",
            comparison,
            "",
        ]
    for block in metric_tables(scores, PER_SET_METRICS):
        lines += [block, ""]
    if held_out:
        lines += [perplexity_table(held_out), ""]
    lines += ["## Timings", "", "| stage | seconds |", "|---|---:|"]
    lines += [f"| {name} | {seconds:.1f} |" for name, seconds in timings.items()]
    lines += ["", "## Training throughput (last logging window)", "", "| metric | value |", "|---|---:|"]
    for name in (
        "train/steps_per_s",
        "train/examples_per_s",
        "train/audio_seconds_per_s",
        "train/tokens_per_s",
        "train/mfu",
        "train/flops_per_step",
        "train/step_memory_bytes",
        "train/loss",
        "train/token_accuracy",
        "train/nll",
        "train/ctc_loss",
    ):
        if name in train_metrics:
            lines.append(f"| {name.removeprefix('train/')} | {train_metrics[name]:.4g} |")
    if "train/steps_per_s" in train_metrics and train_metrics["train/steps_per_s"] > 0:
        lines.append(f"| step time (s) | {1.0 / train_metrics['train/steps_per_s']:.3f} |")
    lines += [""]
    dormancy = dormancy_table(read_log(workdir)) if paths.exists(paths.join(workdir, LOG_FILENAME)) else ""
    if dormancy:
        lines += [
            "## Does the LLM read the audio? (dormancy diagnostics during training)",
            "",
            "On the first eval examples, teacher-forced on their transcripts: RMS of the audio embeddings "
            "entering the LLM over that of the text embeddings, and the share of the LLM's self-attention "
            "(mean over layers and heads) from the positions predicting the transcript onto the audio "
            "tokens and onto the instruction.",
            "",
            dormancy,
            "",
        ]
    for note in notes:
        lines += [note, ""]
    if plots:
        lines += ["## Learning curves", ""]
        lines += [f"![{os.path.splitext(os.path.basename(p))[0]}]({_relative(p, workdir)})" for p in plots]
        lines += [""]
    lines += ["## Config", "", "```json", json.dumps(config, indent=2, default=str), "```", ""]
    path = paths.join(workdir, "report.md")
    paths.write_whole(path, "\n".join(lines))
    return path


def _relative(path: str, folder: str) -> str:
    """``path`` relative to ``folder`` (a plot's link in the report), for local and bucket paths."""
    if paths.is_local(path):
        return os.path.relpath(path, folder)
    return path.removeprefix(paths.absolute(folder) + "/")
