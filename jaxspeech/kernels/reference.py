"""Reference attention in plain jnp: the semantics every other backend must reproduce.

Shapes: q f[B, T, H, D]; k, v f[B, S, K, D] with H a multiple of K (MHA K=H, GQA, MQA K=1);
optional additive ``bias`` f[B or 1, H or 1, T, S]. Scores, softmax and the weighted sum are
accumulated in float32; query rows with no allowed key return exactly 0.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxspeech.kernels.masks import MaskSpec, dense_mask


def reference_attention(
    q: jax.Array,
    k: jax.Array,
    v: jax.Array,
    mask: MaskSpec | None = None,
    *,
    bias: jax.Array | None = None,
    scale: float | None = None,
) -> jax.Array:
    """Returns f[B, T, H, D] in q's dtype."""
    return head_major_kv_attention(q, k.transpose(0, 2, 1, 3), v.transpose(0, 2, 1, 3), mask, bias=bias, scale=scale)


def head_major_kv_attention(
    q: jax.Array,
    k: jax.Array,
    v: jax.Array,
    mask: MaskSpec | None = None,
    *,
    bias: jax.Array | None = None,
    scale: float | None = None,
) -> jax.Array:
    """``reference_attention`` with head-major keys and values: q f[B, T, H, D], k/v f[B, K, S, D]
    -> f[B, T, H, D] in q's dtype.

    Both products are plain batched matmuls over (B, K) on operands that lie as they are read
    (query groups folded into the query axis, [B, K, G*T, D]); the softmax is normalised after the
    weighted sum (a division of [T, D] values instead of [T, S] weights).
    """
    batch, q_len, num_heads, head_dim = q.shape
    num_kv_heads, kv_len = k.shape[1], k.shape[2]
    if num_heads % num_kv_heads:
        raise ValueError(f"query heads ({num_heads}) must be a multiple of key/value heads ({num_kv_heads})")
    groups = num_heads // num_kv_heads
    scale = head_dim**-0.5 if scale is None else scale
    if scale <= 0:
        raise ValueError(f"attention scale must be positive, got {scale}")
    q_folded = q.reshape(batch, q_len, num_kv_heads, groups, head_dim).transpose(0, 2, 3, 1, 4)
    q_folded = q_folded.reshape(batch, num_kv_heads, groups * q_len, head_dim)
    # Scores stay 4-D [B, K, G*T, S] (a 5-D view costs XLA:CPU a relayout copy of all of them).
    scores = jnp.einsum("bkqd,bksd->bkqs", q_folded, k, preferred_element_type=jnp.float32)
    exp_scale = scale  # without a bias the scale rides on the exponent: no scaled copy of the scores
    if bias is not None:
        bias = jnp.broadcast_to(bias.astype(jnp.float32), (bias.shape[0], num_heads, q_len, kv_len))
        scores = scores * scale + bias.reshape(bias.shape[0], num_kv_heads, groups * q_len, kv_len)
        exp_scale = 1.0
    if mask is not None:
        allowed = dense_mask(mask, batch, q_len, kv_len)[:, None, None, :, :]
        allowed = jnp.broadcast_to(allowed, (batch, 1, groups, q_len, kv_len)).reshape(batch, 1, groups * q_len, kv_len)
        scores = jnp.where(allowed, scores, -jnp.inf)
    row_max = jnp.max(scores, axis=-1, keepdims=True)
    row_max = jnp.where(jnp.isfinite(row_max), row_max, 0.0)
    weights = jnp.exp((scores - row_max) * exp_scale)  # masked keys: exp(-inf) = 0
    denom = jnp.sum(weights, axis=-1, keepdims=True)
    out = jnp.einsum("bkqs,bksd->bkqd", weights.astype(v.dtype), v, preferred_element_type=jnp.float32)
    out = out / jnp.where(denom > 0, denom, 1.0)  # rows with no allowed key: 0 / 1
    out = out.reshape(batch, num_kv_heads, groups, q_len, head_dim).transpose(0, 3, 1, 2, 4)
    return out.reshape(batch, q_len, num_heads, head_dim).astype(q.dtype)
