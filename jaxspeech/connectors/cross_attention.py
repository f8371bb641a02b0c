"""Gated cross-attention (Flamingo / NVLM-X): LLM hidden states read an audio memory.

``GatedCrossAttention`` is handed to the ``DecoderLM`` as its ``cross_attention`` hook and acts
before every ``every``-th LLM layer (0, every, 2*every, ...):
    x = x + tanh(g_attn) * CrossAttn(LN(x), memory);  x = x + tanh(g_mlp) * MLP(LN(x))
with both gates initialised to ``gate_init`` (0 by default, so an untrained stack leaves a pretrained
LLM's output unchanged; an LLM trained from scratch reads sooner with open gates, e.g. 1). Memory
keys/values are projected once per utterance (``project_memory``) and reused at every step.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
from flax import linen as nn
from flax import struct

from jaxspeech.layers import axes
from jaxspeech.layers.attention import Attention
from jaxspeech.kernels.masks import MaskSpec
from jaxspeech.layers.mlp import GatedMLP
from jaxspeech.layers.norms import RMSNorm


@dataclasses.dataclass(frozen=True)
class CrossAttentionConfig:
    """Placement (``every`` LLM layers, ``num_layers`` LLM layers in all) and block shapes."""

    hidden_size: int = 512
    num_layers: int = 8  # of the LLM
    every: int = 4
    num_heads: int = 8
    num_kv_heads: int = 8
    intermediate_size: int = 1024
    rms_norm_eps: float = 1e-6
    gate_init: float = 0.0  # both gates start at tanh(gate_init)
    attn_impl: str = "xla"
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @property
    def num_blocks(self) -> int:
        return -(-self.num_layers // self.every)

    def block_at(self, layer: int) -> int | None:
        """Index of the block placed before LLM layer ``layer`` (None if there is none)."""
        return layer // self.every if layer % self.every == 0 else None


@struct.dataclass
class AudioMemory:
    """Projected memory for every block: k, v f[B, blocks, M, K, D]; segment_ids i32[B, M] (0 = padding)."""

    k: jax.Array
    v: jax.Array
    segment_ids: jax.Array


class GatedCrossAttentionBlock(nn.Module):
    config: CrossAttentionConfig

    def setup(self):
        c = self.config
        self.attn_norm = RMSNorm(c.rms_norm_eps, c.dtype, c.param_dtype)
        self.attn = Attention(
            features=c.hidden_size,
            num_heads=c.num_heads,
            num_kv_heads=c.num_kv_heads,
            head_dim=c.hidden_size // c.num_heads,
            impl=c.attn_impl,
            dtype=c.dtype,
            param_dtype=c.param_dtype,
        )
        self.mlp_norm = RMSNorm(c.rms_norm_eps, c.dtype, c.param_dtype)
        self.mlp = GatedMLP(c.intermediate_size, "silu", False, c.dtype, c.param_dtype)
        gate = lambda: nn.with_logical_partitioning(nn.initializers.constant(c.gate_init), ())
        self.attn_gate = self.param("attn_gate", gate(), (), c.param_dtype)
        self.mlp_gate = self.param("mlp_gate", gate(), (), c.param_dtype)

    def project(self, memory: jax.Array) -> tuple[jax.Array, jax.Array]:
        """memory f[B, M, D] -> (k, v) f[B, M, K, Dh]."""
        return self.attn.project_kv(memory)

    def __call__(self, x: jax.Array, kv: tuple[jax.Array, jax.Array], segment_ids: jax.Array) -> jax.Array:
        """x f[B, L, D] -> f[B, L, D]; every query sees every valid memory position."""
        batch, length = x.shape[:2]
        mask = MaskSpec(q_segment_ids=jnp.ones((batch, length), jnp.int32), kv_segment_ids=segment_ids)
        attended, _ = self.attn(self.attn_norm(x), kv=kv, mask=mask)
        x = x + jnp.tanh(self.attn_gate).astype(x.dtype) * attended
        return x + jnp.tanh(self.mlp_gate).astype(x.dtype) * self.mlp(self.mlp_norm(x))


class GatedCrossAttention(nn.Module):
    """The stack of gated blocks; called by the decoder before each LLM layer."""

    config: CrossAttentionConfig

    def setup(self):
        self.blocks = [GatedCrossAttentionBlock(self.config) for _ in range(self.config.num_blocks)]

    def project_memory(self, memory: jax.Array, segment_ids: jax.Array) -> AudioMemory:
        """memory f[B, M, D] (valid where segment_ids != 0) -> AudioMemory for every block."""
        kvs = [block.project(memory) for block in self.blocks]
        stack = lambda i: jnp.stack([kv[i] for kv in kvs], axis=1)
        return AudioMemory(k=stack(0), v=stack(1), segment_ids=segment_ids.astype(jnp.int32))

    def __call__(self, layer: int, x: jax.Array, memory: AudioMemory) -> jax.Array:
        block = self.config.block_at(layer)
        if block is None:
            return x
        x = self.blocks[block](x, (memory.k[:, block], memory.v[:, block]), memory.segment_ids)
        return nn.with_logical_constraint(x, (axes.ACT_BATCH, axes.ACT_LENGTH, axes.ACT_EMBED))
