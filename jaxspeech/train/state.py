"""The train state: a plain dict pytree, its abstract shapes and shardings, and its sharded init.

``state = {"params", "opt_state", "step", "rng", "skipped_steps", "consecutive_skipped_steps"}``:

* ``params``: the full parameter tree in float32 (the master copy; the task's modules cast to
  their compute dtype);
* ``opt_state``: optimizer state over the trainable subset only (``optim.split_trainable``);
* ``step`` i32[]: train steps taken (batches consumed), skipped ones included;
* ``rng`` u32[2]: key data of the base training key; step ``s`` uses ``fold_in(rng, s)``;
* ``skipped_steps`` / ``consecutive_skipped_steps`` i32[]: steps dropped for non-finite values.

Init runs as one jitted function whose ``out_shardings`` come from the parameters' logical axis
names, so each device materialises only its own shards.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import optax
from flax import linen as nn
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from jaxspeech.layers import axes
from jaxspeech.sharding.mesh import activation_rules, param_shardings
from jaxspeech.train import optim
from jaxspeech.train.task import Task

State = dict[str, Any]


@dataclasses.dataclass(frozen=True)
class StateLayout:
    """Everything derived from the task's parameter shapes that the step and checkpoints need."""

    abstract: State  # jax.ShapeDtypeStruct leaves, each carrying its target sharding
    shardings: State  # NamedSharding leaves
    optimizer: optax.GradientTransformation
    trainable: Mapping[str, Any]  # nested bools over params: True = trained
    mesh: Mesh
    rules: tuple  # logical axis rules the shardings were resolved with


def _unbox(tree: Any) -> Any:
    """Raw values of ``nn.Partitioned`` boxes. Unlike ``nn.unbox`` this adds no sharding
    constraint: the state's out_shardings place the values (and a constraint would reject a
    kernel whose two axes share a logical name)."""
    is_box = lambda x: isinstance(x, nn.Partitioned)
    return jax.tree.map(lambda x: x.unbox(apply_constraint=False) if is_box(x) else x, tree, is_leaf=is_box)


def _master_dtype(dtype) -> Any:
    return jnp.float32 if jnp.issubdtype(dtype, jnp.floating) else dtype


def _keys(seed: int) -> tuple[jax.Array, jax.Array]:
    """(init key, key data u32[2] of the training key) derived from ``seed``."""
    init_key, train_key = jax.random.split(jax.random.key(seed))
    return init_key, jax.random.key_data(train_key)


def _state_from_params(params, optimizer: optax.GradientTransformation, trainable: Mapping[str, Any], seed: int) -> State:
    trained, _ = optim.split_trainable(params, trainable)
    zero = jnp.zeros([], jnp.int32)
    return {
        "params": params,
        "opt_state": optimizer.init(trained),
        "step": zero,
        "rng": _keys(seed)[1],
        "skipped_steps": zero,
        "consecutive_skipped_steps": zero,
    }


def _init_params_fn(task: Task, seed: int):
    def init_params(batch_shapes):
        # Only the batch's shapes matter to init; zeros let this run under jit without real data.
        batch = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), batch_shapes)
        return task.init_params(_keys(seed)[0], batch)

    return init_params


def abstract_batch(batch: Any) -> Any:
    """ShapeDtypeStructs of a (host or device) batch."""
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), batch)


def build_layout(
    task: Task,
    batch: Any,
    optimizer_config: optim.OptimizerConfig,
    mesh: Mesh,
    rules=axes.DEFAULT_RULES,
    seed: int = 0,
) -> StateLayout:
    """Shapes, shardings and optimizer of the train state for batches shaped like ``batch``.

    Nothing is allocated: parameters are traced with ``jax.eval_shape``.
    """
    boxed = jax.eval_shape(_init_params_fn(task, seed), abstract_batch(batch))
    params_shapes = jax.tree.map(lambda p: jax.ShapeDtypeStruct(p.shape, _master_dtype(p.dtype)), _unbox(boxed))
    trainable = optim.trainable_mask(params_shapes, optimizer_config)
    optimizer = optim.build_optimizer(params_shapes, optimizer_config)
    abstract = jax.eval_shape(lambda p: _state_from_params(p, optimizer, trainable, seed), params_shapes)

    params_sharding = param_shardings(boxed, mesh, rules)
    trained_sharding, _ = optim.split_trainable(params_sharding, trainable)
    replicated = NamedSharding(mesh, PartitionSpec())
    opt_sharding = optax.tree_map_params(
        optimizer,
        lambda _, sharding: sharding,
        abstract["opt_state"],
        trained_sharding,
        transform_non_params=lambda _: replicated,
    )
    shardings = {key: replicated for key in abstract}
    shardings.update(params=params_sharding, opt_state=opt_sharding)
    abstract = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract, shardings)
    return StateLayout(abstract, shardings, optimizer, trainable, mesh, tuple(rules))


def init_state(task: Task, batch: Any, layout: StateLayout, seed: int = 0) -> State:
    """A fresh train state, created directly in its shardings (``jit`` with ``out_shardings``)."""
    batch_shapes = abstract_batch(batch)

    def init() -> State:
        params = _unbox(_init_params_fn(task, seed)(batch_shapes))
        params = jax.tree.map(lambda p: p.astype(_master_dtype(p.dtype)), params)
        return _state_from_params(params, layout.optimizer, layout.trainable, seed)

    with activation_rules(layout.mesh, layout.rules):
        return jax.jit(init, out_shardings=layout.shardings)()
