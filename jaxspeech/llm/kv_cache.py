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

    def reorder_rows(self, rows: jax.Array, recent: jax.Array, width: int) -> "KVCache":
        """Rows i32[R] gathered, where rows differ: the slots of the last ``recent`` i32[] steps (the
        rows reordered among themselves, beams of one prompt, share every earlier slot), read as a
        window of ``width`` >= recent slots (``reorder_recent_slots``)."""
        layers = len(self.k)
        *kv, segment_ids = reorder_recent_slots(
            (*self.k, *self.v, self.segment_ids), (2,) * (2 * layers) + (1,), rows, self.index, recent, width
        )
        return self.replace(
            k=tuple(kv[:layers]),
            v=tuple(kv[layers:]),
            segment_ids=segment_ids,
            next_positions=jnp.take(self.next_positions, rows, mode="clip"),
        )

    def stacked_kv(self) -> dict[str, jax.Array]:
        """{"k", "v"} f[B, layers, K, S, D]: every layer's, for a scanned decoder (a copy)."""
        return {"k": jnp.stack(self.k, axis=1), "v": jnp.stack(self.v, axis=1)}


def reorder_recent_slots(
    arrays: tuple[jax.Array, ...],
    slot_axes: tuple[int, ...],
    rows: jax.Array,
    index: jax.Array,
    recent: jax.Array,
    width: int,
) -> tuple[jax.Array, ...]:
    """Gathers rows i32[R] of the slots [index - recent, index) of each array (batch on axis 0,
    slots on its ``slot_axes`` entry) and leaves the other slots as they are: rows reordered among
    themselves (the beams of one prompt) share every slot written before the last ``recent`` steps,
    and the slots from ``index`` on are empty. The window gathered has the static ``width`` (at most
    all slots), which must hold the ``recent`` slots; its extra slots are shared or empty ones,
    gathered unchanged. A static width keeps the update in place: no copy of the whole cache."""
    size = arrays[0].shape[slot_axes[0]]
    width = min(width, size)
    start = jnp.clip(index - recent, 0, size - width)
    out = []
    for a, axis in zip(arrays, slot_axes):
        window = jnp.take(jax.lax.dynamic_slice_in_dim(a, start, width, axis), rows, axis=0, mode="clip")
        out.append(jax.lax.dynamic_update_slice_in_dim(a, window, start, axis))
    return tuple(out)


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
