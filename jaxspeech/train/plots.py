"""Learning-curve PNGs from a workdir's ``metrics.jsonl`` (what ``jaxspeech plot`` writes)."""

from __future__ import annotations

import os
import re

import numpy as np

from jaxspeech import paths
from jaxspeech.errors import UsageError
from jaxspeech.train.metrics import read_log

# Figure name -> metric-name pattern, matched (ignoring case) against the part after "train/" or
# "eval/" (or any other prefix, e.g. "dormancy/"): e.g. "loss" and "ctc_loss", "token_accuracy",
# "dev/held_out_voice_WER", "attention_on_audio/layer_0".
FIGURES = {
    "loss": r"(.*_)?loss|nll",
    "accuracy": r"(.*_)?accuracy",
    "learning_rate": r"learning_rate",
    "wer": r"(.*[_/ ])?wer",
    "cer": r"(.*[_/ ])?cer",
    "grad_norm": r"grad_norm",
    "audio_text_rms_ratio": r"audio_text_rms_ratio",
    "attention_on_audio": r"attention_on_(audio|instruction)(/layer_\d+)?",
}


def plot_learning_curves(workdir: str | os.PathLike, out_dir: str | os.PathLike | None = None) -> list[str]:
    """Writes ``<figure>.png`` to ``out_dir`` (default ``<workdir>/plots``) for each figure of
    ``FIGURES`` with logged data; train and eval curves share a figure. Returns the paths."""
    import matplotlib

    matplotlib.use("Agg")  # files only: no display needed
    import matplotlib.pyplot as plt

    log = read_log(workdir)
    out_dir = os.fspath(out_dir) if out_dir is not None else paths.join(workdir, "plots")
    paths.make_dirs(out_dir)
    written = []
    for figure_name, pattern in FIGURES.items():
        series = {
            key: log[key]
            for key in sorted(log)
            if "/" in key and re.fullmatch(pattern, key.split("/", 1)[1], re.IGNORECASE)
        }
        if not series:
            continue
        fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
        for key, (steps, values) in series.items():
            finite = np.isfinite(values)
            ax.plot(steps[finite], values[finite], marker="o" if finite.sum() < 30 else None, markersize=3, label=key)
        ax.set_xlabel("step")
        ax.set_ylabel(figure_name.replace("_", " "))
        if figure_name == "learning_rate":
            ax.ticklabel_format(axis="y", style="sci", scilimits=(-3, 3))
        ax.grid(True, alpha=0.3)
        ax.legend()
        ax.set_title(f"{figure_name.replace('_', ' ')} — {paths.base_name(workdir)}")
        fig.tight_layout()
        path = paths.join(out_dir, f"{figure_name}.png")
        with paths.open_file(path, "wb") as f:
            fig.savefig(f, format="png")
        plt.close(fig)
        written.append(path)
    if not written:
        raise UsageError(paths.join(workdir, "metrics.jsonl"), f"has no {', '.join(FIGURES)} values to plot")
    return written
