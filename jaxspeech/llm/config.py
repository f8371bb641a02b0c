"""The decoder LLM's configuration (Llama, Qwen2, SmolLM and relatives)."""

from __future__ import annotations

import dataclasses
from typing import Any

import jax.numpy as jnp

from jaxspeech.layers.options import check_block_options
from jaxspeech.layers.rope import RopeConfig


@dataclasses.dataclass(frozen=True)
class LLMConfig:
    """Shapes and switches of a decoder-only transformer LM.

    ``qkv_bias`` is Qwen2's bias on q/k/v; ``attention_bias`` (Llama's flag) adds it to q/k/v and o.
    ``dtype`` is the compute dtype, ``param_dtype`` the storage dtype. ``scan_layers`` stacks the
    layers' parameters on a leading ``layers`` axis and runs them with ``nn.scan``.

    ``vocab_multiple``: the token embedding and the output layer get ``padded_vocab_size`` rows, the
    next multiple of it, so that the vocabulary axis splits evenly over a tensor-parallel mesh axis
    (Llama-3's 128,256 tokens plus an audio placeholder make 128,257, which splits over nothing).
    The logits of the padding ids are -inf: no loss or search ever sees them.
    """

    vocab_size: int = 32000
    hidden_size: int = 512
    intermediate_size: int = 1376
    num_layers: int = 8
    num_heads: int = 8
    num_kv_heads: int = 8
    head_dim: int | None = None
    rms_norm_eps: float = 1e-6
    rope: RopeConfig = RopeConfig()
    qkv_bias: bool = False
    attention_bias: bool = False
    mlp_bias: bool = False
    hidden_act: str = "silu"
    tie_word_embeddings: bool = False
    max_position_embeddings: int = 4096
    initializer_range: float = 0.02
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32
    scan_layers: bool = True
    remat_policy: str = "none"
    attn_impl: str = "xla"
    vocab_multiple: int = 1

    def __post_init__(self):
        if self.num_heads % self.num_kv_heads:
            raise ValueError(f"num_heads ({self.num_heads}) must be a multiple of num_kv_heads ({self.num_kv_heads})")
        check_block_options(self.remat_policy, self.attn_impl)
        if self.head_dim is None and self.hidden_size % self.num_heads:
            raise ValueError(f"hidden_size ({self.hidden_size}) is not divisible by num_heads ({self.num_heads})")
        if self.vocab_multiple < 1:
            raise ValueError(f"vocab_multiple must be >= 1, got {self.vocab_multiple}")

    @property
    def padded_vocab_size(self) -> int:
        """Rows of the token embedding and the output layer: ``vocab_size`` rounded up to ``vocab_multiple``."""
        return -(-self.vocab_size // self.vocab_multiple) * self.vocab_multiple

    @property
    def resolved_head_dim(self) -> int:
        return self.head_dim or self.hidden_size // self.num_heads

    def replace(self, **changes) -> "LLMConfig":
        return dataclasses.replace(self, **changes)
