"""Strict conversion of ``ml_collections`` configs (or nested dicts) into frozen dataclasses.

Every key must name a field: a typo raises an error naming the key and listing the valid ones,
so it can never silently fall back to a default.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any, Mapping


def _dataclass_type(annotation: Any, value: Any, default: Any, where: str) -> type | None:
    """The dataclass an annotation such as ``OptimizerConfig | None`` asks for (None if none). A union of
    several dataclasses with a ``kind`` field (a tagged union) picks the one whose kind ``value["kind"]``
    names, or the default's class when ``value`` names no kind."""
    if dataclasses.is_dataclass(annotation):
        return annotation
    if not (isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union):
        return None
    options = [option for option in typing.get_args(annotation) if dataclasses.is_dataclass(option)]
    if len(options) <= 1 or value is None:
        return options[0] if options else None
    kinds = {option.__dataclass_fields__["kind"].default: option for option in options}
    kind = value.get("kind") if isinstance(value, Mapping) else None
    if kind is None:
        if not dataclasses.is_dataclass(default):
            raise ValueError(f"{where} needs a kind, one of {sorted(kinds)}")
        return type(default)
    if kind not in kinds:
        raise ValueError(f"{where}.kind must be one of {sorted(kinds)}, got {kind!r}")
    return kinds[kind]


def plain(value: Any) -> Any:
    """ConfigDict / list values -> dicts and tuples (frozen configs hold tuples)."""
    if hasattr(value, "to_dict"):
        value = value.to_dict()
    if isinstance(value, Mapping):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return tuple(plain(v) for v in value)
    return value


def dataclass_from_dict(cls: type, values: Mapping[str, Any] | Any, where: str | None = None) -> Any:
    """Builds the frozen dataclass ``cls`` from a (nested) mapping, rejecting unknown keys."""
    where = where or cls.__name__
    values = plain(values)
    if not isinstance(values, Mapping):
        raise TypeError(f"{where} must be a mapping of its fields, got {type(values).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - fields)
    if unknown:
        raise ValueError(f"unknown key(s) {unknown} in {where}; valid keys are {sorted(fields)}")
    defaults = {f.name: f.default for f in dataclasses.fields(cls)}
    kwargs = {}
    for name, value in values.items():
        nested = _dataclass_type(hints[name], value, defaults[name], f"{where}.{name}")
        if nested is not None and value is not None and not dataclasses.is_dataclass(value):
            value = dataclass_from_dict(nested, value, f"{where}.{name}")
        kwargs[name] = value
    return cls(**kwargs)


def check_keys(values: Mapping[str, Any], allowed: set[str], where: str) -> None:
    """Raises naming the unknown keys of a config section that is not a dataclass."""
    unknown = sorted(set(values) - allowed)
    if unknown:
        raise ValueError(f"unknown key(s) {unknown} in {where}; valid keys are {sorted(allowed)}")


def load_config_file(spec: str):
    """Calls ``get_config(arg)`` of a config file given as ``path.py`` or ``path.py:arg``.

    The file's folder is importable while it loads, so a config can build on a sibling
    (``import tiny_asr``)."""
    import importlib.util
    import os
    import sys

    path, _, arg = spec.partition(":")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"config file {path} not found")
    folder = os.path.dirname(os.path.abspath(path))
    module_spec = importlib.util.spec_from_file_location(f"jaxspeech_config_{abs(hash(path))}", path)
    module = importlib.util.module_from_spec(module_spec)
    sys.path.insert(0, folder)
    try:
        module_spec.loader.exec_module(module)
    finally:
        sys.path.remove(folder)
    if not hasattr(module, "get_config"):
        raise AttributeError(f"config file {path} defines no get_config(arg)")
    return module.get_config(arg or None)


def override(config, dotted_key: str, value: Any) -> None:
    """Sets ``config.a.b.c = value`` for ``dotted_key`` "a.b.c". The sections on the way must exist;
    the leaf may be new (a dataclass field the config file leaves at its default): the run's build
    step then checks it against the dataclass and names it if it is not a field. In a list of named
    sections (``config.stages``) a key picks the one of that ``name``: "stages.ctc.train.time_budget_s"."""
    *parents, leaf = dotted_key.split(".")
    node = config
    for i, key in enumerate(parents):
        if isinstance(node, (list, tuple)):
            named = [item for item in node if isinstance(item, Mapping) and item.get("name") == key]
            if not named:
                names = [item.get("name") for item in node if isinstance(item, Mapping)]
                raise KeyError(f"no entry named {key!r} in {'.'.join(parents[:i])!r}; its names are {names}")
            node = named[0]
            continue
        if key not in node:
            raise KeyError(f"unknown config key {'.'.join(parents[: i + 1])!r}")
        node = node[key]
    if not hasattr(node, "keys"):
        raise KeyError(f"config key {'.'.join(parents)!r} is a value, not a section: cannot set {dotted_key!r}")
    node[leaf] = value
