"""One pure train step ``train_step(state, batch) -> (state, metrics)`` and its sharded compilation.

Inside the step: the RNG for step ``s`` is ``fold_in(state.rng, s)``; gradients are taken only
with respect to the trainable parameters; ``grad_accum_steps`` micro-batches (strided slices of
the batch) are scanned and their gradients averaged with the task's ``loss_weight``, which equals
the gradient of the whole batch; a step whose loss or gradient norm is not finite is skipped
(parameters and optimizer state are returned unchanged and the skip counters advance).
"""

from __future__ import annotations

import math
import time
from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from jaxspeech.layers import axes
from jaxspeech.sharding import multihost
from jaxspeech.sharding.mesh import activation_rules
from jaxspeech.train import optim
from jaxspeech.train.state import State, StateLayout
from jaxspeech.train.task import LOSS_WEIGHT, CountsFlops, Task

Metrics = dict[str, jax.Array]
StepFn = Callable[[State, Any], tuple[State, Metrics]]


def _micro_batches(batch: Any, count: int) -> Any:
    """[B, ...] -> [count, B // count, ...]; micro-batch i holds examples i, i + count, ...

    Strided (not contiguous) so that every micro-batch stays spread over all data shards.
    """

    def split(x):
        if x.shape[0] % count:
            raise ValueError(f"batch size {x.shape[0]} is not divisible by grad_accum_steps={count}")
        return jnp.swapaxes(x.reshape(x.shape[0] // count, count, *x.shape[1:]), 0, 1)

    return jax.tree.map(split, batch)


def accumulated_gradients(task: Task, trainable, frozen, batch, rng, accum_steps: int = 1, model_state=None):
    """(loss f32[], metrics, grads, new model state) of ``task.loss`` w.r.t. ``trainable`` over
    ``accum_steps`` micro-batches, averaged with the task's ``loss_weight`` (the metric then holds
    the total). ``model_state`` (a ``StatefulTask``'s, else None) is threaded through the
    micro-batches in order."""

    def one(batch, rng, model_state):
        def loss_fn(trained):
            params = optim.merge_trainable(trained, frozen)
            if model_state is None:
                loss, metrics = task.loss(params, batch, rng, train=True)
                return loss, (metrics, None)
            loss, metrics, new_model_state = task.loss(params, batch, rng, train=True, model_state=model_state)
            return loss, (metrics, new_model_state)

        (loss, (metrics, new_model_state)), grads = jax.value_and_grad(loss_fn, has_aux=True)(trainable)
        metrics = {k: jnp.asarray(v, jnp.float32) for k, v in metrics.items()}
        weight = metrics.pop(LOSS_WEIGHT, jnp.ones([], jnp.float32))
        return loss.astype(jnp.float32), metrics, grads, weight, new_model_state

    if accum_steps == 1:
        loss, metrics, grads, weight, model_state = one(batch, rng, model_state)
        return loss, {**metrics, LOSS_WEIGHT: weight}, grads, model_state

    def body(carry, inputs):
        index, micro = inputs
        carry_sums, carry_grads, carry_weight, model_state = carry
        loss, metrics, grads, weight, model_state = one(micro, jax.random.fold_in(rng, index), model_state)
        sums = {**{k: v * weight for k, v in metrics.items()}, "loss": loss * weight}
        return (
            jax.tree.map(jnp.add, carry_sums, sums),
            jax.tree.map(lambda a, g: a + weight * g.astype(jnp.float32), carry_grads, grads),
            carry_weight + weight,
            model_state,
        ), None

    micro = _micro_batches(batch, accum_steps)
    first = jax.tree.map(lambda x: x[0], micro)
    shapes = jax.eval_shape(one, first, rng, model_state)
    zeros = lambda tree: jax.tree.map(lambda s: jnp.zeros(s.shape, jnp.float32), tree)
    init = (zeros({**shapes[1], "loss": shapes[0]}), zeros(shapes[2]), jnp.zeros([], jnp.float32), model_state)
    (sums, grad_sum, total, model_state), _ = jax.lax.scan(body, init, (jnp.arange(accum_steps), micro))
    denominator = jnp.where(total > 0, total, 1.0)
    grads = jax.tree.map(lambda g, p: (g / denominator).astype(p.dtype), grad_sum, trainable)
    metrics = {k: v / denominator for k, v in sums.items()}
    return metrics.pop("loss"), {**metrics, LOSS_WEIGHT: total}, grads, model_state


def make_train_step(
    task: Task, layout: StateLayout, optimizer_config: optim.OptimizerConfig, grad_accum_steps: int = 1
) -> StepFn:
    """The pure ``train_step(state, batch) -> (state, metrics)`` for ``layout`` (``CompiledStep``
    jits it). Metrics: the task's (averaged), ``loss``, ``grad_norm`` (before clipping),
    ``learning_rate`` (base group), ``skipped`` and the two skip counters, all f32[]."""
    if grad_accum_steps < 1:
        raise ValueError(f"grad_accum_steps must be >= 1, got {grad_accum_steps}")

    def train_step(state: State, batch: Any) -> tuple[State, Metrics]:
        rng = jax.random.fold_in(jax.random.wrap_key_data(state["rng"]), state["step"])
        trainable, frozen = optim.split_trainable(state["params"], layout.trainable)
        model_state = state.get("model_state")
        loss, metrics, grads, new_model_state = accumulated_gradients(
            task, trainable, frozen, batch, rng, grad_accum_steps, model_state
        )
        grad_norm = optax.global_norm(grads)
        finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)

        updates, new_opt_state = layout.optimizer.update(grads, state["opt_state"], trainable)
        new_trainable = optax.apply_updates(trainable, updates)
        keep_if_skipped = lambda new, old: jax.tree.map(lambda n, o: jnp.where(finite, n, o), new, old)
        new_trainable = keep_if_skipped(new_trainable, trainable)
        new_opt_state = keep_if_skipped(new_opt_state, state["opt_state"])

        skipped = (~finite).astype(jnp.int32)
        applied_updates = state["step"] - state["skipped_steps"]
        new_state = {
            "params": optim.merge_trainable(new_trainable, frozen),
            "opt_state": new_opt_state,
            "step": state["step"] + 1,
            "rng": state["rng"],
            "skipped_steps": state["skipped_steps"] + skipped,
            "consecutive_skipped_steps": (state["consecutive_skipped_steps"] + 1) * skipped,
        }
        if model_state is not None:
            new_state["model_state"] = keep_if_skipped(new_model_state, model_state)
        metrics = {
            **metrics,
            "loss": loss,
            "grad_norm": grad_norm,
            "learning_rate": optim.learning_rate(
                applied_updates, optimizer_config, optim.decay_horizon(state["opt_state"])
            ),
            "skipped": skipped.astype(jnp.float32),
            "skipped_steps": new_state["skipped_steps"].astype(jnp.float32),
            "consecutive_skipped_steps": new_state["consecutive_skipped_steps"].astype(jnp.float32),
        }
        return new_state, metrics

    return train_step


def global_batch_shapes(host_batch: Any) -> Any:
    """ShapeDtypeStructs of the global batch that per-process ``host_batch``es (axis 0 = this
    process's rows) make together; dtypes as on device (int64 -> int32 without x64)."""

    def one(x):
        shape = (x.shape[0] * jax.process_count(),) + tuple(x.shape[1:])
        return jax.ShapeDtypeStruct(shape, jax.dtypes.canonicalize_dtype(x.dtype))

    return jax.tree.map(one, host_batch)


def batch_shards(mesh: Mesh, rules=axes.DEFAULT_RULES) -> int:
    """Into how many shards the mesh axes that ``act_batch`` maps to split a global batch."""
    return math.prod(mesh.shape[a] for a in _mesh_axes(axes.ACT_BATCH, rules, mesh))


def batch_shardings(batch: Any, mesh: Mesh, rules=axes.DEFAULT_RULES) -> Any:
    """NamedShardings splitting axis 0 of every (global) batch leaf over the mesh axes that
    ``act_batch`` maps to; a batch those axes do not divide is an error, never silently replicated."""
    physical = _mesh_axes(axes.ACT_BATCH, rules, mesh)
    shards = batch_shards(mesh, rules)

    def one(keypath, x):
        if not x.shape or x.shape[0] % shards:
            raise ValueError(
                f"batch leaf {jax.tree_util.keystr(keypath)} of shape {tuple(x.shape)} cannot be split over the "
                f"batch mesh axes {physical} ({shards} shards): its leading (batch) dimension must be a multiple of {shards}"
            )
        return NamedSharding(mesh, PartitionSpec(physical or None, *([None] * (len(x.shape) - 1))))

    return jax.tree_util.tree_map_with_path(one, batch)


def _mesh_axes(logical: str, rules, mesh: Mesh) -> tuple[str, ...]:
    """Mesh axes (of size > 1) that ``logical`` maps to under ``rules``."""
    physical = dict(rules).get(logical)
    physical = () if physical is None else (physical,) if isinstance(physical, str) else tuple(physical)
    return tuple(a for a in physical if mesh.shape.get(a, 1) > 1)


class CompiledStep:
    """The train step of ``task`` jitted with explicit shardings and the state donated.

    Each distinct batch shape (duration bucket) is lowered and compiled ahead of time on first
    use; ``compile_seconds``, ``flops`` and ``memory_bytes`` (per device) record each. ``flops`` comes from the
    task when it implements ``CountsFlops`` (split evenly over the devices), else from XLA's cost
    analysis. XLA counts a loop body once, so with gradient accumulation the other
    ``grad_accum_steps - 1`` micro-batches are added from the (unpartitioned) cost of one
    micro-batch's gradient split evenly over the devices: an estimate. ``memory_bytes`` is the
    compiled program's peak as XLA's memory analysis plans it: arguments + temporaries + outputs not
    aliased to (donated) arguments.
    """

    def __init__(
        self, task: Task, layout: StateLayout, optimizer_config: optim.OptimizerConfig, grad_accum_steps: int = 1
    ):
        self._task, self._layout, self._accum_steps = task, layout, grad_accum_steps
        self._step_fn = make_train_step(task, layout, optimizer_config, grad_accum_steps)
        self._compiled: dict[Any, Any] = {}
        self._shardings: dict[Any, Any] = {}
        self.compile_seconds: dict[Any, float] = {}
        self.flops: dict[Any, float | None] = {}
        self.memory_bytes: dict[Any, int | None] = {}

    @staticmethod
    def shape_key(batch: Any) -> Any:
        leaves, treedef = jax.tree.flatten(batch)
        return treedef, tuple((tuple(x.shape), str(x.dtype)) for x in leaves)

    def _global(self, host_batch: Any) -> tuple[Any, Any]:
        """(global shapes, shardings) for host batches shaped like ``host_batch``."""
        key = self.shape_key(host_batch)
        if key not in self._shardings:
            shapes = global_batch_shapes(host_batch)
            self._shardings[key] = shapes, batch_shardings(shapes, self._layout.mesh, self._layout.rules)
        return self._shardings[key]

    def to_device(self, host_batch: Any) -> Any:
        """This process's numpy batch -> the global, sharded batch the step takes."""
        return multihost.to_global(host_batch, self._global(host_batch)[1])

    def lowered(self, host_batch: Any) -> jax.stages.Lowered:
        """The step lowered (not compiled) for host batches shaped like ``host_batch``: with the
        state donated, laid out as ``layout``, and the global batch split over the batch axes."""
        shapes, shardings = self._global(host_batch)
        replicated = NamedSharding(self._layout.mesh, PartitionSpec())
        jitted = jax.jit(
            self._step_fn,
            in_shardings=(self._layout.shardings, shardings),
            out_shardings=(self._layout.shardings, replicated),
            donate_argnums=0,
        )
        with activation_rules(self._layout.mesh, self._layout.rules):
            return jitted.lower(self._layout.abstract, shapes)

    def compiled(self, host_batch: Any):
        """The compiled executable for host batches shaped like ``host_batch`` (compiled if new)."""
        key = self.shape_key(host_batch)
        if key not in self._compiled:
            start = time.perf_counter()
            compiled = self.lowered(host_batch).compile()
            self.compile_seconds[key] = time.perf_counter() - start
            with activation_rules(self._layout.mesh, self._layout.rules):
                self.flops[key] = self._step_flops(compiled, self._global(host_batch)[0])
            self.memory_bytes[key] = _memory_bytes(compiled)
            self._compiled[key] = compiled
        return self._compiled[key]

    def _step_flops(self, compiled, batch_shapes: Any) -> float | None:
        if isinstance(self._task, CountsFlops):
            return float(self._task.train_flops(batch_shapes)) / self._layout.mesh.size
        flops = _flops(compiled)
        if flops is not None and self._accum_steps > 1:
            flops += (self._accum_steps - 1) * self._micro_batch_flops(batch_shapes)
        return flops

    def _micro_batch_flops(self, batch_shapes: Any) -> float:
        """Per-device estimate of one micro-batch's forward + backward FLOPs."""
        micro = jax.tree.map(
            lambda s: jax.ShapeDtypeStruct((s.shape[0] // self._accum_steps,) + s.shape[1:], s.dtype), batch_shapes
        )
        unsharded = lambda tree: jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype), tree)
        trainable, frozen = optim.split_trainable(unsharded(self._layout.abstract["params"]), self._layout.trainable)
        model_state = unsharded(self._layout.abstract.get("model_state"))
        rng = jax.random.key(0)
        gradients = lambda t, f, b, m: accumulated_gradients(self._task, t, f, b, rng, 1, m)
        analysis = jax.jit(gradients).lower(trainable, frozen, micro, model_state).cost_analysis()
        return float((analysis or {}).get("flops", 0.0)) / self._layout.mesh.size

    def __call__(self, state: State, host_batch: Any) -> tuple[State, Metrics]:
        """One step on a host batch (transferred with ``to_device``); the state is donated."""
        return self.compiled(host_batch)(state, self.to_device(host_batch))


def _memory_bytes(compiled) -> int | None:
    """Per-device bytes the compiled program holds at its peak (None where the backend has no memory analysis)."""
    try:
        stats = compiled.memory_analysis()
    except Exception:  # backends without a memory analysis raise; the memory is then simply not reported
        return None
    if stats is None:
        return None
    return int(
        stats.argument_size_in_bytes
        + stats.temp_size_in_bytes
        + max(0, stats.output_size_in_bytes - stats.alias_size_in_bytes)
    )


def _flops(compiled) -> float | None:
    """FLOPs of one call per device from XLA's cost analysis (None where the backend has none)."""
    try:
        analysis = compiled.cost_analysis()
    except Exception:  # backends without a cost model raise; MFU is then simply not reported
        return None
    if isinstance(analysis, (list, tuple)):
        analysis = analysis[0] if analysis else None
    if not isinstance(analysis, Mapping) or "flops" not in analysis:
        return None
    return float(analysis["flops"])
