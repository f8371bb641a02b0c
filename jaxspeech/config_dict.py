"""Strict conversion of ``ml_collections`` configs (or nested dicts) into frozen dataclasses.

Every key must name a field: a typo raises an error naming the key and listing the valid ones,
so it can never silently fall back to a default. Every value must fit its field's annotation,
checked before the dataclass is built: ``bool`` takes only True/False (not "no"), ``int`` only
integers, ``float`` finite numbers, ``str`` strings, ``Literal[...]`` one of its values,
``tuple[...]`` tuples (lists) of fitting items, ``X | None`` None too. Config integers are counts,
sizes, steps, seeds and ids, so they must be >= 0; a field annotated ``Annotated[int, Range(...)]``
(or ``Annotated[float, POSITIVE]``...) declares its own bounds. Other annotations (mappings,
``Any``, dtypes) are left to the dataclass. A mistake is a ``ConfigError`` naming the dotted key.
"""

from __future__ import annotations

import ast
import dataclasses
import math
import numbers
import types
import typing
from typing import Any, Mapping

from jaxspeech.errors import ConfigError, MissingFileError, UsageError


@dataclasses.dataclass(frozen=True)
class Range:
    """Bounds of a numeric config field, declared as ``Annotated[int, Range(low=1)]``."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False  # low itself is excluded

    def admits(self, value: float) -> bool:
        above = self.low is None or (value > self.low if self.low_open else value >= self.low)
        return above and (self.high is None or value <= self.high)

    def describe(self) -> str:
        parts = [] if self.low is None else [f"{'>' if self.low_open else '>='} {self.low:g}"]
        return " and ".join(parts + ([] if self.high is None else [f"<= {self.high:g}"]))


POSITIVE = Range(0, low_open=True)
NON_NEGATIVE = Range(0)
ANY_INT = Range()  # for the rare integer field that may be negative


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
            raise ConfigError(where, f"needs a kind, one of {sorted(kinds)}")
        return type(default)
    if kind not in kinds:
        raise ConfigError(f"{where}.kind", f"expected one of {sorted(kinds)}, got {kind!r}")
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
    """Builds the frozen dataclass ``cls`` from a (nested) mapping, rejecting unknown keys and values
    that do not fit their fields (see the module docstring); a ``ValueError`` or ``TypeError`` of the
    dataclass's own checks becomes a ``ConfigError`` naming ``where``."""
    where = where or cls.__name__
    values = plain(values)
    if not isinstance(values, Mapping):
        raise ConfigError(where, f"expected a mapping of its fields, got {values!r}")
    hints = typing.get_type_hints(cls, include_extras=True)
    fields = {f.name for f in dataclasses.fields(cls)}
    check_keys(values, fields, where)
    defaults = {f.name: f.default for f in dataclasses.fields(cls)}
    kwargs = {}
    for name, value in values.items():
        nested = _dataclass_type(_unwrap(hints[name])[0], value, defaults[name], f"{where}.{name}")
        if nested is not None and value is not None and not dataclasses.is_dataclass(value):
            value = dataclass_from_dict(nested, value, f"{where}.{name}")
        elif nested is None:
            value = checked_value(hints[name], value, f"{where}.{name}")
        kwargs[name] = value
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except (ValueError, TypeError) as e:
        raise ConfigError(where, str(e)) from e


def check_keys(values: Mapping[str, Any], allowed: set[str], where: str) -> None:
    """Raises ``ConfigError`` naming the unknown keys of a config section."""
    unknown = sorted(set(values) - allowed)
    if unknown:
        raise ConfigError(
            f"{where}.{unknown[0]}", f"unknown key(s) {unknown} in {where}; valid keys are {sorted(allowed)}"
        )


# ----------------------------------------------------------------------------- value checks
def checked_value(annotation: Any, value: Any, where: str) -> Any:
    """``value`` if it fits ``annotation`` (an int given for a float becomes a float, a list for a
    tuple a tuple), else ``ConfigError(where, ...)`` saying what was expected."""
    ok, result = _fit(annotation, value)
    if not ok:
        raise ConfigError(where, f"expected {_describe(annotation)}, got {value!r}")
    return result


def _unwrap(annotation: Any) -> tuple[Any, Range | None]:
    """(the type inside ``Annotated[type, ...]``, its ``Range`` or None); other annotations as they are."""
    if typing.get_origin(annotation) is not typing.Annotated:
        return annotation, None
    annotation, *extras = typing.get_args(annotation)
    return annotation, next((e for e in extras if isinstance(e, Range)), None)


def _fit(annotation: Any, value: Any) -> tuple[bool, Any]:
    """(whether ``value`` fits, the value as the field holds it)."""
    annotation, bounds = _unwrap(annotation)
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if isinstance(annotation, types.UnionType) or origin is typing.Union:
        if value is None and type(None) in args:
            return True, None
        for option in args:
            if option is not type(None):
                ok, result = _fit(option, value)
                if ok:
                    return True, result
        return False, value
    if origin is typing.Literal:
        return any(type(value) is type(choice) and value == choice for choice in args), value
    if annotation is bool:
        return isinstance(value, bool), value
    if annotation is int:
        ok = isinstance(value, numbers.Integral) and not isinstance(value, bool)
        return ok and (bounds or NON_NEGATIVE).admits(value), int(value) if ok else value
    if annotation is float:
        ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)
        return ok and (bounds is None or bounds.admits(value)), float(value) if ok else value
    if annotation is str:
        return isinstance(value, str), value
    if origin is tuple:
        if not isinstance(value, (tuple, list)):
            return False, value
        items = args[:1] * len(value) if len(args) == 2 and args[1] is Ellipsis else args
        if len(items) != len(value):
            return False, value
        fitted = [_fit(item, v) for item, v in zip(items, value)]
        return all(ok for ok, _ in fitted), tuple(v for _, v in fitted)
    return True, value  # mappings, Any, dtypes, callables: the dataclass checks them itself


def _describe(annotation: Any) -> str:
    """What a value of ``annotation`` looks like, in words."""
    annotation, bounds = _unwrap(annotation)
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if isinstance(annotation, types.UnionType) or origin is typing.Union:
        return " or ".join("None" if a is type(None) else _describe(a) for a in args)
    if origin is typing.Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if annotation is bool:
        return "True or False"
    if annotation is int:
        return f"an integer {(bounds or NON_NEGATIVE).describe()}".rstrip()
    if annotation is float:
        return f"a finite number {bounds.describe() if bounds else ''}".rstrip()
    if annotation is str:
        return "a string"
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return f"a tuple of ({_describe(args[0])})"
        return f"a tuple ({', '.join(_describe(a) for a in args)})"
    return getattr(annotation, "__name__", str(annotation))


def load_python_file(path: str, what: str = "file"):
    """The module of the Python file at ``path`` (``what`` names it in errors); the file's folder is
    importable while it loads, so a file can build on a sibling (``import tiny_asr``)."""
    import importlib.util
    import os
    import sys

    if not os.path.isfile(path):
        raise MissingFileError(path, f"{what} not found")
    folder = os.path.dirname(os.path.abspath(path))
    module_spec = importlib.util.spec_from_file_location(f"jaxspeech_file_{abs(hash(path))}", path)
    module = importlib.util.module_from_spec(module_spec)
    sys.path.insert(0, folder)
    try:
        module_spec.loader.exec_module(module)
    finally:
        sys.path.remove(folder)
    return module


def load_config_file(spec: str):
    """Calls ``get_config(arg)`` of a config file given as ``path.py`` or ``path.py:arg`` (see
    ``load_python_file``)."""
    path, _, arg = spec.partition(":")
    module = load_python_file(path, "config file")
    if not hasattr(module, "get_config"):
        raise ConfigError(path, "config file defines no get_config(arg)")
    try:
        return module.get_config(arg or None)
    except (ValueError, TypeError) as e:  # the file's own check of its argument
        raise ConfigError(spec, str(e)) from e


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
                raise ConfigError(".".join(parents[: i + 1]), f"no entry of that name; its names are {names}")
            node = named[0]
            continue
        if key not in node:
            section = ".".join(parents[:i])
            raise ConfigError(
                ".".join(parents[: i + 1]), f"unknown config key; {section or 'the config'} has {sorted(node.keys())}"
            )
        node = node[key]
    if not hasattr(node, "keys"):
        raise ConfigError(dotted_key, f"{'.'.join(parents)!r} is a value, not a section")
    try:
        node[leaf] = value
    except TypeError:  # a ConfigDict keeps the type of the value the config file set
        raise ConfigError(dotted_key, f"expected a value of the type of {node[leaf]!r}, got {value!r}") from None


def parse_value(text: str) -> Any:
    """A Python literal (numbers, tuples, None, True...) or, failing that, the string itself."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def override_from_text(config, item: str) -> None:
    """Applies one ``key=value`` override (``--set``); the value is read by ``parse_value``."""
    key, sep, value = item.partition("=")
    if not sep:
        raise UsageError("--set", f"expected KEY=VALUE, got {item!r}")
    override(config, key.strip(), parse_value(value.strip()))
