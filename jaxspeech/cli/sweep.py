"""``jaxspeech sweep``: a grid of config overrides x seeds, one normal run per cell, one results table.

  jaxspeech sweep --config configs/tiny_asr.py --workdir runs/sweep_connectors \\
      --grid model.connector.stack=2,4,8 --grid train.seed=0,1 --set train.time_budget_s=600
  jaxspeech sweep --grid-file experiments/fusion/grid.py --workdir runs/sweep_fusion
  jaxspeech sweep --config configs/tiny_asr.py:debug --grid train.seed=0,1 --workdir /tmp/sweep --dry-run

Each ``--grid KEY=V1,V2,...`` is an axis (values are Python literals, else strings; commas inside
brackets or quotes do not split); the cells are the cartesian product of the axes, each its own run
folder ``WORKDIR/<key=value>__<key=value>...`` trained, evaluated and reported exactly as
``jaxspeech train`` would (``--set`` overrides apply to every cell). A grid file defines ``GRID``
(axis -> list of values, or a joint axis {label: {key: value, ...}}) and may define ``CONFIG`` and
``SETS``; given as ``grid.py:ARG`` it defines ``get_grid(ARG)`` returning them (a study's smaller
forms, e.g. ``experiments/fusion/grid.py:debug``). Every cell's config is checked before the first
cell runs: a wrong key is named then.

The cells run one after another. Re-running the same command resumes: finished cells (with
``cell.json``) are never redone; a cell that was killed resumes from its newest checkpoint; SIGTERM
checkpoints the running cell and stops the sweep. Axes named ``seed`` (e.g. ``train.seed``) are
seeds: ``results.md`` / ``results.json`` give every other combination's mean ± sample standard
deviation over them, then every cell; ``plots/`` holds each score against FLOPs per step, step time
and step memory (per device). ``sweep.log`` records when each cell started and finished.

Errors (exit 2): those of ``jaxspeech train`` for any cell, all checked before the first cell runs;
a --grid that is not KEY=V1,V2,... or repeats an axis; a grid file that does not exist, or an
argument it does not take; a --workdir that is a file or cannot be created.
"""

from __future__ import annotations

import argparse
import logging

from jaxspeech.cli.arguments import folder_to_write


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "sweep",
        help="run a grid of config overrides x seeds and tabulate the results",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--config",
        default=None,
        help="config file, optionally with an argument: path.py[:arg] (default: the grid file's CONFIG)",
    )
    parser.add_argument(
        "--grid",
        action="append",
        default=[],
        metavar="KEY=V1,V2,...",
        help="an axis of the grid: a config key and its values (repeatable)",
    )
    parser.add_argument(
        "--grid-file",
        default=None,
        metavar="GRID_PY[:ARG]",
        help="a Python file defining GRID (and optionally CONFIG and SETS), or get_grid(ARG) returning them; "
        "--grid axes are added to its own",
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config value in every cell, e.g. --set train.time_budget_s=600 (repeatable)",
    )
    parser.add_argument(
        "--workdir", type=folder_to_write, required=True, help="the sweep's folder: one run folder per cell, results.md"
    )
    parser.add_argument("--dry-run", action="store_true", help="list and check the cells; run nothing")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars (for logs)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from jaxspeech.sweep.grid import load_grid
    from jaxspeech.sweep.runner import check_cells, run_sweep

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("jaxspeech").setLevel(logging.INFO)  # the cell-by-cell progress, whatever set up the root logger
    grid = load_grid(args.config, args.grid, args.grid_file, args.set)
    if args.dry_run:
        check_cells(grid)
        for cell in grid.cells():
            print(cell.name)
        print(f"{len(grid.cells())} cells, every config checked")
        return 0
    outcome = run_sweep(grid, args.workdir, progress=not args.no_progress)
    if outcome["stopped"]:
        print(f"stopped in cell {outcome['stopped']} (preempted): run the same command to resume")
    for kind, path in outcome["results"].items():
        print(f"{kind}: {path}")
    return 0
