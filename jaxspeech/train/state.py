"""The train state: a plain dict pytree, its abstract shapes and shardings, and its sharded init.

``state = {"params", "opt_state", "step", "rng", "skipped_steps", "consecutive_skipped_steps"}``:

* ``params``: the full parameter tree in float32 (the master copy; the task's modules cast to
  their compute dtype);
* ``opt_state``: optimizer state over the trainable subset only (``optim.split_trainable``);
* ``model_state`` (``StatefulTask``s only): the model's other variable collections, e.g.
  ``{"batch_stats": ...}``;
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
from jaxspeech.train.task import Task, is_stateful

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
    boxed: Any = dataclasses.field(default=None, repr=False)  # the traced variables with their logical axis names

    def on_mesh(self, mesh: Mesh) -> "StateLayout":
        """The same state laid out on ``mesh`` (same axis names, other sizes), without tracing again."""
        return _placed(self.boxed, self.optimizer, self.trainable, mesh, self.rules)


def _unbox(tree: Any) -> Any:
    """Raw values of ``nn.Partitioned`` boxes, without the sharding constraint ``nn.unbox`` adds:
    the state's ``out_shardings`` already place them."""
    is_box = lambda x: isinstance(x, nn.Partitioned)
    return jax.tree.map(lambda x: x.unbox(apply_constraint=False) if is_box(x) else x, tree, is_leaf=is_box)


def _master_dtype(dtype) -> Any:
    return jnp.float32 if jnp.issubdtype(dtype, jnp.floating) else dtype


def _keys(seed: int) -> tuple[jax.Array, jax.Array]:
    """(init key, key data u32[2] of the training key) derived from ``seed``."""
    init_key, train_key = jax.random.split(jax.random.key(seed))
    return init_key, jax.random.key_data(train_key)


def _state_from_variables(
    variables, optimizer: optax.GradientTransformation, trainable: Mapping[str, Any], seed: int
) -> State:
    """The initial train state from unboxed variables {"params": ..., other collections}."""
    params = jax.tree.map(lambda p: p.astype(_master_dtype(p.dtype)), variables["params"])
    trained, _ = optim.split_trainable(params, trainable)
    zero = jnp.zeros([], jnp.int32)
    state = {
        "params": params,
        "opt_state": optimizer.init(trained),
        "step": zero,
        "rng": _keys(seed)[1],
        "skipped_steps": zero,
        "consecutive_skipped_steps": zero,
    }
    model_state = {name: value for name, value in variables.items() if name != "params"}
    if model_state:
        state["model_state"] = model_state
    return state


def _init_variables_fn(task: Task, seed: int):
    """batch shapes -> boxed variable collections {"params": ..., and a StatefulTask's others}."""

    def init_variables(batch_shapes):
        # Only the batch's shapes matter to init; zeros let this run under jit without real data.
        batch = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), batch_shapes)
        key = _keys(seed)[0]
        if is_stateful(task):
            return dict(task.init_variables(key, batch))
        return {"params": task.init_params(key, batch)}

    return init_variables


def abstract_batch(batch: Any) -> Any:
    """ShapeDtypeStructs of a (host or device) batch, in device dtypes (int64 -> int32 without x64)."""
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, jax.dtypes.canonicalize_dtype(x.dtype)), batch)


def build_layout(
    task: Task,
    batch: Any,
    optimizer_config: optim.OptimizerConfig,
    mesh: Mesh,
    rules=axes.DEFAULT_RULES,
) -> StateLayout:
    """Shapes, shardings and optimizer of the train state for batches shaped like ``batch``.

    Nothing is allocated: parameters are traced with ``jax.eval_shape``.
    """
    with activation_rules(mesh, rules):
        boxed = jax.eval_shape(_init_variables_fn(task, seed=0), abstract_batch(batch))
    params_shapes = jax.tree.map(
        lambda p: jax.ShapeDtypeStruct(p.shape, _master_dtype(p.dtype)), _unbox(boxed)["params"]
    )
    trainable = optim.trainable_mask(params_shapes, optimizer_config)
    return _placed(boxed, optim.build_optimizer(params_shapes, optimizer_config), trainable, mesh, tuple(rules))


def _placed(boxed, optimizer: optax.GradientTransformation, trainable, mesh: Mesh, rules: tuple) -> StateLayout:
    """The StateLayout of the traced variables ``boxed`` on ``mesh``."""
    variables = _unbox(boxed)
    abstract = jax.eval_shape(lambda v: _state_from_variables(v, optimizer, trainable, seed=0), variables)
    variables_sharding = param_shardings(boxed, mesh, rules)
    params_sharding = variables_sharding.pop("params")
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
    if variables_sharding:
        shardings["model_state"] = variables_sharding
    abstract = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract, shardings)
    return StateLayout(abstract, shardings, optimizer, trainable, mesh, rules, boxed)


def init_state(task: Task, batch: Any, layout: StateLayout, seed: int = 0) -> State:
    """A fresh train state, created directly in its shardings (``jit`` with ``out_shardings``)."""
    batch_shapes = abstract_batch(batch)

    def init() -> State:
        variables = _unbox(_init_variables_fn(task, seed)(batch_shapes))
        return _state_from_variables(variables, layout.optimizer, layout.trainable, seed)

    with activation_rules(layout.mesh, layout.rules):
        return jax.jit(init, out_shardings=layout.shardings)()
