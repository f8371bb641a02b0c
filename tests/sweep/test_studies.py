"""Every study's grid file (experiments/*/grid.py), in each of its forms, gives cells whose configs
all read and check: a renamed config key or a value a connector no longer takes fails here, not
hours into a study."""

import os

import pytest

from jaxspeech.sweep.grid import load_grid
from jaxspeech.sweep.runner import check_cells

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
STUDIES = {"fusion": 16, "connectors": 22, "instructions": 8}  # cells of the full grid


@pytest.mark.parametrize("form", ["", ":debug", ":colab"])
@pytest.mark.parametrize("study", sorted(STUDIES))
def test_every_cell_of_a_study_checks(study, form, monkeypatch):
    monkeypatch.chdir(REPO)  # grid files name configs relative to the repository root
    grid = load_grid(None, [], f"experiments/{study}/grid.py{form}", [])
    configs = check_cells(grid)
    assert len(configs) == (2 if form == ":colab" else STUDIES[study])
    assert any(axis.is_seed for axis in grid.axes)
