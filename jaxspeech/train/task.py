"""What the trainer needs from a model: a ``Task`` initialises parameters and computes the loss.

The trainer never reaches inside modules; everything model-specific (the network, its compute
dtype, the loss, the metrics) sits behind this protocol.
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

    def loss(self, params: Mapping[str, Any], batch: Any, rng: jax.Array, *, train: bool) -> tuple[jax.Array, dict[str, jax.Array]]:
        """(loss f32[], metrics {name: f32[]}) for one batch; ``params`` are unboxed."""
        ...


@runtime_checkable
class CountsThroughput(Protocol):
    """Optional: a task that knows what a batch holds reports it for throughput metrics."""

    def throughput_counts(self, batch: Any) -> Mapping[str, float]:
        """Host-side counts in a (numpy) batch, e.g. ``{"examples": 8, "tokens": 1234,
        "audio_seconds": 96.0}``; the trainer logs each as ``<name>_per_s``."""
        ...
