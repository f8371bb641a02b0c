"""Token embeddings (with ``attend`` for tied LM heads) and sinusoidal position tables."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn

from jaxspeech.layers import axes


class Embed(nn.Module):
    """tokens i32[B, L] -> f[B, L, D]; ``attend(x f[B, L, D]) -> f32[B, L, V]`` reuses the table."""

    num_embeddings: int
    features: int
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32
    embedding_init: Any = nn.initializers.normal(stddev=0.02)

    def setup(self):
        self.embedding = self.param(
            "embedding",
            nn.with_logical_partitioning(self.embedding_init, (axes.VOCAB, axes.EMBED)),
            (self.num_embeddings, self.features),
            self.param_dtype,
        )

    def __call__(self, tokens: jax.Array) -> jax.Array:
        return jnp.take(self.embedding, tokens, axis=0).astype(self.dtype)

    def attend(self, x: jax.Array) -> jax.Array:
        return jnp.dot(x.astype(self.dtype), self.embedding.astype(self.dtype).T, preferred_element_type=jnp.float32)


def sinusoids(length: int, channels: int, max_timescale: float = 10000.0) -> np.ndarray:
    """f32[length, channels] Whisper-style table: [sin | cos] halves with log-spaced timescales."""
    if channels % 2:
        raise ValueError(f"sinusoidal embeddings need an even channel count, got {channels}")
    log_increment = np.log(max_timescale) / (channels // 2 - 1)
    inv_timescales = np.exp(-log_increment * np.arange(channels // 2, dtype=np.float32))
    scaled = np.arange(length, dtype=np.float32)[:, None] * inv_timescales[None, :]
    return np.concatenate([np.sin(scaled), np.cos(scaled)], axis=1).astype(np.float32)
