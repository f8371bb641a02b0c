"""A sweep's grid: axes of config overrides, their cartesian product (the cells), every cell's config
built and checked before anything runs.

An axis is a dotted config key with its values (``--grid model.connector.kind=linear,qformer``), or,
in a grid file, a named joint axis whose choices each set several keys::

    GRID = {
        "model.connector.kind": ["linear", "frame_stack"],
        "fusion": {
            "decoder_only": {"model.fusion": "decoder_only"},
            "hybrid_tags": {"model.fusion": "hybrid", "task.prompt.chunk_tags": True},
        },
        "train.seed": [0, 1],
    }

A grid file may also name ``CONFIG`` (``path.py[:arg]``) and ``SETS`` (``key=value`` overrides of
every cell). A grid file given as ``path.py:arg`` defines ``get_grid(arg)`` instead, returning a dict
of the same names (``{"GRID": ..., "CONFIG": ..., "SETS": ...}``), so that one file holds a study and
its smaller forms (``grid.py:debug``). Axes named ``seed`` or ``<section>.seed`` are seed axes: the
results give the mean and spread over them.
"""

from __future__ import annotations

import dataclasses
import itertools
import re
from typing import Any, Mapping, Sequence

from jaxspeech.config_dict import load_config_file, load_python_file, override, override_from_text, parse_value
from jaxspeech.errors import UsageError


@dataclasses.dataclass(frozen=True)
class Axis:
    """``choices``: (label, {dotted key: value}) in order."""

    name: str
    choices: tuple[tuple[str, Mapping[str, Any]], ...]

    @property
    def is_seed(self) -> bool:
        return self.name.rsplit(".", 1)[-1] == "seed"


@dataclasses.dataclass(frozen=True)
class Cell:
    """One point of the grid: ``labels`` (axis name -> choice label) and the ``overrides`` they set."""

    name: str
    labels: Mapping[str, str]
    overrides: Mapping[str, Any]


def split_values(text: str) -> list[str]:
    """``a,(1, 2),'x,y'`` -> ["a", "(1, 2)", "'x,y'"]: commas split only outside brackets and quotes."""
    values, depth, quote, start = [], 0, None, 0
    for i, char in enumerate(text):
        if quote:
            quote = None if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char in "([{":
            depth += 1
        elif char in ")]}":
            depth -= 1
        elif char == "," and depth == 0:
            values.append(text[start:i].strip())
            start = i + 1
    values.append(text[start:].strip())
    return values


def axis_from_text(item: str) -> Axis:
    """``--grid key=v1,v2,...`` -> the axis of ``key`` (values read by ``parse_value``)."""
    key, sep, values = item.partition("=")
    key = key.strip()
    if not sep or not key or not values.strip():
        raise UsageError("--grid", f"expected KEY=VALUE1,VALUE2,..., got {item!r}")
    texts = split_values(values)
    if any(not t for t in texts):
        raise UsageError("--grid", f"{item!r} has an empty value")
    return Axis(key, tuple((text, {key: parse_value(text)}) for text in texts))


def axis_from_entry(name: str, choices: Any, where: str) -> Axis:
    """A grid file's entry: a key with a list of values, or a joint axis {label: {key: value}}."""
    if isinstance(choices, Mapping):
        for label, values in choices.items():
            if not isinstance(values, Mapping) or not values:
                raise UsageError(where, f"choice {label!r} of axis {name!r} must be a non-empty dict of key: value")
        return Axis(name, tuple((str(label), dict(values)) for label, values in choices.items()))
    if isinstance(choices, (list, tuple)) and choices:
        return Axis(name, tuple((str(value), {name: value}) for value in choices))
    raise UsageError(where, f"axis {name!r} needs a non-empty list of values or a dict of labelled choices")


@dataclasses.dataclass(frozen=True)
class Grid:
    """``config``: ``path.py[:arg]``; ``sets``: ``key=value`` overrides of every cell; ``axes``."""

    config: str
    sets: tuple[str, ...]
    axes: tuple[Axis, ...]

    def __post_init__(self):
        names = [axis.name for axis in self.axes]
        repeated = sorted({name for name in names if names.count(name) > 1})
        if repeated:
            raise UsageError("--grid", f"axes {repeated} are given more than once")
        for axis in self.axes:
            labels = [label for label, _ in axis.choices]
            if len(set(labels)) != len(labels):
                raise UsageError("--grid", f"axis {axis.name!r} repeats a value: {labels}")
        folders = [cell.name for cell in self.cells()]
        clashes = sorted({name for name in folders if folders.count(name) > 1})
        if clashes:
            raise UsageError(
                "--grid",
                f"values that differ only in characters a folder name cannot hold give the "
                f"same cell folder(s) {clashes}: rename them",
            )

    def cells(self) -> list[Cell]:
        """The cartesian product of the axes, the last axis varying fastest."""
        cells = []
        for combo in itertools.product(*(axis.choices for axis in self.axes)):
            labels = {axis.name: label for axis, (label, _) in zip(self.axes, combo)}
            overrides = {key: value for _, values in combo for key, value in values.items()}
            cells.append(Cell(cell_name(labels), labels, overrides))
        return cells

    def cell_config(self, cell: Cell):
        """The experiment config of ``cell``: the config file, then ``sets``, then the cell's overrides."""
        config = load_config_file(self.config)
        for item in self.sets:
            override_from_text(config, item)
        for key, value in cell.overrides.items():
            override(config, key, value)
        return config

    def describe(self) -> dict[str, Any]:
        """What identifies the sweep's runs (saved in its workdir as ``sweep.json``)."""
        return {
            "config": self.config,
            "sets": list(self.sets),
            "axes": {axis.name: [label for label, _ in axis.choices] for axis in self.axes},
        }


def cell_name(labels: Mapping[str, str]) -> str:
    """A folder name: ``key=label`` pairs joined by ``__`` (characters other than letters, digits and
    ``._=+-`` become ``-``)."""
    return "__".join(re.sub(r"[^A-Za-z0-9._=+-]", "-", f"{name}={label}") for name, label in labels.items()) or "base"


def grid_file_names(spec: str) -> Mapping[str, Any]:
    """``GRID``, ``CONFIG`` and ``SETS`` of a grid file given as ``path.py`` (its module's names, or
    ``get_grid(None)`` where it defines one) or ``path.py:arg`` (``get_grid(arg)``)."""
    path, _, arg = spec.partition(":")
    module = load_python_file(path, "grid file")
    get_grid = getattr(module, "get_grid", None)
    if get_grid is None:
        if arg:
            raise UsageError(spec, f"takes no argument (it defines no get_grid(arg)), got {arg!r}")
        return vars(module)
    try:
        names = get_grid(arg or None)
    except (ValueError, TypeError) as e:  # the file's own check of its argument
        raise UsageError(spec, str(e)) from e
    if not isinstance(names, Mapping):
        raise UsageError(spec, f"get_grid({arg or None!r}) must return a dict with GRID (and CONFIG, SETS)")
    return names


def load_grid(config: str | None, grid_items: Sequence[str], grid_file: str | None, sets: Sequence[str]) -> Grid:
    """The grid of the command line: ``--grid`` items after the grid file's ``GRID`` (if any); its
    ``CONFIG`` unless ``config`` is given; its ``SETS`` before ``sets``."""
    axes: list[Axis] = []
    file_sets: list[str] = []
    if grid_file:
        names = grid_file_names(grid_file)
        entries = names.get("GRID")
        if not isinstance(entries, Mapping):
            raise UsageError(grid_file, "a grid file must define GRID, a dict of axis -> values")
        axes += [axis_from_entry(name, choices, grid_file) for name, choices in entries.items()]
        config = config or names.get("CONFIG")
        file_sets = list(names.get("SETS", ()))
    axes += [axis_from_text(item) for item in grid_items]
    if not config:
        raise UsageError("--config", "a sweep needs a config (or CONFIG in its grid file)")
    if not axes:
        raise UsageError("--grid", "a sweep needs at least one axis KEY=V1,V2,... (or a GRID in --grid-file)")
    return Grid(config, tuple(file_sets) + tuple(sets), tuple(axes))
