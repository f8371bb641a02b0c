"""Key/value cache of the decoder LLM for prefill + incremental decoding.

Every array with a batch has it on axis 0 (the decoding module's convention: beam search expands
and reorders caches along axis 0); ``index`` is shared by the batch.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import struct

from jaxspeech.llm.config import LLMConfig


@struct.dataclass
class KVCache:
    """k, v: tuples (one entry per layer, so that a step updates each in place) of head-major
    f[B, K, S, D] (``layers.attention.Attention``'s cache layout);
    segment_ids i32[B, S] (0 = empty or padding slot); next_positions i32[B] (rotary position of
    each row's next token); index i32[] (next free slot)."""

    k: tuple[jax.Array, ...]
    v: tuple[jax.Array, ...]
    segment_ids: jax.Array
    next_positions: jax.Array
    index: jax.Array

    @property
    def max_length(self) -> int:
        return self.k[0].shape[2]

    def layer_kv(self, layer: int) -> dict[str, jax.Array]:
        """{"k", "v"} f[B, K, S, D] of one layer."""
        return {"k": self.k[layer], "v": self.v[layer]}

    def stacked_kv(self) -> dict[str, jax.Array]:
        """{"k", "v"} f[B, layers, K, S, D]: every layer's, for a scanned decoder (a copy)."""
        return {"k": jnp.stack(self.k, axis=1), "v": jnp.stack(self.v, axis=1)}


def init_cache(config: LLMConfig, batch: int, max_length: int, dtype: Any = None) -> KVCache:
    """An empty cache for ``batch`` rows of up to ``max_length`` tokens (compute dtype by default)."""
    shape = (batch, config.num_kv_heads, max_length, config.resolved_head_dim)
    dtype = dtype or config.dtype
    zeros = lambda: tuple(jnp.zeros(shape, dtype) for _ in range(config.num_layers))
    return KVCache(
        k=zeros(),
        v=zeros(),
        segment_ids=jnp.zeros((batch, max_length), jnp.int32),
        next_positions=jnp.zeros((batch,), jnp.int32),
        index=jnp.zeros((), jnp.int32),
    )
