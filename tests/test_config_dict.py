"""``dataclass_from_dict`` checks every value against its field's annotation and names the key."""

import dataclasses
from typing import Annotated, Any, Literal

import numpy as np
import pytest

from jaxspeech.config_dict import POSITIVE, Range, dataclass_from_dict
from jaxspeech.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class Inner:
    size: Annotated[int, Range(1)] = 4
    rate: float = 0.5


@dataclasses.dataclass(frozen=True)
class Outer:
    flag: bool = False
    count: int = 0
    offset: Annotated[int, Range()] = 0
    scale: Annotated[float, POSITIVE] = 1.0
    name: str = "x"
    method: Literal["greedy", "beam"] = "greedy"
    pair: tuple[int, float] = (1, 2.0)
    names: tuple[str, ...] = ()
    limit: int | None = None
    either: str | tuple[str, ...] = "a"
    anything: Any = None
    inner: Inner = Inner()
    maybe_inner: Inner | None = None


def test_fitting_values_are_taken_and_normalised():
    built = dataclass_from_dict(
        Outer,
        {
            "flag": True,
            "count": np.int64(3),
            "offset": -2,
            "scale": 2,
            "method": "beam",
            "pair": [3, 4],
            "names": ["a", "b"],
            "limit": None,
            "either": ("b", "c"),
            "anything": object,
            "inner": {"size": 2, "rate": 1},
            "maybe_inner": {"rate": 0.25},
        },
    )
    assert built.count == 3 and type(built.count) is int and built.scale == 2.0 and type(built.scale) is float
    assert built.pair == (3, 4.0) and built.names == ("a", "b") and built.either == ("b", "c")
    assert built.inner == Inner(2, 1.0) and built.maybe_inner == Inner(4, 0.25) and built.offset == -2


@pytest.mark.parametrize(
    "values, key, expected",
    [
        ({"flag": "no"}, "Outer.flag", "True or False"),
        ({"flag": 1}, "Outer.flag", "True or False"),
        ({"count": True}, "Outer.count", "an integer >= 0"),
        ({"count": -1}, "Outer.count", "an integer >= 0"),
        ({"count": "3"}, "Outer.count", "an integer >= 0"),
        ({"scale": float("nan")}, "Outer.scale", "a finite number > 0"),
        ({"scale": 0}, "Outer.scale", "a finite number > 0"),
        ({"name": 3}, "Outer.name", "a string"),
        ({"method": "sample"}, "Outer.method", "one of 'greedy', 'beam'"),
        ({"pair": (1,)}, "Outer.pair", "a tuple (an integer >= 0, a finite number)"),
        ({"names": "ab"}, "Outer.names", "a tuple of (a string)"),
        ({"limit": -3}, "Outer.limit", "an integer >= 0 or None"),
        ({"either": 5}, "Outer.either", "a string or a tuple of (a string)"),
        ({"inner": {"size": 0}}, "Outer.inner.size", "an integer >= 1"),
        ({"maybe_inner": {"rate": float("inf")}}, "Outer.maybe_inner.rate", "a finite number"),
    ],
)
def test_values_that_do_not_fit_are_refused_naming_the_key(values, key, expected):
    with pytest.raises(ConfigError) as error:
        dataclass_from_dict(Outer, values)
    assert error.value.where == key and str(error.value).startswith(f"{key}: expected {expected}, got ")


def test_unknown_keys_are_named_with_the_valid_ones():
    with pytest.raises(
        ConfigError, match=r"unknown key\(s\) \['sise'\] in Outer.inner; valid keys are \['rate', 'size'\]"
    ) as error:
        dataclass_from_dict(Outer, {"inner": {"sise": 2}})
    assert error.value.where == "Outer.inner.sise"
