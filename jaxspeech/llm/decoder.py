"""Llama / Qwen2-family decoder LM as a pure-functional ``flax.linen`` module.

Entry points of ``DecoderLM``:
  * ``embed(tokens i32[B, L]) -> f[B, L, D]``
  * ``__call__(tokens | inputs_embeds, positions, segment_ids, bidir_ids, cache) -> (logits f32[B, L, V], cache)``
    — training forward when ``cache`` is None; prefill / extend when a ``KVCache`` is given.
  * ``logits(hidden f[B, L, D]) -> f32[B, L, V]``

V is ``config.padded_vocab_size``: the rows past ``vocab_size`` (padding for sharding) have -inf logits.

A ``cross_attention`` hook (e.g. ``jaxspeech.connectors.cross_attention.GatedCrossAttention``, owned
by the caller so its parameters stay outside ``llm/``) is called as ``hook(layer, x, memory)`` before
every layer; it needs the unrolled layout (``scan_layers=False``).

``segment_ids`` i32[B, L] mark padding (0) and packed examples (1, 2, ...); rotary ``positions``
default to each row's running count of non-padding tokens (so left or right padding leaves the real
tokens' positions unchanged). ``bidir_ids`` (0 = causal) let spans such as spliced audio attend to
themselves bidirectionally (prefix-LM).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import linen as nn

from jaxspeech.layers import axes
from jaxspeech.layers.attention import Attention
from jaxspeech.layers.dense import Dense
from jaxspeech.layers.embeddings import Embed
from jaxspeech.kernels.masks import MaskSpec
from jaxspeech.layers.mlp import GatedMLP
from jaxspeech.layers.norms import RMSNorm
from jaxspeech.layers.remat import remat, scan_layers
from jaxspeech.layers.rope import inverse_frequencies
from jaxspeech.llm.config import LLMConfig
from jaxspeech.llm.kv_cache import KVCache

HIDDEN_AXES = (axes.ACT_BATCH, axes.ACT_LENGTH, axes.ACT_EMBED)


class DecoderBlock(nn.Module):
    """Pre-norm block: x + attn(norm(x)); x + mlp(norm(x)). Returns (x, updated layer cache)."""

    config: LLMConfig

    @nn.compact
    def __call__(self, x, rope, mask, layer_cache, cache_index):
        c = self.config
        norm = lambda name: RMSNorm(c.rms_norm_eps, c.dtype, c.param_dtype, name=name)
        bias = c.qkv_bias or c.attention_bias
        attention = Attention(
            features=c.hidden_size,
            num_heads=c.num_heads,
            num_kv_heads=c.num_kv_heads,
            head_dim=c.resolved_head_dim,
            q_bias=bias,
            k_bias=bias,
            v_bias=bias,
            o_bias=c.attention_bias,
            impl=c.attn_impl,
            rope_interleaved=c.rope.interleaved,
            dtype=c.dtype,
            param_dtype=c.param_dtype,
            name="self_attn",
        )
        attn_out, layer_cache = attention(
            norm("input_layernorm")(x), mask=mask, rope=rope, cache=layer_cache, cache_index=cache_index
        )
        x = nn.with_logical_constraint(x + attn_out, HIDDEN_AXES)
        mlp = GatedMLP(c.intermediate_size, c.hidden_act, c.mlp_bias, c.dtype, c.param_dtype, name="mlp")
        x = nn.with_logical_constraint(x + mlp(norm("post_attention_layernorm")(x)), HIDDEN_AXES)
        return x, layer_cache


def default_positions(segment_ids: jax.Array, start: jax.Array | int = 0) -> jax.Array:
    """i32[B, L]: ``start`` + number of earlier non-padding tokens in the row (padding repeats it)."""
    counts = jnp.cumsum(segment_ids != 0, axis=1, dtype=jnp.int32)
    return jnp.asarray(start, jnp.int32).reshape(-1, 1) + jnp.maximum(counts - 1, 0)


class DecoderLM(nn.Module):
    """Token embeddings -> N decoder blocks -> final RMSNorm -> LM head (tied or untied)."""

    config: LLMConfig
    cross_attention: nn.Module | None = None

    def setup(self):
        c = self.config
        if self.cross_attention is not None and c.scan_layers:
            raise ValueError("a cross-attention hook needs the unrolled decoder: set the LLM's scan_layers=False")
        self.embed_tokens = Embed(
            c.padded_vocab_size, c.hidden_size, c.dtype, c.param_dtype, nn.initializers.normal(c.initializer_range)
        )
        block = remat(DecoderBlock, c.remat_policy)
        if c.scan_layers:
            scanned = scan_layers(
                block, c.num_layers, in_axes=(nn.broadcast, nn.broadcast, 1, nn.broadcast), out_axes=1
            )
            self.layers = scanned(c)
        else:
            self.layers = [block(c) for _ in range(c.num_layers)]
        self.norm = RMSNorm(c.rms_norm_eps, c.dtype, c.param_dtype)
        if not c.tie_word_embeddings:
            self.lm_head = Dense(
                c.padded_vocab_size,
                (axes.EMBED, axes.VOCAB),
                dtype=c.dtype,
                param_dtype=c.param_dtype,
                kernel_init=nn.initializers.normal(c.initializer_range),
            )

    def embed(self, tokens: jax.Array) -> jax.Array:
        """tokens i32[B, L] -> f[B, L, D]."""
        return self.embed_tokens(tokens)

    def logits(self, hidden: jax.Array) -> jax.Array:
        """Final-normed hidden f[B, L, D] -> f32[B, L, V] (-inf at the padding ids)."""
        c = self.config
        out = self.embed_tokens.attend(hidden) if c.tie_word_embeddings else self.lm_head(hidden)
        out = nn.with_logical_constraint(out.astype(jnp.float32), (axes.ACT_BATCH, axes.ACT_LENGTH, axes.ACT_VOCAB))
        if c.padded_vocab_size == c.vocab_size:
            return out
        return jnp.where(jnp.arange(c.padded_vocab_size) < c.vocab_size, out, -jnp.inf)

    def token_embeddings(self) -> jax.Array:
        """The embedding rows of the real tokens f[vocab_size, D] (without the padding)."""
        return self.embed_tokens.embedding[: self.config.vocab_size]

    def hidden_states(
        self,
        inputs_embeds: jax.Array,
        *,
        positions: jax.Array | None = None,
        segment_ids: jax.Array | None = None,
        bidir_ids: jax.Array | None = None,
        cache: KVCache | None = None,
        memory: Any = None,
    ) -> tuple[jax.Array, KVCache | None]:
        """inputs_embeds f[B, L, D] -> (final-normed hidden f[B, L, D], updated cache).

        ``memory`` is passed to the cross-attention hook (ignored without one)."""
        c = self.config
        batch, length = inputs_embeds.shape[:2]
        seg = jnp.ones((batch, length), jnp.int32) if segment_ids is None else segment_ids.astype(jnp.int32)
        if cache is None:
            if positions is None:
                positions = default_positions(seg)
            q_seg = kv_seg = None if segment_ids is None else seg
            mask = MaskSpec(
                causal=True, q_segment_ids=q_seg, kv_segment_ids=kv_seg, q_bidir_ids=bidir_ids, kv_bidir_ids=bidir_ids
            )
            cache_index = None
        else:
            if positions is None:
                positions = default_positions(seg, cache.next_positions)
            cache_index = cache.index
            kv_seg = jax.lax.dynamic_update_slice(cache.segment_ids, seg, (0, cache_index))
            slots = cache_index + jnp.arange(length, dtype=jnp.int32)
            kv_bidir = None
            if bidir_ids is not None:
                kv_bidir = jax.lax.dynamic_update_slice(jnp.zeros_like(cache.segment_ids), bidir_ids, (0, cache_index))
            mask = MaskSpec(
                causal=True,
                q_segment_ids=seg,
                kv_segment_ids=kv_seg,
                q_positions=jnp.broadcast_to(slots[None, :], (batch, length)),
                q_bidir_ids=bidir_ids,
                kv_bidir_ids=kv_bidir,
            )
        rope = (positions, jnp.asarray(inverse_frequencies(c.resolved_head_dim, c.rope)))
        x = nn.with_logical_constraint(inputs_embeds.astype(c.dtype), HIDDEN_AXES)
        if c.scan_layers:
            x, new_kv = self.layers(x, rope, mask, None if cache is None else cache.stacked_kv(), cache_index)
            if cache is not None:
                keys, values = (tuple(new_kv[n][:, i] for i in range(c.num_layers)) for n in ("k", "v"))
        else:
            keys, values = [], []
            for i, layer in enumerate(self.layers):
                if self.cross_attention is not None:
                    x = self.cross_attention(i, x, memory)
                x, layer_cache = layer(x, rope, mask, None if cache is None else cache.layer_kv(i), cache_index)
                if cache is not None:
                    keys.append(layer_cache["k"])
                    values.append(layer_cache["v"])
        new_cache = None
        if cache is not None:
            new_cache = cache.replace(
                k=tuple(keys),
                v=tuple(values),
                segment_ids=kv_seg,
                next_positions=positions[:, -1] + 1,
                index=cache_index + length,
            )
        return self.norm(x), new_cache

    def __call__(
        self,
        tokens: jax.Array | None = None,
        *,
        inputs_embeds: jax.Array | None = None,
        positions: jax.Array | None = None,
        segment_ids: jax.Array | None = None,
        bidir_ids: jax.Array | None = None,
        cache: KVCache | None = None,
        memory: Any = None,
    ) -> tuple[jax.Array, KVCache | None]:
        """tokens i32[B, L] or inputs_embeds f[B, L, D] -> (logits f32[B, L, V], updated cache)."""
        if (tokens is None) == (inputs_embeds is None):
            raise ValueError("pass exactly one of tokens or inputs_embeds")
        if inputs_embeds is None:
            inputs_embeds = self.embed(tokens)
        hidden, cache = self.hidden_states(
            inputs_embeds, positions=positions, segment_ids=segment_ids, bidir_ids=bidir_ids, cache=cache, memory=memory
        )
        return self.logits(hidden), cache
