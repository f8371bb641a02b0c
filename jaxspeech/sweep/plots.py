"""A sweep's plots: each score against each cost (FLOPs per step, step time, step memory), one point
per group of cells with error bars of the spread over seeds; one figure per score."""

from __future__ import annotations

import json
import os
import re

from jaxspeech.sweep.results import COST_METRICS, TRAINING_METRICS, column_title


def plot_results(results_json: str, out_dir: str) -> dict[str, str]:
    """Writes ``<score>.png`` into ``out_dir`` for every score: one panel per cost some group has
    (FLOPs per step, step time, step memory); returns {score: path}."""
    import matplotlib

    matplotlib.use("Agg")  # files only: no display needed
    import matplotlib.pyplot as plt

    with open(results_json, encoding="utf-8") as f:
        results = json.load(f)
    groups = results["groups"]
    names = list(groups[0]["metrics"]) if groups else []
    costs = [
        name for name in names if name in COST_METRICS and any(g["metrics"][name]["mean"] is not None for g in groups)
    ]
    os.makedirs(out_dir, exist_ok=True)
    written = {}
    for score in (name for name in names if name not in TRAINING_METRICS):
        if not costs:
            break
        y_scale = 1.0 if score.endswith(" PPL") else 100.0
        fig, axes = plt.subplots(1, len(costs), figsize=(5 * len(costs), 4.5), dpi=100, squeeze=False)
        for ax, cost in zip(axes[0], costs):
            x_scale = COST_METRICS[cost][1]
            for group in groups:
                x, y = group["metrics"][cost], group["metrics"][score]
                if x["mean"] is None or y["mean"] is None:
                    continue
                label = ", ".join(f"{k}={v}" for k, v in group["labels"].items()) or "all cells"
                ax.errorbar(
                    x["mean"] * x_scale,
                    y["mean"] * y_scale,
                    xerr=None if x["std"] is None else x["std"] * x_scale,
                    yerr=None if y["std"] is None else y["std"] * y_scale,
                    marker="o",
                    capsize=3,
                    linestyle="none",
                    label=f"{label} (n={y['n']})",
                )
            ax.set_xlabel(column_title(cost))
            ax.set_ylabel(column_title(score))
            ax.grid(True, alpha=0.3)
        axes[0][0].legend(fontsize=7)
        fig.suptitle(f"{score}: mean ± spread over seeds")
        fig.tight_layout()
        path = os.path.join(out_dir, f"{re.sub(r'[^A-Za-z0-9]+', '_', score).strip('_')}.png")
        fig.savefig(path)
        plt.close(fig)
        written[score] = path
    return written
