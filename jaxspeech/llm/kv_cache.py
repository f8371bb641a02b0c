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
    """k, v f[B, layers, S, K, D]; segment_ids i32[B, S] (0 = empty or padding slot);
    next_positions i32[B] (rotary position of each row's next token); index i32[] (next free slot)."""

    k: jax.Array
    v: jax.Array
    segment_ids: jax.Array
    next_positions: jax.Array
    index: jax.Array

    @property
    def max_length(self) -> int:
        return self.k.shape[2]

    @property
    def layer_kv(self) -> dict[str, jax.Array]:
        return {"k": self.k, "v": self.v}


def init_cache(config: LLMConfig, batch: int, max_length: int, dtype: Any = None) -> KVCache:
    """An empty cache for ``batch`` rows of up to ``max_length`` tokens (compute dtype by default)."""
    shape = (batch, config.num_layers, max_length, config.num_kv_heads, config.resolved_head_dim)
    dtype = dtype or config.dtype
    return KVCache(
        k=jnp.zeros(shape, dtype),
        v=jnp.zeros(shape, dtype),
        segment_ids=jnp.zeros((batch, max_length), jnp.int32),
        next_positions=jnp.zeros((batch,), jnp.int32),
        index=jnp.zeros((), jnp.int32),
    )
