"""One description of every attention mask jaxspeech uses, shared by all attention backends.

A ``MaskSpec`` describes *which* (query, key) pairs may interact without materialising a dense
``[B, T, S]`` matrix, so the Pallas kernels can skip whole blocks while the XLA reference builds
the dense mask from the same spec. A pair (i, j) is allowed when all of these hold:

* segments: ``q_segment_ids[b, i] == kv_segment_ids[b, j]`` and both are non-zero (0 = padding;
  packed examples use distinct ids);
* key length: ``j < kv_lengths[b]`` (right padding without segment ids);
* causality: ``kv_positions[b, j] <= q_positions[b, i]``, *unless* both positions carry the same
  non-zero bidirectional id (``q_bidir_ids`` / ``kv_bidir_ids``): this makes an audio span attend
  to itself in both directions inside a causal text sequence (prefix-LM);
* local window: ``-window_right <= q_pos - kv_pos <= window_left``;
* chunks (streaming): with ``c = pos // chunk_size``, ``0 <= c_q - c_kv <= chunk_left`` (a frame
  sees its own chunk and ``chunk_left`` previous ones; ``None`` = all previous).

Positions default to ``arange`` over each axis. Fully masked query rows produce zeros.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from flax import struct


@struct.dataclass
class MaskSpec:
    """Attention mask description. Arrays are batched; static fields select mask families."""

    q_segment_ids: jax.Array | None = None  # i32[B, T]
    kv_segment_ids: jax.Array | None = None  # i32[B, S]
    kv_lengths: jax.Array | None = None  # i32[B]
    q_positions: jax.Array | None = None  # i32[B, T]
    kv_positions: jax.Array | None = None  # i32[B, S]
    q_bidir_ids: jax.Array | None = None  # i32[B, T]
    kv_bidir_ids: jax.Array | None = None  # i32[B, S]
    causal: bool = struct.field(pytree_node=False, default=False)
    window_left: int | None = struct.field(pytree_node=False, default=None)
    window_right: int | None = struct.field(pytree_node=False, default=None)
    chunk_size: int | None = struct.field(pytree_node=False, default=None)
    chunk_left: int | None = struct.field(pytree_node=False, default=None)

    def replace(self, **kwargs) -> "MaskSpec":
        return dataclasses.replace(self, **kwargs)

    @property
    def uses_positions(self) -> bool:
        return (
            self.causal
            or self.window_left is not None
            or self.window_right is not None
            or (self.chunk_size is not None)
        )


def padding_mask(lengths: jax.Array, max_length: int) -> jax.Array:
    """bool[B, max_length]: True on the first ``lengths[b]`` positions."""
    return jnp.arange(max_length)[None, :] < lengths[:, None]


def _positions(explicit: jax.Array | None, batch: int, length: int) -> jax.Array:
    if explicit is not None:
        return explicit
    return jnp.broadcast_to(jnp.arange(length, dtype=jnp.int32)[None, :], (batch, length))


def dense_mask(spec: MaskSpec | None, batch: int, q_len: int, kv_len: int) -> jax.Array:
    """bool[B, T, S] built from ``spec`` (all True when ``spec`` is None)."""
    allowed = jnp.ones((batch, q_len, kv_len), dtype=bool)
    if spec is None:
        return allowed
    if spec.q_segment_ids is not None or spec.kv_segment_ids is not None:
        q_seg = spec.q_segment_ids if spec.q_segment_ids is not None else jnp.ones((batch, q_len), jnp.int32)
        kv_seg = spec.kv_segment_ids if spec.kv_segment_ids is not None else jnp.ones((batch, kv_len), jnp.int32)
        allowed &= (q_seg[:, :, None] == kv_seg[:, None, :]) & (q_seg[:, :, None] != 0) & (kv_seg[:, None, :] != 0)
    if spec.kv_lengths is not None:
        allowed &= padding_mask(spec.kv_lengths, kv_len)[:, None, :]
    if spec.uses_positions:
        q_pos = _positions(spec.q_positions, batch, q_len)[:, :, None]
        kv_pos = _positions(spec.kv_positions, batch, kv_len)[:, None, :]
        if spec.causal:
            causal_ok = kv_pos <= q_pos
            if spec.q_bidir_ids is not None and spec.kv_bidir_ids is not None:
                q_bid = spec.q_bidir_ids[:, :, None]
                kv_bid = spec.kv_bidir_ids[:, None, :]
                causal_ok |= (q_bid == kv_bid) & (q_bid != 0)
            allowed &= causal_ok
        if spec.window_left is not None:
            allowed &= q_pos - kv_pos <= spec.window_left
        if spec.window_right is not None:
            allowed &= kv_pos - q_pos <= spec.window_right
        if spec.chunk_size is not None:
            delta = q_pos // spec.chunk_size - kv_pos // spec.chunk_size
            allowed &= delta >= 0
            if spec.chunk_left is not None:
                allowed &= delta <= spec.chunk_left
    return allowed
