"""Window-level Q-Former (SALMONN): learned queries read fixed windows of encoder frames.

Frames are cut into windows of ``window`` frames every ``window_stride`` frames (the last window is
zero-padded); each window's ``num_queries`` queries go through pre-norm blocks of self-attention
among the queries, cross-attention to the window's valid frames, and an MLP, then a Dense to the
LLM width. Output length = ceil(T / window_stride) * num_queries; windows past a clip's length are
invalid, and a window's padded frames are masked, so padding never changes a valid output.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import linen as nn

from jaxspeech.connectors.config import QFormerConnectorConfig
from jaxspeech.connectors.projector import connector_output
from jaxspeech.layers import axes
from jaxspeech.layers.attention import Attention
from jaxspeech.layers.dense import Dense
from jaxspeech.kernels.masks import MaskSpec
from jaxspeech.layers.mlp import MLP
from jaxspeech.layers.norms import LayerNorm


def window_frames(x: jax.Array, lengths: jax.Array, window: int, stride: int) -> tuple[jax.Array, jax.Array]:
    """x f[B, T, E] -> (windows f[B, W, window, E], valid frames per window i32[B, W]), W = ceil(T / stride)."""
    batch, frames, _ = x.shape
    num_windows = -(-frames // stride)
    padded = (num_windows - 1) * stride + window
    x = jnp.pad(x, ((0, 0), (0, max(padded - frames, 0)), (0, 0)))
    starts = jnp.arange(num_windows) * stride
    index = starts[:, None] + jnp.arange(window)[None, :]  # [W, window]
    windows = x[:, index]  # [B, W, window, E]
    valid = jnp.clip(lengths[:, None] - starts[None, :], 0, window).astype(jnp.int32)
    return windows, valid


class QFormerBlock(nn.Module):
    """queries f[N, Q, H] + frames f[N, window, H] -> queries f[N, Q, H]."""

    config: QFormerConnectorConfig

    @nn.compact
    def __call__(self, queries: jax.Array, frames: jax.Array, frame_lengths: jax.Array) -> jax.Array:
        c = self.config
        norm = lambda name: LayerNorm(1e-5, True, c.dtype, c.param_dtype, name=name)
        head_dim = c.size // c.num_heads
        attention = lambda name: Attention(
            features=c.size,
            num_heads=c.num_heads,
            num_kv_heads=c.num_heads,
            head_dim=head_dim,
            q_bias=True,
            k_bias=True,
            v_bias=True,
            o_bias=True,
            impl=c.attn_impl,
            dtype=c.dtype,
            param_dtype=c.param_dtype,
            name=name,
        )
        queries = queries + attention("self_attn")(norm("self_attn_norm")(queries))[0]
        cross, _ = attention("cross_attn")(
            norm("cross_attn_norm")(queries), frames, mask=MaskSpec(kv_lengths=frame_lengths)
        )
        queries = queries + cross
        mlp = MLP(c.ffn_size, "gelu", True, dtype=c.dtype, param_dtype=c.param_dtype, name="mlp")
        return queries + mlp(norm("mlp_norm")(queries))


class WindowQFormer(nn.Module):
    """(x f[B, T, E], lengths i32[B]) -> (y f[B, ceil(T / stride) * Q, D], lengths i32[B])."""

    config: QFormerConnectorConfig

    @nn.compact
    def __call__(self, x: jax.Array, lengths: jax.Array, target_rms: jax.Array | None = None):
        c = self.config
        batch = x.shape[0]
        frames = Dense(c.size, (axes.EMBED, axes.MLP), True, c.dtype, c.param_dtype, name="frame_proj")(
            LayerNorm(1e-5, True, c.dtype, c.param_dtype, name="frame_norm")(x)
        )
        windows, valid = window_frames(frames, lengths, c.window, c.window_stride)
        num_windows = windows.shape[1]
        flat_windows = windows.reshape(batch * num_windows, c.window, c.size)
        flat_valid = valid.reshape(-1)
        queries = self.param(
            "queries",
            nn.with_logical_partitioning(nn.initializers.normal(0.02), (axes.QUERIES, axes.EMBED)),
            (c.num_queries, c.size),
            c.param_dtype,
        )
        q = jnp.broadcast_to(queries.astype(c.dtype), (batch * num_windows, c.num_queries, c.size))
        for i in range(c.num_layers):
            q = QFormerBlock(c, name=f"blocks_{i}")(q, flat_windows, flat_valid)
        q = LayerNorm(1e-5, True, c.dtype, c.param_dtype, name="final_norm")(q)
        y = Dense(c.output_size, (axes.MLP, axes.EMBED), True, c.dtype, c.param_dtype, name="out_proj")(q)
        y = y.reshape(batch, num_windows * c.num_queries, c.output_size)
        return connector_output(y, lengths, c, target_rms)
