"""Whisper encoder-decoder (the ASR baseline, and a reference for cross-attention fusion).

``WhisperSeq2Seq`` entry points (``model.apply(params, ..., method=...)``):
  * ``encode(features f32[B, T, n_mels], lengths i32[B]) -> WhisperEncoderOutput``
  * ``decode(tokens i32[B, L], encoder_out f[B, S, D], encoder_lengths i32[B]) -> logits f32[B, L, V]``
  * ``__call__(features, lengths, tokens) -> logits f32[B, L, V]`` (teacher forcing)
  * ``init_cache(batch, max_length) -> WhisperCache`` (zeros; no parameters needed)
  * ``prefill(encoder_out, encoder_lengths, tokens i32[B, L], cache) -> (logits f32[B, L, V], cache, cross)``:
    the prompt's self-attention K/V in the cache, and each layer's cross-attention K/V projected
    once (``CrossKV``);
  * ``extend(token i32[R], cache, cross) -> (logits f32[R, V], cache)``: one decoding step of R
    hypotheses, R / B consecutive rows per utterance of ``cross`` (beams share its K/V).

Incremental decoding runs the decoder's layers unrolled (``unrolled`` converts scanned params).

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
from jaxspeech.llm.kv_cache import reorder_recent_slots
from jaxspeech.llm.layout import unstack_layers


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
    decoder = WhisperDecoderConfig(
        vocab_size=vocab_size, d_model=width, num_layers=layers, num_heads=heads, ffn_dim=4 * width
    )
    return WhisperConfig(encoder, decoder).with_options(**options)


@struct.dataclass
class WhisperCache:
    """Self-attention keys and values of R hypotheses for incremental decoding: k, v are tuples (one
    entry per layer, so a step updates each in place) of head-major f[R, H, Lmax, Dh] (the layout of
    ``Attention``'s cache); index i32[] (next slot, shared by the rows)."""

    k: tuple[jax.Array, ...]
    v: tuple[jax.Array, ...]
    index: jax.Array

    @property
    def max_length(self) -> int:
        return self.k[0].shape[2]

    def reorder_rows(self, rows: jax.Array, recent: jax.Array, width: int) -> "WhisperCache":
        """Rows i32[R] gathered, where rows differ: the slots of the last ``recent`` i32[] steps (the
        rows reordered among themselves, beams of one prompt, share every earlier slot), read as a
        window of ``width`` >= recent slots."""
        layers = len(self.k)
        kv = reorder_recent_slots((*self.k, *self.v), (2,) * (2 * layers), rows, self.index, recent, width)
        return self.replace(k=tuple(kv[:layers]), v=tuple(kv[layers:]))


@struct.dataclass
class CrossKV:
    """The cross-attention keys and values of B utterances, projected once by ``prefill`` and read
    by every step: k, v tuples (one per layer) of head-major f[B, H, S, Dh]; lengths i32[B] valid
    frames.

    The R = B * G hypotheses of a step come in G consecutive rows per utterance (G = 1 for greedy,
    the beams for beam search): their queries are folded into one query axis of length G, so
    every utterance's keys and values are read once per step, and are never copied per hypothesis."""

    k: tuple[jax.Array, ...]
    v: tuple[jax.Array, ...]
    lengths: jax.Array


def init_cache(config: WhisperConfig, batch: int, max_length: int) -> WhisperCache:
    """Zeros for ``batch`` rows and ``max_length`` decoder tokens (prompt included)."""
    d = config.decoder
    if max_length > d.max_target_positions:
        raise ValueError(f"cache length {max_length} exceeds the decoder's {d.max_target_positions} positions")
    zeros = lambda: tuple(jnp.zeros((batch, d.num_heads, max_length, d.head_dim), d.dtype) for _ in range(d.num_layers))
    return WhisperCache(k=zeros(), v=zeros(), index=jnp.zeros((), jnp.int32))


def unrolled(config: WhisperConfig, params: dict) -> tuple[WhisperConfig, dict]:
    """(config, params) with the decoder's layers unrolled (``layers_0``, ...), as incremental
    decoding runs them; returned unchanged when they already are."""
    if not config.decoder.scan_layers:
        return config, params
    inner = params["params"]
    decoder = unstack_layers({"params": inner["decoder"]}, config.decoder.num_layers)["params"]
    return (
        config.replace(decoder=config.decoder.replace(scan_layers=False)),
        {**params, "params": {**inner, "decoder": decoder}},
    )


class WhisperDecoderBlock(nn.Module):
    """x + self_attn(LN(x)); x + cross_attn(LN(x), encoder); x + mlp(LN(x)).

    ``__call__(x f[R, L, D], memory, self_mask, cross_mask, layer_cache, cache_index) -> (x, outputs)``.
    ``memory`` is the encoder output f[B, S, D] (its keys and values are projected here and returned
    in ``outputs``) or their projection (k, v) f[B, H, S, Dh] (head-major); the R rows of ``x`` are
    B groups of R / B consecutive rows. ``layer_cache`` is None (teacher forcing: ``outputs`` =
    (None, None)) or {"k", "v"} f[R, H, Lmax, Dh] (``outputs`` = (the updated layer cache, the
    projected (k, v) or None)).
    """

    config: WhisperDecoderConfig

    def setup(self):
        c = self.config
        norm = lambda: LayerNorm(c.layer_norm_eps, True, c.dtype, c.param_dtype)
        attention = lambda: Attention(
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
        )
        self.self_attn_layer_norm, self.self_attn = norm(), attention()
        self.encoder_attn_layer_norm, self.encoder_attn = norm(), attention()
        self.final_layer_norm = norm()
        self.mlp = MLP(c.ffn_dim, "gelu", True, dtype=c.dtype, param_dtype=c.param_dtype)

    def __call__(self, x, memory, self_mask, cross_mask, layer_cache, cache_index):
        attn_out, new_layer_cache = self.self_attn(
            self.self_attn_layer_norm(x), mask=self_mask, cache=layer_cache, cache_index=cache_index
        )
        x = nn.with_logical_constraint(x + attn_out, HIDDEN_AXES)

        head_major = lambda kv: tuple(a.transpose(0, 2, 1, 3) for a in kv)  # [B, S, H, Dh] <-> [B, H, S, Dh]
        projected = head_major(self.encoder_attn.project_kv(memory)) if not isinstance(memory, tuple) else None
        cross_kv = memory if projected is None else projected
        rows, length, width = x.shape
        sources = cross_kv[0].shape[0]
        # The R / B hypotheses of each utterance read its keys and values as one query block.
        queries = self.encoder_attn_layer_norm(x).reshape(sources, rows // sources * length, width)
        cross_out, _ = self.encoder_attn(queries, kv=head_major(cross_kv), mask=cross_mask)
        x = nn.with_logical_constraint(x + cross_out.reshape(rows, length, width), HIDDEN_AXES)

        x = nn.with_logical_constraint(x + self.mlp(self.final_layer_norm(x)), HIDDEN_AXES)
        if layer_cache is None:  # teacher forcing: nothing to keep
            return x, (None, None)
        return x, (new_layer_cache, projected)


class WhisperDecoder(nn.Module):
    """tokens i32[R, L] (+ encoder states or their projection, optional cache) -> (logits f32[R, L, V], outputs)."""

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
            stack = scan_layers(block, c.num_layers, in_axes=(broadcast, broadcast, broadcast, broadcast, broadcast))
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
        cross: CrossKV | None = None,
    ) -> tuple[jax.Array, WhisperCache | None, CrossKV | None]:
        """Teacher forcing (no cache), a prefill (cache and encoder_out: returns the projected
        ``CrossKV``) or a step (cache and ``cross``)."""
        c = self.config
        rows, length = tokens.shape
        if length > c.max_target_positions:
            raise ValueError(f"{length} decoder tokens exceed the decoder's {c.max_target_positions} positions")
        if (encoder_out is None) == (cross is None):
            raise ValueError("the decoder needs either encoder_out or the cross-attention keys and values")
        if cache is not None and c.scan_layers:
            raise ValueError(
                "incremental decoding runs the decoder's layers unrolled: convert (config, params) with "
                "jaxspeech.models.whisper_seq2seq.unrolled"
            )
        start = jnp.zeros((), jnp.int32) if cache is None else cache.index
        positions = jax.lax.dynamic_slice_in_dim(self.embed_positions, start, length, axis=0)
        x = self.embed_tokens(tokens) + positions.astype(c.dtype)[None]
        x = nn.with_logical_constraint(x, HIDDEN_AXES)
        cross_mask = MaskSpec(kv_lengths=encoder_lengths if cross is None else cross.lengths)
        if cache is None:
            self_mask = MaskSpec(causal=True)
        else:
            q_positions = start + jnp.arange(length, dtype=jnp.int32)
            self_mask = MaskSpec(causal=True, q_positions=jnp.broadcast_to(q_positions[None], (rows, length)))

        if c.scan_layers:
            x, _ = self.layers(x, encoder_out, self_mask, cross_mask, None, start)
            new_cache = new_cross = None
        else:
            keys, values, cross_keys, cross_values = [], [], [], []
            for i, layer in enumerate(self.layers):
                layer_cache = None if cache is None else {"k": cache.k[i], "v": cache.v[i]}
                memory = encoder_out if cross is None else (cross.k[i], cross.v[i])
                x, (layer_cache, projected) = layer(x, memory, self_mask, cross_mask, layer_cache, start)
                if layer_cache is not None:
                    keys.append(layer_cache["k"])
                    values.append(layer_cache["v"])
                if projected is not None:
                    cross_keys.append(projected[0])
                    cross_values.append(projected[1])
            new_cache = None if cache is None else WhisperCache(k=tuple(keys), v=tuple(values), index=start + length)
            new_cross = CrossKV(tuple(cross_keys), tuple(cross_values), encoder_lengths) if cross is None else cross

        logits = self.embed_tokens.attend(self.layer_norm(x))
        logits = nn.with_logical_constraint(logits, (axes.ACT_BATCH, axes.ACT_LENGTH, axes.ACT_VOCAB))
        return logits, new_cache, new_cross


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

    def init_cache(self, batch: int, max_length: int) -> WhisperCache:
        """An empty ``WhisperCache`` (see ``init_cache``)."""
        return init_cache(self.config, batch, max_length)

    def prefill(
        self, encoder_out: jax.Array, encoder_lengths: jax.Array, tokens: jax.Array, cache: WhisperCache
    ) -> tuple[jax.Array, WhisperCache, CrossKV]:
        """Prompt tokens i32[B, L] -> (logits f32[B, L, V], cache holding the prompt, the ``CrossKV``
        of encoder_out f[B, S, D])."""
        return self.decoder(tokens, encoder_out, encoder_lengths, cache)

    def extend(self, token: jax.Array, cache: WhisperCache, cross: CrossKV) -> tuple[jax.Array, WhisperCache]:
        """One step: token i32[R] -> (logits f32[R, V], cache); R is a multiple of ``cross``' B rows."""
        logits, cache, _ = self.decoder(token[:, None], None, None, cache, cross)
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

    def prompt(
        self, language: str | None = "en", task: str = "transcribe", timestamps: bool = False
    ) -> tuple[int, ...]:
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
