"""The colab/ notebooks run top to bottom: every code cell, in order, in one namespace (shell and
``%pip`` lines are skipped: the package is already installed here). Outputs are not compared."""

import json
import os
import pathlib
import shutil

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
# These tests build or read data/tiny_debug in the checkout: under pytest -n they share one worker.
pytestmark = pytest.mark.xdist_group("repo_data")
NOTEBOOKS = sorted((REPO / "colab").glob("*.ipynb"))


def code_cells(path: pathlib.Path) -> list[str]:
    cells = json.loads(path.read_text())["cells"]
    sources = ("".join(c["source"]) for c in cells if c["cell_type"] == "code")
    return ["\n".join(line for line in src.splitlines() if not line.lstrip().startswith(("%", "!"))) for src in sources]


def test_there_is_a_notebook():
    assert NOTEBOOKS, "colab/ holds no notebook"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_runs_top_to_bottom(path, monkeypatch):
    monkeypatch.chdir(REPO / "colab")  # where a user opens it; the notebook moves to the repository root
    namespace = {"__name__": "__notebook__"}
    try:
        for index, source in enumerate(code_cells(path)):
            try:
                exec(compile(source, f"{path.name}[cell {index}]", "exec"), namespace)
            except Exception as error:
                raise AssertionError(f"{path.name}: code cell {index} failed: {error!r}") from error
    finally:
        shutil.rmtree(REPO / "runs" / "notebook_debug", ignore_errors=True)
        os.chdir(REPO)
