"""AdamW with warmup + cosine decay, global-norm clipping, per-group learning rates and freezing.

Parameter groups are regex rules over '/'-joined parameter paths (``"encoder/layers/0/kernel"``),
big_vision style: ``(("encoder/.*", None), ("connector/.*", 1e-3), (".*", 1e-4))``. The first rule
that fully matches a path wins; its value is that parameter's peak learning rate, or ``None`` to
freeze it. Paths matched by no rule use ``OptimizerConfig.learning_rate``.

Frozen parameters never reach the optimizer: ``split_trainable`` separates them, the train step
differentiates only the trainable part, and the optimizer state covers only trainable leaves (no
moments are allocated for frozen ones; their values pass through the step untouched).
"""

from __future__ import annotations

import dataclasses
import math
import re
from typing import Any, Mapping, NamedTuple

import jax
import jax.numpy as jnp
import optax
from flax import traverse_util

Params = Mapping[str, Any]

# Norm scales and biases are not decayed (the usual AdamW practice). Matched against the full path.
DEFAULT_NO_DECAY = (r"(.*/)?bias", r"(.*/)?scale")


@dataclasses.dataclass(frozen=True)
class OptimizerConfig:
    """AdamW + schedule + clipping + parameter groups.

    The learning rate of a parameter at optimizer step ``s`` is ``peak * lr_factor(s)``: a linear
    warmup over ``warmup_steps`` (the first update already uses ``1 / warmup_steps`` of the peak),
    then a half cosine down to ``end_lr_fraction * peak`` at ``decay_steps`` (None: no decay;
    ``TrainConfig`` sets it to ``total_steps``). ``decay_steps`` is the initial value of the
    optimizer state's decay horizon, which the trainer may move (``with_decay_horizon``).
    """

    learning_rate: float = 1e-3
    warmup_steps: int = 0
    decay_steps: int | None = None
    end_lr_fraction: float = 0.0
    b1: float = 0.9
    b2: float = 0.999
    eps: float = 1e-8
    weight_decay: float = 0.0
    grad_clip_norm: float | None = 1.0
    lr_rules: tuple[tuple[str, float | None], ...] = ()
    no_decay_rules: tuple[str, ...] = DEFAULT_NO_DECAY

    def __post_init__(self):
        if self.warmup_steps < 0:
            raise ValueError(f"warmup_steps must be >= 0, got {self.warmup_steps}")
        if self.decay_steps is not None and self.decay_steps <= self.warmup_steps:
            raise ValueError(f"decay_steps ({self.decay_steps}) must exceed warmup_steps ({self.warmup_steps})")
        if self.grad_clip_norm is not None and self.grad_clip_norm <= 0:
            raise ValueError(f"grad_clip_norm must be positive or None, got {self.grad_clip_norm}")
        for rule in self.lr_rules:
            if len(rule) != 2 or not isinstance(rule[0], str):
                raise ValueError(f"each lr rule must be (regex, learning_rate | None), got {rule!r}")


def path_string(keypath: tuple) -> str:
    """'/'-joined names of a JAX key path (dict keys, attribute names or sequence indices)."""
    parts = []
    for key in keypath:
        for attr in ("key", "name", "idx"):
            if hasattr(key, attr):
                parts.append(str(getattr(key, attr)))
                break
        else:
            parts.append(str(key))
    return "/".join(parts)


def _flat(params: Params) -> dict[tuple[str, ...], Any]:
    if not isinstance(params, Mapping):
        raise TypeError(f"parameters must be a nested dict, got {type(params).__name__}")
    return traverse_util.flatten_dict(params)


def peak_learning_rates(params: Params, config: OptimizerConfig) -> dict[str, float | None]:
    """'/'-path -> peak learning rate (None = frozen) for every parameter, by first matching rule.

    Raises if a rule matches no parameter (almost always a typo in the regex).
    """
    paths = ["/".join(k) for k in _flat(params)]
    compiled = [(re.compile(pattern), lr) for pattern, lr in config.lr_rules]
    used = [False] * len(compiled)
    result = {}
    for path in paths:
        result[path] = config.learning_rate
        for i, (regex, lr) in enumerate(compiled):
            if regex.fullmatch(path):
                result[path], used[i] = lr, True
                break
    unused = [config.lr_rules[i][0] for i, u in enumerate(used) if not u]
    if unused:
        raise ValueError(f"lr_rules {unused} match no parameter; parameter paths look like {paths[:5]}")
    if all(lr is None for lr in result.values()):
        raise ValueError("lr_rules freeze every parameter: nothing to train")
    return result


def trainable_mask(params: Params, config: OptimizerConfig) -> Params:
    """Nested dict of bools (True = trained) with the structure of ``params``."""
    peaks = peak_learning_rates(params, config)
    return traverse_util.unflatten_dict({k: peaks["/".join(k)] is not None for k in _flat(params)})


def split_trainable(params: Params, mask: Params) -> tuple[Params, Params]:
    """(trainable, frozen): two nested dicts holding the leaves where ``mask`` is True / False."""
    flat, flat_mask = _flat(params), _flat(mask)
    trainable = {k: v for k, v in flat.items() if flat_mask[k]}
    frozen = {k: v for k, v in flat.items() if not flat_mask[k]}
    return traverse_util.unflatten_dict(trainable), traverse_util.unflatten_dict(frozen)


def merge_trainable(trainable: Params, frozen: Params) -> Params:
    """Inverse of ``split_trainable``."""
    return traverse_util.unflatten_dict({**_flat(frozen), **_flat(trainable)})


def lr_factor(count: jax.Array, config: OptimizerConfig, decay_steps: jax.Array | int | None = None) -> jax.Array:
    """f32[] multiplier of the peak learning rate at optimizer step ``count`` (0-based).

    ``decay_steps`` (i32[] or int) replaces ``config.decay_steps`` as the end of the cosine; it is
    ignored when the config has no decay."""
    count = jnp.asarray(count, jnp.float32)
    warmup = jnp.minimum(1.0, (count + 1.0) / config.warmup_steps) if config.warmup_steps else 1.0
    if config.decay_steps is None:
        return warmup * jnp.ones([], jnp.float32)
    horizon = jnp.asarray(config.decay_steps if decay_steps is None else decay_steps, jnp.float32)
    progress = jnp.clip((count - config.warmup_steps) / (horizon - config.warmup_steps), 0.0, 1.0)
    end = config.end_lr_fraction
    return warmup * (end + (1.0 - end) * 0.5 * (1.0 + jnp.cos(math.pi * progress)))


class ScaleByGroupLearningRateState(NamedTuple):
    count: jax.Array  # i32[]: optimizer updates applied so far
    decay_steps: jax.Array  # i32[]: where the cosine ends (config.decay_steps, or the trainer's estimate)


def scale_by_group_learning_rate(peaks: Mapping[str, float], config: OptimizerConfig) -> optax.GradientTransformation:
    """Multiplies each update by ``-peaks[path] * lr_factor(count, decay_steps)`` (descent direction)."""

    def init_fn(params):
        del params
        return ScaleByGroupLearningRateState(
            count=jnp.zeros([], jnp.int32), decay_steps=jnp.asarray(config.decay_steps or 0, jnp.int32)
        )

    def update_fn(updates, state, params=None):
        del params
        factor = lr_factor(state.count, config, state.decay_steps)

        def scale(keypath, update):
            return (-peaks[path_string(keypath)] * factor * update).astype(update.dtype)

        updates = jax.tree_util.tree_map_with_path(scale, updates)
        return updates, state._replace(count=optax.safe_increment(state.count))

    return optax.GradientTransformation(init_fn, update_fn)


def _is_schedule_state(x: Any) -> bool:
    return isinstance(x, ScaleByGroupLearningRateState)


def decay_horizon(opt_state: Any) -> jax.Array:
    """i32[]: the decay horizon held in the optimizer state of ``build_optimizer``."""
    found = [x.decay_steps for x in jax.tree.leaves(opt_state, is_leaf=_is_schedule_state) if _is_schedule_state(x)]
    if len(found) != 1:
        raise ValueError(f"expected one learning-rate schedule state in the optimizer state, found {len(found)}")
    return found[0]


def with_decay_horizon(opt_state: Any, decay_steps: int) -> Any:
    """``opt_state`` with the cosine ending at ``decay_steps`` (the new value keeps the old one's
    placement, so a jitted step takes it without recompiling)."""

    def put(x):
        if not _is_schedule_state(x):
            return x
        return x._replace(decay_steps=jax.device_put(jnp.asarray(decay_steps, jnp.int32), x.decay_steps.sharding))

    return jax.tree.map(put, opt_state, is_leaf=_is_schedule_state)


def decay_mask(params: Params, config: OptimizerConfig) -> Params:
    """Nested bools: True where weight decay applies (no path matches ``no_decay_rules``)."""
    rules = [re.compile(p) for p in config.no_decay_rules]
    return jax.tree_util.tree_map_with_path(lambda kp, _: not any(r.fullmatch(path_string(kp)) for r in rules), params)


def build_optimizer(params: Params, config: OptimizerConfig) -> optax.GradientTransformation:
    """The optimizer for the *trainable* subset of ``params`` (the leaves with a learning rate).

    ``params`` may be the full tree (frozen leaves are ignored) or abstract shapes.
    """
    peaks = {path: lr for path, lr in peak_learning_rates(params, config).items() if lr is not None}
    parts = []
    if config.grad_clip_norm is not None:
        parts.append(optax.clip_by_global_norm(config.grad_clip_norm))
    parts.append(optax.scale_by_adam(b1=config.b1, b2=config.b2, eps=config.eps))
    if config.weight_decay:
        parts.append(optax.add_decayed_weights(config.weight_decay, mask=lambda p: decay_mask(p, config)))
    parts.append(scale_by_group_learning_rate(peaks, config))
    return optax.chain(*parts)


def learning_rate(count: jax.Array, config: OptimizerConfig, decay_steps: jax.Array | int | None = None) -> jax.Array:
    """f32[] learning rate of parameters on the base rate (``config.learning_rate``) at ``count``."""
    return config.learning_rate * lr_factor(count, config, decay_steps)
