"""What the trainer needs from a model: a ``Task`` initialises parameters and computes the loss.

The trainer never reaches inside modules; everything model-specific (the network, its compute
dtype, the loss, the metrics) sits behind this protocol. A model that also keeps state that is
not trained (batch-norm statistics in ``batch_stats``) implements ``StatefulTask`` instead: the
trainer then keeps that state in the train state, threads it through the steps and checkpoints.
"""

from __future__ import annotations

from typing import Any, Mapping, Protocol, runtime_checkable

import jax

# Optional key in the metrics a task returns: the loss normaliser of the batch (e.g. the number
# of target tokens). Gradient accumulation weights micro-batches by it, so that k micro-batches
# give exactly the gradient of the k-times-larger batch even when their token counts differ.
# Without it micro-batches are weighted equally.
LOSS_WEIGHT = "loss_weight"


@runtime_checkable
class Task(Protocol):
    """A trainable model + loss. ``batch`` is any pytree of arrays with the batch on axis 0."""

    def init_params(self, rng: jax.Array, batch: Any) -> Mapping[str, Any]:
        """Parameters (a nested dict, leaves boxed with ``nn.LogicallyPartitioned``, as returned
        by ``module.init(...)['params']``) for batches shaped like ``batch``. ``rng`` is a typed key."""
        ...

    def loss(
        self, params: Mapping[str, Any], batch: Any, rng: jax.Array, *, train: bool
    ) -> tuple[jax.Array, dict[str, jax.Array]]:
        """(loss f32[], metrics {name: f32[]}) for one batch; ``params`` are unboxed."""
        ...


@runtime_checkable
class StatefulTask(Protocol):
    """A task whose model updates non-trained variable collections while training."""

    def init_variables(self, rng: jax.Array, batch: Any) -> Mapping[str, Any]:
        """The variable collections to keep, boxed as ``module.init`` returns them: ``{"params":
        ..., "batch_stats": ...}`` (leave out collections that ``init`` fills but training does
        not carry, such as attention ``diagnostics``)."""
        ...

    def loss(
        self, params: Mapping[str, Any], batch: Any, rng: jax.Array, *, train: bool, model_state: Mapping[str, Any]
    ) -> tuple[jax.Array, dict[str, jax.Array], Mapping[str, Any]]:
        """(loss, metrics, new model state); ``model_state`` holds the collections other than
        ``params`` (the new state is what ``apply(..., mutable=[...])`` returned)."""
        ...


def is_stateful(task: Any) -> bool:
    return callable(getattr(task, "init_variables", None))


@runtime_checkable
class CountsThroughput(Protocol):
    """Optional: a task that knows what a batch holds reports it for throughput metrics."""

    def throughput_counts(self, batch: Any) -> Mapping[str, float]:
        """Host-side counts in a (numpy) batch, e.g. ``{"examples": 8, "tokens": 1234,
        "audio_seconds": 96.0}``; the trainer logs each as ``<name>_per_s``."""
        ...


@runtime_checkable
class CountsFlops(Protocol):
    """Optional: a task that knows its model's FLOPs. XLA's cost analysis counts the body of a
    loop once, so for a model whose layers run under ``nn.scan`` it counts one layer; such a task
    should supply the FLOPs itself (e.g. 6 x parameters x tokens) for a meaningful MFU."""

    def train_flops(self, batch: Any) -> float:
        """FLOPs (all devices together) of one training step, forward and backward, on a global
        batch shaped like ``batch`` (``jax.ShapeDtypeStruct`` leaves)."""
        ...
