"""``TrainConfig``: every setting of the trainer, and its strict conversion from ml_collections.

Experiment configs are ``configs/*.py`` files whose ``get_config()`` returns a ``ConfigDict``;
its ``train`` entry (a nested dict with the fields below) becomes a ``TrainConfig`` through
``train_config_from_dict``, which rejects any key it does not know, naming it and listing the
valid ones, so a typo can never silently fall back to a default.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any, Mapping

from jaxspeech.layers import axes
from jaxspeech.sharding.multihost import DistributedConfig
from jaxspeech.train.checkpoint import CheckpointConfig
from jaxspeech.train.metrics import MetricsConfig
from jaxspeech.train.optim import OptimizerConfig


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """The trainer's settings.

    Training stops at ``total_steps`` or, if set, after ``time_budget_s`` seconds of training
    (compilation excluded), whichever comes first. ``optimizer.decay_steps`` None means
    ``total_steps``. ``mesh`` maps mesh axes (data, fsdp, tensor) to sizes, -1 = the rest.
    Eval runs every ``eval_every`` steps (0 = only at the end) when an eval function is given.
    ``compilation_cache_dir`` turns on JAX's persistent compilation cache, so that a restarted
    (preempted) run skips recompiling.
    """

    seed: int = 0
    total_steps: int = 1000
    time_budget_s: float | None = None
    grad_accum_steps: int = 1
    max_consecutive_skipped_steps: int = 10
    eval_every: int = 0
    mesh: Mapping[str, int] = dataclasses.field(default_factory=lambda: {axes.DATA: -1})
    sharding_rules: tuple[tuple[str, Any], ...] = axes.DEFAULT_RULES
    progress_bar: bool = True
    compilation_cache_dir: str | None = None
    optimizer: OptimizerConfig = OptimizerConfig()
    checkpoint: CheckpointConfig = CheckpointConfig()
    metrics: MetricsConfig = MetricsConfig()
    distributed: DistributedConfig = DistributedConfig()

    def __post_init__(self):
        if self.total_steps < 1:
            raise ValueError(f"total_steps must be >= 1, got {self.total_steps}")
        if self.grad_accum_steps < 1:
            raise ValueError(f"grad_accum_steps must be >= 1, got {self.grad_accum_steps}")
        if self.max_consecutive_skipped_steps < 0:
            raise ValueError(f"max_consecutive_skipped_steps must be >= 0, got {self.max_consecutive_skipped_steps}")
        if self.eval_every < 0:
            raise ValueError(f"eval_every must be >= 0, got {self.eval_every}")
        if self.optimizer.decay_steps is None:
            object.__setattr__(self, "optimizer", dataclasses.replace(self.optimizer, decay_steps=self.total_steps))
        object.__setattr__(self, "mesh", dict(self.mesh))
        object.__setattr__(self, "sharding_rules", tuple(tuple(rule) for rule in self.sharding_rules))


def _dataclass_type(annotation: Any) -> type | None:
    """The dataclass inside an annotation such as ``OptimizerConfig`` (None if there is none)."""
    if dataclasses.is_dataclass(annotation):
        return annotation
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        for option in typing.get_args(annotation):
            if dataclasses.is_dataclass(option):
                return option
    return None


def _plain(value: Any) -> Any:
    """ConfigDict / list values -> dicts and tuples (frozen configs hold tuples)."""
    if hasattr(value, "to_dict"):
        value = value.to_dict()
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return tuple(_plain(v) for v in value)
    return value


def dataclass_from_dict(cls: type, values: Mapping[str, Any] | Any, where: str | None = None) -> Any:
    """Builds the frozen dataclass ``cls`` from a (nested) mapping, rejecting unknown keys."""
    where = where or cls.__name__
    values = _plain(values)
    if not isinstance(values, Mapping):
        raise TypeError(f"{where} must be a mapping of its fields, got {type(values).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - fields)
    if unknown:
        raise ValueError(f"unknown key(s) {unknown} in {where}; valid keys are {sorted(fields)}")
    kwargs = {}
    for name, value in values.items():
        nested = _dataclass_type(hints[name])
        if nested is not None and value is not None and not isinstance(value, nested):
            value = dataclass_from_dict(nested, value, f"{where}.{name}")
        kwargs[name] = value
    return cls(**kwargs)


def train_config_from_dict(values: Mapping[str, Any] | Any) -> TrainConfig:
    """``TrainConfig`` from a ``ConfigDict`` or nested dict (unknown keys raise ``ValueError``)."""
    return dataclass_from_dict(TrainConfig, values)


def train_config_to_dict(config: TrainConfig) -> dict[str, Any]:
    """A JSON-friendly nested dict of ``config`` (the inverse of ``train_config_from_dict``)."""
    return dataclasses.asdict(config)
