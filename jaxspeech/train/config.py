"""``TrainConfig``: every setting of the trainer, and its strict conversion from ml_collections.

Experiment configs are ``configs/*.py`` files whose ``get_config()`` returns a ``ConfigDict``;
its ``train`` entry (a nested dict with the fields below) becomes a ``TrainConfig`` through
``train_config_from_dict``, which rejects any key it does not know, naming it and listing the
valid ones, so a typo can never silently fall back to a default.
"""

from __future__ import annotations

import dataclasses
from typing import Annotated, Any, Mapping

from jaxspeech.config_dict import NON_NEGATIVE, Range, dataclass_from_dict
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
    ``total_steps``. With ``fit_decay_to_budget`` (needs ``time_budget_s``) the trainer moves the
    end of the cosine decay, at every log step after warmup, to the step the budget is expected to
    end at (the steps so far over the seconds so far), so that the learning rate reaches its floor
    when the time runs out on a slow machine as on a fast one; ``optimizer.decay_steps`` is then
    only the first guess. The horizon lives in the optimizer state (so it is checkpointed). The
    budget counts training seconds over every start of a run (each checkpoint records them): a
    resumed run trains for what is left of it, and fits the decay to that at its own speed.
    ``mesh`` maps mesh axes (data, fsdp, tensor) to sizes, -1 = the rest.
    Eval runs every ``eval_every`` steps (0 = only at the end) when an eval function is given.
    ``compilation_cache_dir`` turns on JAX's persistent compilation cache, so that a restarted
    (preempted) run skips recompiling.
    """

    seed: int = 0
    total_steps: Annotated[int, Range(1)] = 1000
    time_budget_s: Annotated[float, NON_NEGATIVE] | None = None
    fit_decay_to_budget: bool = False
    grad_accum_steps: Annotated[int, Range(1)] = 1
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
        if self.fit_decay_to_budget and self.time_budget_s is None:
            raise ValueError("fit_decay_to_budget needs time_budget_s (the budget the decay is fitted to)")
        if self.eval_every < 0:
            raise ValueError(f"eval_every must be >= 0, got {self.eval_every}")
        if self.optimizer.decay_steps is None:
            object.__setattr__(self, "optimizer", dataclasses.replace(self.optimizer, decay_steps=self.total_steps))
        object.__setattr__(self, "mesh", dict(self.mesh))
        object.__setattr__(self, "sharding_rules", tuple(tuple(rule) for rule in self.sharding_rules))


def train_config_from_dict(values: Mapping[str, Any] | Any) -> TrainConfig:
    """``TrainConfig`` from a ``ConfigDict`` or nested dict, an experiment config's ``train`` section
    (unknown keys and values that do not fit raise ``ConfigError`` naming ``train.<key>``)."""
    return dataclass_from_dict(TrainConfig, values, "train")


def train_config_to_dict(config: TrainConfig) -> dict[str, Any]:
    """A JSON-friendly nested dict of ``config`` (the inverse of ``train_config_from_dict``)."""
    return dataclasses.asdict(config)
