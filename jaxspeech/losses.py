"""Losses of text-generating models: masked next-token cross-entropy, z-loss, token accuracy.

Convention (``jaxspeech.types.Batch``): logits f32[B, L, V] at position t predict tokens[t + 1];
``loss_mask[b, t] = 1`` marks tokens[b, t] as a target. Sums are returned with the target count so
that gradient accumulation and multi-host averaging weight every token equally.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import struct


@struct.dataclass
class TokenLoss:
    """Summed over targets: ``nll`` (cross-entropy), ``z`` (log-normaliser squared), ``correct``
    (arg-max hits); ``count`` = number of targets. ``loss`` = (nll + z_weight * z) / count."""

    loss: jax.Array
    nll: jax.Array
    z: jax.Array
    correct: jax.Array
    count: jax.Array

    @property
    def accuracy(self) -> jax.Array:
        return self.correct / jnp.maximum(self.count, 1)

    @property
    def mean_nll(self) -> jax.Array:
        return self.nll / jnp.maximum(self.count, 1)


def next_token_loss(
    logits: jax.Array,
    tokens: jax.Array,
    loss_mask: jax.Array,
    *,
    z_loss: float = 0.0,
    label_smoothing: float = 0.0,
) -> TokenLoss:
    """Masked cross-entropy of logits[:, :-1] against tokens[:, 1:] weighted by loss_mask[:, 1:]."""
    logits = logits[:, :-1].astype(jnp.float32)
    targets = tokens[:, 1:]
    weights = loss_mask[:, 1:].astype(jnp.float32)
    log_z = jax.nn.logsumexp(logits, axis=-1)
    target_logit = jnp.take_along_axis(logits, targets[..., None], axis=-1)[..., 0]
    nll = log_z - target_logit
    if label_smoothing:  # spread over the tokens the model can emit (padding ids have -inf logits)
        emittable = logits > -jnp.inf
        mean_logit = jnp.sum(jnp.where(emittable, logits, 0.0), axis=-1) / jnp.sum(emittable, axis=-1)
        uniform = log_z - mean_logit
        nll = (1.0 - label_smoothing) * nll + label_smoothing * uniform
    count = jnp.sum(weights)
    nll_sum = jnp.sum(nll * weights)
    z_sum = jnp.sum(jnp.square(log_z) * weights)
    correct = jnp.sum((jnp.argmax(logits, axis=-1) == targets) * weights)
    loss = (nll_sum + z_loss * z_sum) / jnp.maximum(count, 1.0)
    return TokenLoss(loss=loss, nll=nll_sum, z=z_sum, correct=correct, count=count)
