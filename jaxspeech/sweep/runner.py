"""Runs a sweep's cells one after another through the one recipe, cell by cell resumable.

Every cell is a normal run folder ``<workdir>/<cell name>`` trained, evaluated and reported by
``train_and_evaluate``. A finished cell leaves ``cell.json`` (its scores and training metrics) and is
never run again; a cell cut short (killed, or preempted with SIGTERM) resumes from its newest
checkpoint on the next call. ``sweep.log`` records each cell's start and end; ``sweep.json`` the
config and common overrides, which a later call must repeat (axes may gain values). After every
finished cell the results table and plots are rewritten (``results.py``, ``plots.py``).
"""

from __future__ import annotations

import json
import logging
import os
import time
from typing import Any

import numpy as np

from jaxspeech import paths
from jaxspeech.errors import ConfigError, UsageError
from jaxspeech.recipes.build import read_sections
from jaxspeech.recipes.run import train_and_evaluate
from jaxspeech.sweep.grid import Cell, Grid
from jaxspeech.sweep.plots import plot_results
from jaxspeech.sweep.results import DIAGNOSTICS, write_results
from jaxspeech.train.metrics import read_log

log = logging.getLogger(__name__)

CELL_RECORD = "cell.json"
SWEEP_LOG = "sweep.log"
SWEEP_JSON = "sweep.json"


def check_cells(grid: Grid) -> dict[str, Any]:
    """Every cell's config, each read whole and checked (nothing built): a wrong key or value fails
    here, naming the cell and the key, before any cell runs."""
    configs = {}
    for cell in grid.cells():
        try:
            config = grid.cell_config(cell)
            read_sections(config, need_weights=False)
        except UsageError as error:
            raise ConfigError(error.where, f"{error.what} (sweep cell {cell.name} of {grid.config})") from error
        configs[cell.name] = config
    return configs


def read_record(workdir: str, cell: Cell) -> dict[str, Any] | None:
    """The finished cell's record (None while it is not finished)."""
    path = os.path.join(workdir, cell.name, CELL_RECORD)
    if not os.path.exists(path):
        return None
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def training_metrics(cell_dir: str) -> dict[str, float]:
    """Per-step cost of a finished run from its ``metrics.jsonl``: ``step_time_s`` (1 / the median of
    the logged windows' steps per second), ``flops_per_step`` and ``step_memory_bytes`` (per device;
    the last and the largest logged); and the dormancy diagnostics (``results.DIAGNOSTICS``) at the
    last step that logged them; each where logged."""
    logged = read_log(cell_dir)
    metrics = {}
    if "train/steps_per_s" in logged:
        rates = logged["train/steps_per_s"][1]
        rates = rates[np.isfinite(rates) & (rates > 0)]
        if rates.size:
            metrics["step_time_s"] = float(1.0 / np.median(rates))
    if "train/flops_per_step" in logged:
        metrics["flops_per_step"] = float(logged["train/flops_per_step"][1][-1])
    if "train/step_memory_bytes" in logged:
        metrics["step_memory_bytes"] = float(np.max(logged["train/step_memory_bytes"][1]))
    for name in DIAGNOSTICS:
        if name in logged and logged[name][1].size:
            metrics[name] = float(logged[name][1][-1])
    return metrics


def _write_json(path: str, value: Any) -> None:
    """Writes ``value`` to ``path`` whole or not at all (a temporary file renamed into place)."""
    temporary = f"{path}.tmp"
    with open(temporary, "w", encoding="utf-8") as f:
        json.dump(value, f, indent=2)
    os.replace(temporary, path)


def _note(workdir: str, text: str) -> None:
    with open(os.path.join(workdir, SWEEP_LOG), "a", encoding="utf-8") as f:
        f.write(f"{time.strftime('%Y-%m-%dT%H:%M:%S')} {text}\n")


def claim_workdir(grid: Grid, workdir: str) -> None:
    """Writes ``sweep.json``, or checks that an earlier sweep in ``workdir`` had the same config and
    common overrides (its finished cells would not be comparable otherwise)."""
    if not paths.is_local(workdir):
        raise UsageError(workdir, "a sweep writes its cells and results in a local folder: give a local path")
    os.makedirs(workdir, exist_ok=True)
    path = os.path.join(workdir, SWEEP_JSON)
    described = grid.describe()
    if os.path.exists(path):
        with open(path, encoding="utf-8") as f:
            earlier = json.load(f)
        for key in ("config", "sets"):
            if earlier.get(key) != described[key]:
                raise UsageError(
                    workdir,
                    f"holds a sweep with {key} {earlier.get(key)!r}, not {described[key]!r}: "
                    "repeat them, or use another --workdir",
                )
    _write_json(path, described)


def collect(grid: Grid, workdir: str) -> dict[str, str]:
    """Rewrites ``results.md``, ``results.json`` and the plots from the finished cells; returns their paths."""
    records = [record for cell in grid.cells() if (record := read_record(workdir, cell)) is not None]
    paths = write_results(grid, records, workdir)
    plots = plot_results(paths["json"], os.path.join(workdir, "plots"))
    paths.update({f"plot of {score}": path for score, path in plots.items()})
    return paths


def run_sweep(grid: Grid, workdir: str, *, progress: bool = True) -> dict[str, Any]:
    """Runs the unfinished cells of ``grid`` in order; returns {"finished": [names], "stopped": name or
    None (a cell preempted: the sweep stops there), "results": {kind: path}}."""
    configs = check_cells(grid)
    claim_workdir(grid, workdir)
    cells = grid.cells()
    finished, stopped = [], None
    for index, cell in enumerate(cells, 1):
        cell_dir = os.path.join(workdir, cell.name)
        if read_record(workdir, cell) is not None:
            log.info("[%d/%d] %s: finished earlier", index, len(cells), cell.name)
            continue
        log.info(
            "[%d/%d] %s: %s",
            index,
            len(cells),
            cell.name,
            "resuming" if os.path.isdir(os.path.join(cell_dir, "checkpoints")) else "starting",
        )
        _note(workdir, f"start {cell.name}")
        config = configs[cell.name]
        if not progress:
            config.train.progress_bar = False
        summary = train_and_evaluate(config, cell_dir, progress=progress)
        if summary["stop_reason"] == "preempted":
            _note(workdir, f"preempted {cell.name}")
            stopped = cell.name
            break
        record = {
            "name": cell.name,
            "labels": dict(cell.labels),
            "overrides": dict(cell.overrides),
            "scores": summary["scores"],
            "step": summary["step"],
            "stop_reason": summary["stop_reason"],
            "timings": summary["timings"],
            "metrics": training_metrics(cell_dir),
            "report": os.path.relpath(summary["report"], workdir),
        }
        _write_json(os.path.join(cell_dir, CELL_RECORD), record)
        _note(workdir, f"finish {cell.name}")
        finished.append(cell.name)
        collect(grid, workdir)
    return {"finished": finished, "stopped": stopped, "results": collect(grid, workdir)}
