"""A sweep's plots: each score against each cost (FLOPs per step, step time, step memory), one point
per group of cells with error bars of the spread over seeds."""

from __future__ import annotations

import json
import os
import re

from jaxspeech.sweep.results import COST_METRICS, column_title


def plot_results(results_json: str, out_dir: str) -> dict[str, str]:
    """Writes ``<score>_vs_<cost>.png`` into ``out_dir`` for every score and cost some group has;
    returns {"<score> vs <cost>": path}."""
    import matplotlib

    matplotlib.use("Agg")  # files only: no display needed
    import matplotlib.pyplot as plt

    with open(results_json, encoding="utf-8") as f:
        results = json.load(f)
    groups = results["groups"]
    names = list(groups[0]["metrics"]) if groups else []
    scores = [name for name in names if name not in COST_METRICS]
    costs = [name for name in names if name in COST_METRICS]
    os.makedirs(out_dir, exist_ok=True)
    written = {}
    for score in scores:
        percent = not score.endswith(" PPL")
        for cost in costs:
            _, scale, _ = COST_METRICS[cost]
            points = [(g, g["metrics"][cost], g["metrics"][score]) for g in groups
                      if g["metrics"][cost]["mean"] is not None and g["metrics"][score]["mean"] is not None]
            if not points:
                continue
            fig, ax = plt.subplots(figsize=(7, 4.5), dpi=100)
            for group, x, y in points:
                label = ", ".join(f"{k}={v}" for k, v in group["labels"].items()) or "all cells"
                y_scale = 100.0 if percent else 1.0
                ax.errorbar(x["mean"] * scale, y["mean"] * y_scale,
                            xerr=None if x["std"] is None else x["std"] * scale,
                            yerr=None if y["std"] is None else y["std"] * y_scale,
                            marker="o", capsize=3, linestyle="none", label=f"{label} (n={y['n']})")
            ax.set_xlabel(column_title(cost))
            ax.set_ylabel(column_title(score))
            ax.grid(True, alpha=0.3)
            ax.legend(fontsize=7)
            ax.set_title(f"{score} vs {column_title(cost)}")
            fig.tight_layout()
            path = os.path.join(out_dir, f"{re.sub(r'[^A-Za-z0-9]+', '_', score).strip('_')}_vs_{cost}.png")
            fig.savefig(path)
            plt.close(fig)
            written[f"{score} vs {cost}"] = path
    return written
