"""Transformer-XL relative positional self-attention, as used by Conformer, NeMo and Parakeet.

Scores between query i and key j (per head, before softmax):

    scale * [ (q_i + u) . k_j  +  (q_i + v) . W_pos r_{i-j} ]

with learned per-head biases ``u`` (``pos_bias_u``, content) and ``v`` (``pos_bias_v``, position)
and ``r_d`` a sinusoidal embedding of the signed distance d. The position term is computed once
against all 2T-1 distances, realigned to [T, T] with the "rel_shift" trick and handed to the shared
attention dispatcher as an additive ``bias`` so that every backend computes the same thing.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn

from jaxspeech.layers import axes
from jaxspeech.layers.broadcast import over_leading_axes
from jaxspeech.layers.attention import dot_product_attention
from jaxspeech.layers.dense import Dense
from jaxspeech.kernels.masks import MaskSpec


def relative_sinusoids(length: int, channels: int, base: float = 10000.0) -> np.ndarray:
    """f32[2*length - 1, channels] embeddings of distances length-1, length-2, ..., -(length-1).

    Sine and cosine are interleaved (channel 2i = sin, 2i+1 = cos) with inverse frequencies
    base^(-2i/channels), the layout of NeMo / Parakeet checkpoints.
    """
    if channels % 2:
        raise ValueError(f"relative position embeddings need an even channel count, got {channels}")
    inv_freq = np.float32(1.0) / np.power(
        np.float32(base), np.arange(0, channels, 2, dtype=np.float32) / np.float32(channels)
    )
    distances = np.arange(length - 1, -length, -1, dtype=np.float32)
    angles = distances[:, None] * inv_freq[None, :]
    return np.stack([np.sin(angles), np.cos(angles)], axis=-1).reshape(2 * length - 1, channels).astype(np.float32)


def rel_shift(scores: jax.Array) -> jax.Array:
    """scores f[..., T, 2T-1] against distances (T-1 ... -(T-1)) -> f[..., T, T] with out[i, j] = scores[i, T-1-i+j].

    Row i of the result starts at flat offset (T-1) + i*(2T-2) of the row-major [T, 2T-1] block,
    so one flat slice and a reshape realign every row without a gather.
    """
    length = scores.shape[-2]
    if length == 1:
        return scores
    lead = scores.shape[:-2]
    flat = scores.reshape(*lead, length * (2 * length - 1))
    flat = jax.lax.slice_in_dim(flat, length - 1, length - 1 + length * (2 * length - 2), axis=-1)
    return flat.reshape(*lead, length, 2 * length - 2)[..., :length]


class RelPositionAttention(nn.Module):
    """Self-attention with relative positions: x f[B, T, E], pos_emb f[2T-1, E] -> f[B, T, E].

    Parameters: q/k/v/o_proj (optional biases), ``pos_proj`` (no bias) and ``pos_bias_u`` /
    ``pos_bias_v`` stored flat as f[H * D] (the same ``heads`` axis as the query projection).
    """

    num_heads: int
    head_dim: int
    use_bias: bool = True
    impl: str = "xla"
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, pos_emb: jax.Array, *, mask: MaskSpec | None = None) -> jax.Array:
        batch, length, features = x.shape
        heads, head_dim = self.num_heads, self.head_dim
        if pos_emb.shape != (2 * length - 1, features):
            raise ValueError(
                f"pos_emb must be f[{2 * length - 1}, {features}] for {length} frames, got {pos_emb.shape}"
            )

        def dense(n, logical_axes, use_bias, name):
            return Dense(n, logical_axes, use_bias, self.dtype, self.param_dtype, name=name)

        def split_heads(t):
            return t.reshape(*t.shape[:-1], heads, head_dim)

        def head_bias(name):
            init = nn.with_logical_partitioning(nn.initializers.zeros, (axes.HEADS,))
            bias = split_heads(self.param(name, init, (heads * head_dim,), self.param_dtype).astype(self.dtype))
            return over_leading_axes(bias, 4)  # [1, 1, H, D], added to q [B, T, H, D]

        q = split_heads(dense(heads * head_dim, (axes.EMBED, axes.HEADS), self.use_bias, "q_proj")(x))
        k = split_heads(dense(heads * head_dim, (axes.EMBED, axes.KV_HEADS), self.use_bias, "k_proj")(x))
        v = split_heads(dense(heads * head_dim, (axes.EMBED, axes.KV_HEADS), self.use_bias, "v_proj")(x))
        # Distances are shared by the whole batch: project the 2T-1 embeddings once, not per example.
        pos_k = split_heads(dense(heads * head_dim, (axes.EMBED, axes.HEADS), False, "pos_proj")(pos_emb))
        q = nn.with_logical_constraint(q, (axes.ACT_BATCH, axes.ACT_LENGTH, axes.ACT_HEADS, None))
        scale = head_dim**-0.5
        # Heads-leading [H, B, T, 2T-1] is the matmul's native output layout (no transpose before the shift).
        position_scores = jnp.einsum(
            "bthd,phd->hbtp", q + head_bias("pos_bias_v"), pos_k, preferred_element_type=jnp.float32
        )
        bias = rel_shift(position_scores).transpose(1, 0, 2, 3) * scale  # f32[B, H, T, T], added to the scores
        out = dot_product_attention(q + head_bias("pos_bias_u"), k, v, mask, bias=bias, scale=scale, impl=self.impl)
        return dense(features, (axes.HEADS, axes.EMBED), self.use_bias, "o_proj")(
            out.reshape(batch, length, heads * head_dim)
        )
