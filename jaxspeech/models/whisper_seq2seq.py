"""Whisper encoder-decoder (the ASR baseline, and a reference for cross-attention fusion).

``WhisperSeq2Seq`` entry points (``model.apply(params, ..., method=...)``):
  * ``encode(features f32[B, T, n_mels], lengths i32[B]) -> WhisperEncoderOutput``
  * ``decode(tokens i32[B, L], encoder_out f[B, S, D], encoder_lengths i32[B]) -> logits f32[B, L, V]``
  * ``__call__(features, lengths, tokens) -> logits f32[B, L, V]`` (teacher forcing)
  * ``init_cache(batch, max_length, encoder_length) -> WhisperCache`` (zeros; no parameters needed)
  * ``prefill(encoder_out, encoder_lengths, tokens i32[B, L], cache) -> (logits f32[B, L, V], cache)``:
    computes each layer's cross-attention K/V once and stores them in the cache with the prompt's
    self-attention K/V;
  * ``extend(token i32[B], cache) -> (logits f32[B, V], cache)``: one decoding step.

The decoder has learned positions, a token embedding tied to the output projection, pre-LN blocks
(causal self-attention, cross-attention, GELU MLP) and a final LayerNorm. All rows of a batch share
the cache write index (Whisper prompts have one length), so positions are ``index + arange(L)``.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
from flax import linen as nn
from flax import struct

from jaxspeech.encoders.whisper import HIDDEN_AXES, WhisperEncoder, WhisperEncoderConfig, WhisperEncoderOutput
from jaxspeech.layers import axes
from jaxspeech.layers.attention import Attention
from jaxspeech.layers.embeddings import Embed
from jaxspeech.kernels.masks import MaskSpec
from jaxspeech.layers.mlp import MLP
from jaxspeech.layers.norms import LayerNorm
from jaxspeech.layers.options import check_block_options, check_heads
from jaxspeech.layers.remat import remat, scan_layers


@dataclasses.dataclass(frozen=True)
class WhisperDecoderConfig:
    """Shapes and switches of the Whisper text decoder (defaults: whisper-base, multilingual vocab)."""

    vocab_size: int = 51865
    d_model: int = 512
    num_layers: int = 6
    num_heads: int = 8
    ffn_dim: int = 2048
    max_target_positions: int = 448
    layer_norm_eps: float = 1e-5
    init_std: float = 0.02
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32
    attn_impl: str = "xla"
    scan_layers: bool = False
    remat_policy: str = "none"

    def __post_init__(self):
        check_heads(self.d_model, self.num_heads)
        check_block_options(self.remat_policy, self.attn_impl)

    @property
    def head_dim(self) -> int:
        return self.d_model // self.num_heads

    def replace(self, **changes) -> "WhisperDecoderConfig":
        return dataclasses.replace(self, **changes)


@dataclasses.dataclass(frozen=True)
class WhisperConfig:
    """An encoder and a decoder of the same width."""

    encoder: WhisperEncoderConfig = WhisperEncoderConfig()
    decoder: WhisperDecoderConfig = WhisperDecoderConfig()

    def __post_init__(self):
        if self.encoder.d_model != self.decoder.d_model:
            raise ValueError(f"encoder d_model {self.encoder.d_model} != decoder d_model {self.decoder.d_model}")

    def replace(self, **changes) -> "WhisperConfig":
        return dataclasses.replace(self, **changes)

    def with_options(self, **options) -> "WhisperConfig":
        """The same shapes with ``options`` (dtype, param_dtype, attn_impl, scan_layers, remat_policy) on both halves."""
        return WhisperConfig(self.encoder.replace(**options), self.decoder.replace(**options))


# (d_model, layers, heads) of the released checkpoints; ffn_dim = 4 * d_model everywhere.
WHISPER_SIZES = {
    "tiny": (384, 4, 6),
    "base": (512, 6, 8),
    "small": (768, 12, 12),
    "medium": (1024, 24, 16),
    "large": (1280, 32, 20),
}


def whisper_config(size: str, n_mels: int = 80, vocab_size: int = 51865, **options: Any) -> WhisperConfig:
    """The architecture of a released Whisper size (large-v3: ``n_mels=128, vocab_size=51866``)."""
    if size not in WHISPER_SIZES:
        raise ValueError(f"unknown Whisper size {size!r}; expected one of {sorted(WHISPER_SIZES)}")
    width, layers, heads = WHISPER_SIZES[size]
    encoder = WhisperEncoderConfig(n_mels=n_mels, d_model=width, num_layers=layers, num_heads=heads, ffn_dim=4 * width)
    decoder = WhisperDecoderConfig(vocab_size=vocab_size, d_model=width, num_layers=layers, num_heads=heads, ffn_dim=4 * width)
    return WhisperConfig(encoder, decoder).with_options(**options)


@struct.dataclass
class WhisperCache:
    """Decoder state for incremental decoding. Batch on axis 0 of every array but ``index``.

    self_k, self_v f[B, layers, Lmax, H, Dh]; cross_k, cross_v f[B, layers, S, H, Dh] (computed
    once per utterance by ``prefill``); encoder_lengths i32[B]; index i32[] (next slot, shared).
    """

    self_k: jax.Array
    self_v: jax.Array
    cross_k: jax.Array
    cross_v: jax.Array
    encoder_lengths: jax.Array
    index: jax.Array

    @property
    def max_length(self) -> int:
        return self.self_k.shape[2]


def init_cache(config: WhisperConfig, batch: int, max_length: int, encoder_length: int | None = None) -> WhisperCache:
    """Zeros for ``batch`` rows, ``max_length`` decoder tokens (prompt included) and ``encoder_length``
    encoder frames (default: the full ``max_source_positions``)."""
    d = config.decoder
    if max_length > d.max_target_positions:
        raise ValueError(f"cache length {max_length} exceeds the decoder's {d.max_target_positions} positions")
    encoder_length = config.encoder.max_source_positions if encoder_length is None else encoder_length
    self_shape = (batch, d.num_layers, max_length, d.num_heads, d.head_dim)
    cross_shape = (batch, d.num_layers, encoder_length, d.num_heads, d.head_dim)
    return WhisperCache(
        self_k=jnp.zeros(self_shape, d.dtype),
        self_v=jnp.zeros(self_shape, d.dtype),
        cross_k=jnp.zeros(cross_shape, d.dtype),
        cross_v=jnp.zeros(cross_shape, d.dtype),
        encoder_lengths=jnp.zeros((batch,), jnp.int32),
        index=jnp.zeros((), jnp.int32),
    )


class WhisperDecoderBlock(nn.Module):
    """x + self_attn(LN(x)); x + cross_attn(LN(x), encoder); x + mlp(LN(x)).

    ``layer_cache`` is None (teacher forcing) or a dict with self_k/self_v f[B, Lmax, H, Dh] and
    cross_k/cross_v f[B, S, H, Dh]. Cross K/V are projected from ``encoder_out`` when it is given
    (and stored in the returned cache), otherwise read from the cache.
    """

    config: WhisperDecoderConfig

    @nn.compact
    def __call__(self, x, encoder_out, self_mask, cross_mask, layer_cache, cache_index):
        c = self.config
        norm = lambda name: LayerNorm(c.layer_norm_eps, True, c.dtype, c.param_dtype, name=name)
        attention = lambda name: Attention(
            features=c.d_model,
            num_heads=c.num_heads,
            num_kv_heads=c.num_heads,
            head_dim=c.head_dim,
            q_bias=True,
            k_bias=False,
            v_bias=True,
            o_bias=True,
            impl=c.attn_impl,
            dtype=c.dtype,
            param_dtype=c.param_dtype,
            name=name,
        )
        self_cache = None if layer_cache is None else {"k": layer_cache["self_k"], "v": layer_cache["self_v"]}
        attn_out, self_cache = attention("self_attn")(
            norm("self_attn_layer_norm")(x), mask=self_mask, cache=self_cache, cache_index=cache_index
        )
        x = nn.with_logical_constraint(x + attn_out, HIDDEN_AXES)

        cross_attention = attention("encoder_attn")
        if encoder_out is not None:
            cross_kv = cross_attention.project_kv(encoder_out)
        else:
            cross_kv = (layer_cache["cross_k"].astype(c.dtype), layer_cache["cross_v"].astype(c.dtype))
        cross_out, _ = cross_attention(norm("encoder_attn_layer_norm")(x), kv=cross_kv, mask=cross_mask)
        x = nn.with_logical_constraint(x + cross_out, HIDDEN_AXES)

        mlp = MLP(c.ffn_dim, "gelu", True, dtype=c.dtype, param_dtype=c.param_dtype, name="mlp")
        x = nn.with_logical_constraint(x + mlp(norm("final_layer_norm")(x)), HIDDEN_AXES)
        if layer_cache is None:
            return x, None
        cache_dtype = layer_cache["self_k"].dtype
        return x, {
            "self_k": self_cache["k"],
            "self_v": self_cache["v"],
            "cross_k": cross_kv[0].astype(cache_dtype),
            "cross_v": cross_kv[1].astype(cache_dtype),
        }


class WhisperDecoder(nn.Module):
    """tokens i32[B, L] (+ encoder states, optional cache) -> (logits f32[B, L, V], cache)."""

    config: WhisperDecoderConfig

    def setup(self):
        c = self.config
        init = nn.initializers.normal(c.init_std)
        self.embed_tokens = Embed(c.vocab_size, c.d_model, c.dtype, c.param_dtype, init)
        self.embed_positions = self.param(
            "embed_positions",
            nn.with_logical_partitioning(init, (axes.POSITIONS, axes.EMBED)),
            (c.max_target_positions, c.d_model),
            c.param_dtype,
        )
        block = remat(WhisperDecoderBlock, c.remat_policy)
        if c.scan_layers:
            broadcast = nn.broadcast
            stack = scan_layers(block, c.num_layers, in_axes=(broadcast, broadcast, broadcast, 1, broadcast), out_axes=1)
            self.layers = stack(c)
        else:
            self.layers = [block(c) for _ in range(c.num_layers)]
        self.layer_norm = LayerNorm(c.layer_norm_eps, True, c.dtype, c.param_dtype)

    def __call__(
        self,
        tokens: jax.Array,
        encoder_out: jax.Array | None,
        encoder_lengths: jax.Array,
        cache: WhisperCache | None = None,
    ) -> tuple[jax.Array, WhisperCache | None]:
        c = self.config
        batch, length = tokens.shape
        if length > c.max_target_positions:
            raise ValueError(f"{length} decoder tokens exceed the decoder's {c.max_target_positions} positions")
        if encoder_out is None and cache is None:
            raise ValueError("the decoder needs encoder_out, or a cache holding the cross-attention K/V")
        start = jnp.zeros((), jnp.int32) if cache is None else cache.index
        positions = jax.lax.dynamic_slice_in_dim(self.embed_positions, start, length, axis=0)
        x = self.embed_tokens(tokens) + positions.astype(c.dtype)[None]
        x = nn.with_logical_constraint(x, HIDDEN_AXES)
        cross_mask = MaskSpec(kv_lengths=encoder_lengths)
        if cache is None:
            self_mask = MaskSpec(causal=True)
            stacked = None
        else:
            q_positions = start + jnp.arange(length, dtype=jnp.int32)
            self_mask = MaskSpec(causal=True, q_positions=jnp.broadcast_to(q_positions[None], (batch, length)))
            stacked = {"self_k": cache.self_k, "self_v": cache.self_v, "cross_k": cache.cross_k, "cross_v": cache.cross_v}

        if c.scan_layers:
            x, stacked = self.layers(x, encoder_out, self_mask, cross_mask, stacked, start)
        else:
            per_layer = []
            for i, layer in enumerate(self.layers):
                layer_cache = None if stacked is None else jax.tree.map(lambda a: a[:, i], stacked)
                x, layer_cache = layer(x, encoder_out, self_mask, cross_mask, layer_cache, start)
                per_layer.append(layer_cache)
            if stacked is not None:
                stacked = jax.tree.map(lambda *a: jnp.stack(a, axis=1), *per_layer)

        logits = self.embed_tokens.attend(self.layer_norm(x))
        logits = nn.with_logical_constraint(logits, (axes.ACT_BATCH, axes.ACT_LENGTH, axes.ACT_VOCAB))
        if cache is None:
            return logits, None
        new_cache = WhisperCache(**stacked, encoder_lengths=encoder_lengths, index=start + length)
        return logits, new_cache


class WhisperSeq2Seq(nn.Module):
    """Whisper encoder + decoder; parameters under ``encoder/`` and ``decoder/``."""

    config: WhisperConfig

    def setup(self):
        self.encoder = WhisperEncoder(self.config.encoder)
        self.decoder = WhisperDecoder(self.config.decoder)

    def encode(self, features: jax.Array, lengths: jax.Array | None = None, **kwargs) -> WhisperEncoderOutput:
        """features f32[B, T, n_mels], lengths i32[B] -> WhisperEncoderOutput (hidden f[B, S, D], lengths)."""
        return self.encoder(features, lengths, **kwargs)

    def decode(self, tokens: jax.Array, encoder_out: jax.Array, encoder_lengths: jax.Array) -> jax.Array:
        """Teacher-forced decoder: tokens i32[B, L], encoder_out f[B, S, D] -> logits f32[B, L, V]."""
        return self.decoder(tokens, encoder_out, encoder_lengths)[0]

    def __call__(self, features: jax.Array, lengths: jax.Array | None, tokens: jax.Array) -> jax.Array:
        """features f32[B, T, n_mels], lengths i32[B], tokens i32[B, L] -> logits f32[B, L, V]."""
        encoded = self.encode(features, lengths)
        return self.decode(tokens, encoded.hidden, encoded.lengths)

    def init_cache(self, batch: int, max_length: int, encoder_length: int | None = None) -> WhisperCache:
        """An empty ``WhisperCache`` (see ``init_cache``)."""
        return init_cache(self.config, batch, max_length, encoder_length)

    def prefill(
        self, encoder_out: jax.Array, encoder_lengths: jax.Array, tokens: jax.Array, cache: WhisperCache
    ) -> tuple[jax.Array, WhisperCache]:
        """Prompt tokens i32[B, L] -> (logits f32[B, L, V], cache holding the prompt and cross K/V)."""
        if cache.cross_k.shape[2] != encoder_out.shape[1]:
            raise ValueError(f"cache holds {cache.cross_k.shape[2]} encoder frames, encoder_out has {encoder_out.shape[1]}")
        return self.decoder(tokens, encoder_out, encoder_lengths, cache)

    def extend(self, token: jax.Array, cache: WhisperCache) -> tuple[jax.Array, WhisperCache]:
        """One step: token i32[B] -> (logits f32[B, V], cache)."""
        logits, cache = self.decoder(token[:, None], None, cache.encoder_lengths, cache)
        return logits[:, 0], cache


@dataclasses.dataclass(frozen=True)
class WhisperGenerationConfig:
    """Special tokens and suppression lists of a checkpoint (HF ``generation_config.json``).

    ``lang_to_id`` maps language tokens (``"<|en|>"``) to ids; ``task_to_id`` maps ``"transcribe"`` /
    ``"translate"`` to ids. ``suppress_tokens`` are never generated; ``begin_suppress_tokens`` not
    as the first generated token.
    """

    decoder_start_token_id: int
    eos_token_id: int
    pad_token_id: int
    no_timestamps_token_id: int | None = None
    is_multilingual: bool = False
    lang_to_id: dict[str, int] = dataclasses.field(default_factory=dict)
    task_to_id: dict[str, int] = dataclasses.field(default_factory=dict)
    suppress_tokens: tuple[int, ...] = ()
    begin_suppress_tokens: tuple[int, ...] = ()

    def language_token(self, language: str) -> int:
        """Id of ``language`` given as a code (``"en"``) or token (``"<|en|>"``)."""
        token = language if language.startswith("<|") else f"<|{language.lower()}|>"
        if token not in self.lang_to_id:
            known = sorted(t[2:-2] for t in self.lang_to_id)
            raise ValueError(f"unknown language {language!r}; this checkpoint knows {known}")
        return self.lang_to_id[token]

    def prompt(self, language: str | None = "en", task: str = "transcribe", timestamps: bool = False) -> tuple[int, ...]:
        """Decoder prompt, e.g. ``<|startoftranscript|><|en|><|transcribe|><|notimestamps|>``.

        English-only checkpoints take no language or task token.
        """
        tokens = [self.decoder_start_token_id]
        if self.is_multilingual:
            if language is None:
                raise ValueError("a multilingual Whisper needs a language (language detection is not implemented)")
            if task not in self.task_to_id:
                raise ValueError(f"unknown task {task!r}; expected one of {sorted(self.task_to_id)}")
            tokens += [self.language_token(language), self.task_to_id[task]]
        if not timestamps and self.no_timestamps_token_id is not None:
            tokens.append(self.no_timestamps_token_id)
        return tuple(tokens)
