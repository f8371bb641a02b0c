"""Sweeps: a grid of config overrides x seeds run cell by cell through the one recipe (``runner.py``),
each cell a normal run folder, resumable; the cells' results as one table with the spread over
seeds (``results.py``) and plots of the scores against each cell's cost (``plots.py``)."""

# A lazy import: ``import jaxspeech.sweep`` stays cheap; names load on first use.
from etils import epy

with epy.lazy_api_imports(globals()):
    from jaxspeech.sweep.grid import Axis, Cell, Grid, load_grid
    from jaxspeech.sweep.runner import check_cells, collect, run_sweep
