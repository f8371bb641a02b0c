"""The colab/ notebooks run top to bottom: every code cell, in order, in one namespace (shell and
``%pip`` lines are skipped: the package is already installed here); then what each notebook
computed is checked: the quickstart's run summary, each study's table of every cell of its grid
with finite scores and costs in range."""

import itertools
import json
import math
import os
import pathlib
import shutil

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
# These tests build or read data/tiny_debug in the checkout: under pytest -n they share one worker.
pytestmark = pytest.mark.xdist_group("repo_data")
NOTEBOOKS = sorted((REPO / "colab").glob("*.ipynb"))
# The run folder each notebook writes (relative to the repository root): removed before and after.
RUN_FOLDERS = {
    "quickstart.ipynb": "runs/notebook_debug",
    "fusion_study.ipynb": "runs/fusion_study",
    "connector_study.ipynb": "runs/connector_study",
    "instruction_study.ipynb": "runs/instruction_study",
}


def code_cells(path: pathlib.Path) -> list[str]:
    cells = json.loads(path.read_text())["cells"]
    sources = ("".join(c["source"]) for c in cells if c["cell_type"] == "code")
    return ["\n".join(line for line in src.splitlines() if not line.lstrip().startswith(("%", "!"))) for src in sources]


def check_quickstart(namespace: dict) -> None:
    summary = namespace["summary"]
    assert summary["step"] == namespace["config"].train.total_steps
    assert summary["scores"] and all(math.isfinite(v) and v >= 0 for v in summary["scores"].values())
    assert math.isfinite(float(namespace["stats"]["mean_ratio"])) and float(namespace["stats"]["mean_ratio"]) > 0


def check_study(namespace: dict) -> None:
    """The sweep's results.json (as the notebook read it) has every cell of the notebook's grid,
    finished, with finite scores >= 0 (shares <= 1; the notebook's ``SCORE`` among them) and positive step time,
    FLOPs and memory; its table has one row per combination of the non-seed axes, every mean finite;
    the results table and the plot the notebook shows exist."""
    grid, results, table, score = namespace["grid"], namespace["results"], namespace["table"], namespace["SCORE"]
    cells = {cell.name for cell in grid.cells()}
    assert cells and {record["name"] for record in results["cells"]} == cells
    assert results["pending"] == []
    for record in results["cells"]:
        assert record["stop_reason"] == "completed" and record["step"] > 0, record["name"]
        assert score in record["scores"], (record["name"], sorted(record["scores"]))
        for name, value in record["scores"].items():
            assert math.isfinite(value) and value >= 0, (record["name"], name, value)
            if name.endswith(("EXACT_MATCH", "TRANSCRIPT_ECHO")):  # shares of the answers
                assert value <= 1, (record["name"], name, value)
        for name in ("step_time_s", "flops_per_step", "step_memory_bytes"):
            value = record["metrics"][name]
            assert math.isfinite(value) and value > 0, (record["name"], name, value)
    varied = [[label for label, _ in axis.choices] for axis in grid.axes if not axis.is_seed]
    rows = [", ".join(labels) for labels in itertools.product(*varied)]
    assert sorted(table) == sorted(rows)
    for row, metrics in table.items():
        assert all(value is not None and math.isfinite(value) for value in metrics.values()), (row, metrics)
    markdown = (REPO / namespace["WORKDIR"] / "results.md").read_text()
    assert all(f"| {' | '.join(labels)} |" in markdown for labels in itertools.product(*varied))
    assert (REPO / namespace["outcome"]["results"][f"plot of {score}"]).stat().st_size > 0


CHECKS = {"quickstart.ipynb": check_quickstart}


def test_there_is_a_notebook():
    assert NOTEBOOKS, "colab/ holds no notebook"


def test_every_notebook_names_its_run_folder():
    assert sorted(RUN_FOLDERS) == sorted(path.name for path in NOTEBOOKS)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_runs_top_to_bottom(path, monkeypatch):
    run_folder = REPO / RUN_FOLDERS[path.name]
    shutil.rmtree(run_folder, ignore_errors=True)  # a study's sweep would resume from an earlier run
    monkeypatch.chdir(REPO / "colab")  # where a user opens it; the notebook moves to the repository root
    namespace = {"__name__": "__notebook__"}
    try:
        for index, source in enumerate(code_cells(path)):
            try:
                exec(compile(source, f"{path.name}[cell {index}]", "exec"), namespace)
            except Exception as error:
                raise AssertionError(f"{path.name}: code cell {index} failed: {error!r}") from error
        CHECKS.get(path.name, check_study)(namespace)
    finally:
        shutil.rmtree(run_folder, ignore_errors=True)
        os.chdir(REPO)
