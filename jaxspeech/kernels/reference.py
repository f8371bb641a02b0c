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
    batch, q_len, num_heads, head_dim = q.shape
    kv_len, num_kv_heads = k.shape[1], k.shape[2]
    if num_heads % num_kv_heads:
        raise ValueError(f"query heads ({num_heads}) must be a multiple of key/value heads ({num_kv_heads})")
    groups = num_heads // num_kv_heads
    scale = head_dim**-0.5 if scale is None else scale
    # Query groups are folded into the query axis ([B, K, G*T, D]) so that both products are plain
    # batched matmuls over (B, K): XLA:CPU runs 5-D grouped einsums 4-10x slower.
    q_folded = q.reshape(batch, q_len, num_kv_heads, groups, head_dim).transpose(0, 2, 3, 1, 4)
    q_folded = q_folded.reshape(batch, num_kv_heads, groups * q_len, head_dim)
    scores = jnp.einsum("bkqd,bskd->bkqs", q_folded, k, preferred_element_type=jnp.float32)
    scores = scores.reshape(batch, num_kv_heads, groups, q_len, kv_len) * scale
    if bias is not None:
        bias = jnp.broadcast_to(bias.astype(jnp.float32), (bias.shape[0], num_heads, q_len, kv_len))
        scores = scores + bias.reshape(bias.shape[0], num_kv_heads, groups, q_len, kv_len)
    allowed = dense_mask(mask, batch, q_len, kv_len)[:, None, None, :, :]
    scores = jnp.where(allowed, scores, -jnp.inf)
    row_max = jnp.max(scores, axis=-1, keepdims=True)
    row_max = jnp.where(jnp.isfinite(row_max), row_max, 0.0)
    weights = jnp.exp(scores - row_max)
    denom = jnp.sum(weights, axis=-1, keepdims=True)
    weights = weights / jnp.where(denom > 0, denom, 1.0)
    weights = weights.astype(v.dtype).reshape(batch, num_kv_heads, groups * q_len, kv_len)
    out = jnp.einsum("bkqs,bskd->bkqd", weights, v, preferred_element_type=jnp.float32)
    out = out.reshape(batch, num_kv_heads, groups, q_len, head_dim).transpose(0, 3, 1, 2, 4)
    return out.reshape(batch, q_len, num_heads, head_dim).astype(q.dtype)
