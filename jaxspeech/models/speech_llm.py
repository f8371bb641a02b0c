"""The Speech LLM: audio encoder -> connector -> decoder LLM, in three fusion styles.

* ``decoder_only`` (SLAM-ASR, Qwen2-Audio, NVLM-D): the connector's outputs replace the audio
  placeholder tokens of the prompt, clip after clip, in order;
* ``cross_attention`` (Flamingo, NVLM-X): the prompt is text only; gated cross-attention blocks
  before every ``xattn.every``-th LLM layer read the audio as a memory;
* ``hybrid`` (NVLM-H): a few average-pooled audio tokens inline (``hybrid_pool`` frames each) plus
  the full-resolution memory through cross-attention.

Parameters live under ``encoder/``, ``connector/``, ``llm/``, ``xattn/`` (and ``ctc_head/``).

Inputs follow ``jaxspeech.types.Batch``: features f32[B, C, T, F] (C clips per row) with
feature_lengths i32[B, C] (0 = no clip), tokens i32[B, L] with the placeholder id repeated once per
audio embedding (``audio_token_count`` gives the span length), segment_ids i32[B, L] (0 = padding).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn
from flax import struct

from jaxspeech.connectors.config import ConnectorConfig, FrameStackConnectorConfig
from jaxspeech.connectors.cross_attention import AudioMemory, CrossAttentionConfig, GatedCrossAttention
from jaxspeech.connectors.ctc_compress import ctc_compress, labels_before, posteriors_per_token
from jaxspeech.connectors.projector import Projector, zero_padding
from jaxspeech.connectors.qformer import WindowQFormer
from jaxspeech.audio_tokens import FrameStack, downsampled_length
from jaxspeech.layers import axes
from jaxspeech.layers.dense import Dense
from jaxspeech.llm.config import LLMConfig
from jaxspeech.llm.decoder import DecoderLM, default_positions
from jaxspeech.llm.kv_cache import KVCache
from jaxspeech.models.aligned_positions import ctc_aligned_positions
from jaxspeech.models.audio_encoder import AudioEncoder, AudioEncoderConfig, WhisperAudioEncoderConfig

FUSIONS = ("decoder_only", "cross_attention", "hybrid")
AUDIO_POSITIONS = ("sequential", "ctc")


@dataclasses.dataclass(frozen=True)
class SpeechLLMConfig:
    """``placeholder_id`` is the audio placeholder token; ``audio_bidirectional`` lets every
    placeholder span attend to itself in both directions (prefix-LM); ``max_audio_frames`` bounds
    the encoder input per clip. ``ctc_vocab_size`` > 0 adds ``ctc_head`` (encoder states -> token
    logits) for an auxiliary CTC loss; ``ctc_upsample`` k > 1 lets each encoder state emit k CTC
    frames (one Dense to k x vocab, reshaped), so a low encoder frame rate still leaves CTC room for
    blanks between tokens. ``ctc_compress`` (cross_attention only) hands the connector one encoder
    state per label of the greedy CTC path (run means, blanks dropped: Speech-LLaMA's compressor), so the
    memory reads like the transcript; ``ctc_embed`` adds to each audio vector the LLM's input
    embedding of CTC posteriors (gradient-stopped), a text-space hint of what it says: its run's
    mean posteriors under ``ctc_compress``, else (decoder_only or hybrid, a linear or frame_stack
    connector) the label posteriors of the CTC frames behind each inline audio token, blank left
    out. ``ctc_blank_id`` is CTC's blank label. ``audio_positions`` "ctc" (decoder_only,
    a CTC head, a linear or frame_stack connector, one clip per row) sets the LLM's rotary
    positions from the CTC head's greedy path (``models/aligned_positions.py``), so that a transcript
    token and the audio it reads are a fixed distance apart; "sequential" numbers tokens in order."""

    encoder: AudioEncoderConfig = WhisperAudioEncoderConfig()
    connector: ConnectorConfig = FrameStackConnectorConfig()
    llm: LLMConfig = LLMConfig()
    fusion: str = "decoder_only"
    xattn: CrossAttentionConfig | None = None
    hybrid_pool: int = 10
    placeholder_id: int = 0
    audio_bidirectional: bool = False
    max_audio_frames: int = 3000
    ctc_vocab_size: int = 0  # > 0 adds a CTC head on the encoder output (an auxiliary loss)
    ctc_upsample: int = 1
    ctc_blank_id: int = 0
    ctc_compress: bool = False
    ctc_embed: bool = False
    audio_positions: str = "sequential"

    def __post_init__(self):
        if self.fusion not in FUSIONS:
            raise ValueError(f"fusion must be one of {FUSIONS}, got {self.fusion!r}")
        if self.fusion != "decoder_only":
            if self.xattn is None:
                raise ValueError(f"fusion {self.fusion!r} needs an xattn (CrossAttentionConfig)")
            if self.xattn.num_layers != self.llm.num_layers or self.xattn.hidden_size != self.llm.hidden_size:
                raise ValueError("xattn.num_layers / hidden_size must equal the LLM's")
        if self.ctc_upsample < 1:
            raise ValueError(f"ctc_upsample must be >= 1, got {self.ctc_upsample}")
        if self.ctc_compress:
            if self.fusion != "cross_attention":
                raise ValueError(
                    f"ctc_compress needs fusion 'cross_attention' (the number of audio tokens depends "
                    f"on the CTC path, so no placeholders can be laid out for it), got {self.fusion!r}"
                )
            if not self.ctc_vocab_size or self.ctc_upsample != 1:
                raise ValueError("ctc_compress needs a CTC head (ctc_vocab_size > 0) with ctc_upsample 1")
        if self.ctc_embed:
            keeps_length = self.connector.kind == "linear" or (
                self.connector.kind == "frame_stack" and self.connector.stack == 1
            )
            if not self.ctc_vocab_size or self.ctc_vocab_size > self.llm.vocab_size:
                raise ValueError(
                    f"ctc_embed needs a CTC head whose vocabulary lies inside the LLM's; got ctc_vocab_size "
                    f"{self.ctc_vocab_size}, llm.vocab_size {self.llm.vocab_size}"
                )
            if self.ctc_compress and not keeps_length:
                raise ValueError(
                    "ctc_embed with ctc_compress needs a connector that keeps the length (linear or "
                    f"frame_stack with stack 1), got {self.connector.kind!r}"
                )
            if not self.ctc_compress and (
                self.fusion == "cross_attention" or self.connector.kind not in ("linear", "frame_stack")
            ):
                raise ValueError(
                    "ctc_embed without ctc_compress needs inline audio tokens (fusion decoder_only or hybrid) "
                    f"from a linear or frame_stack connector; got fusion {self.fusion!r}, connector "
                    f"{self.connector.kind!r}"
                )
        if self.audio_positions not in AUDIO_POSITIONS:
            raise ValueError(f"audio_positions must be one of {AUDIO_POSITIONS}, got {self.audio_positions!r}")
        if self.audio_positions == "ctc" and (
            self.fusion != "decoder_only"
            or not self.ctc_vocab_size
            or self.connector.kind not in ("linear", "frame_stack")
        ):
            raise ValueError(
                "audio_positions 'ctc' needs fusion 'decoder_only', a CTC head (ctc_vocab_size > 0) and a "
                f"linear or frame_stack connector; got fusion {self.fusion!r}, ctc_vocab_size "
                f"{self.ctc_vocab_size}, connector {self.connector.kind!r}"
            )
        if self.connector.output_size != self.llm.hidden_size:
            raise ValueError(
                f"connector.output_size ({self.connector.output_size}) must equal llm.hidden_size ({self.llm.hidden_size})"
            )

    @property
    def ctc_frames_per_audio_token(self) -> int:
        """CTC frames behind each inline audio token (linear or frame_stack connector)."""
        stack = self.connector.stack if self.connector.kind == "frame_stack" else 1
        return stack * self.ctc_upsample

    @property
    def inline_steps(self) -> tuple:
        """Length arithmetic from input frames to inline audio tokens (empty for cross_attention)."""
        steps = self.encoder.downsample + self.connector.downsample
        return steps + (FrameStack(self.hybrid_pool),) if self.fusion == "hybrid" else steps

    def audio_token_count(self, num_frames: int) -> int:
        """Placeholder tokens for a clip of ``num_frames`` log-mel frames (0 for cross_attention)."""
        if self.fusion == "cross_attention":
            return 0
        return downsampled_length(num_frames, self.inline_steps)

    def replace(self, **changes) -> "SpeechLLMConfig":
        return dataclasses.replace(self, **changes)


@struct.dataclass
class AudioEmbeddings:
    """embeds f[B, C, A, D] (zero past each clip's length), lengths i32[B, C]."""

    embeds: jax.Array
    lengths: jax.Array


def masked_pool(x: jax.Array, lengths: jax.Array, size: int) -> tuple[jax.Array, jax.Array]:
    """Mean over windows of ``size`` valid frames: x f[N, A, D] -> (f[N, ceil(A/size), D], ceil(lengths/size))."""
    n, frames, width = x.shape
    padded = -(-frames // size) * size
    valid = (jnp.arange(padded)[None, :] < lengths[:, None]).astype(x.dtype)
    x = jnp.pad(x, ((0, 0), (0, padded - frames), (0, 0))) * valid[..., None]
    sums = x.reshape(n, padded // size, size, width).sum(axis=2)
    counts = valid.reshape(n, padded // size, size).sum(axis=2)
    new_lengths = -(-lengths // size)
    return zero_padding(sums / jnp.maximum(counts, 1)[..., None], new_lengths), new_lengths


def splice_audio(text_embeds: jax.Array, tokens: jax.Array, placeholder_id: int, audio: AudioEmbeddings) -> jax.Array:
    """Replaces the k-th placeholder of each row by the row's k-th valid audio embedding.

    text_embeds f[B, L, D], tokens i32[B, L] -> f[B, L, D]. Audio embeddings of a row are taken
    clip after clip (clip c contributes ``audio.lengths[b, c]`` embeddings).
    """
    batch, clips, frames, width = audio.embeds.shape
    is_placeholder = tokens == placeholder_id
    ordinal = jnp.cumsum(is_placeholder, axis=1) - 1  # k for the k-th placeholder of the row
    ends = jnp.cumsum(audio.lengths, axis=1)  # [B, C] exclusive end of each clip's embeddings
    clip = jnp.sum(ordinal[:, :, None] >= ends[:, None, :], axis=-1)  # [B, L]
    clip = jnp.minimum(clip, clips - 1)
    starts = ends - audio.lengths
    frame = ordinal - jnp.take_along_axis(starts, clip, axis=1)
    flat = audio.embeds.reshape(batch, clips * frames, width)
    index = jnp.clip(clip * frames + frame, 0, clips * frames - 1)
    gathered = jnp.take_along_axis(flat, index[:, :, None], axis=1)
    return jnp.where(is_placeholder[..., None], gathered.astype(text_embeds.dtype), text_embeds)


def placeholder_span_ids(tokens: jax.Array, placeholder_id: int) -> jax.Array:
    """i32[B, L]: 1, 2, ... for each contiguous placeholder span, 0 elsewhere."""
    is_placeholder = tokens == placeholder_id
    previous = jnp.pad(is_placeholder[:, :-1], ((0, 0), (1, 0)))
    starts = is_placeholder & ~previous
    return (jnp.cumsum(starts, axis=1) * is_placeholder).astype(jnp.int32)


def check_placeholders(tokens: np.ndarray, audio_lengths: np.ndarray, placeholder_id: int) -> None:
    """Host-side check that every row has exactly as many placeholders as audio embeddings."""
    found = (np.asarray(tokens) == placeholder_id).sum(axis=1)
    expected = np.asarray(audio_lengths).sum(axis=1)
    bad = np.nonzero(found != expected)[0]
    if bad.size:
        row = int(bad[0])
        raise ValueError(
            f"row {row} has {int(found[row])} audio placeholder tokens (id {placeholder_id}) but its clips give "
            f"{int(expected[row])} audio embeddings (per clip: {list(np.asarray(audio_lengths)[row])}); build the "
            "prompt with SpeechLLMConfig.audio_token_count"
        )


def is_concrete(*arrays) -> bool:
    """True when no argument is a tracer (values can be checked on the host)."""
    return not any(isinstance(a, jax.core.Tracer) for a in arrays)


class SpeechLLM(nn.Module):
    """Entry points: ``encode_audio``, ``embed``, ``memory``, ``__call__`` (logits), ``ctc_from_features``,
    ``prefill``, ``extend``."""

    config: SpeechLLMConfig

    def setup(self):
        c = self.config
        self.encoder = AudioEncoder(c.encoder)
        self.connector = WindowQFormer(c.connector) if c.connector.kind == "qformer" else Projector(c.connector)
        self.xattn = GatedCrossAttention(c.xattn) if c.fusion != "decoder_only" else None
        self.llm = DecoderLM(c.llm, cross_attention=self.xattn)
        if c.ctc_vocab_size:
            self.ctc_head = Dense(
                c.ctc_vocab_size * c.ctc_upsample, (axes.EMBED, axes.VOCAB), True, c.llm.dtype, c.llm.param_dtype
            )

    def text_embedding_rms(self) -> jax.Array:
        """RMS of the LLM's token embedding table (the norm-matching target), gradient-stopped."""
        table = self.llm.token_embeddings().astype(jnp.float32)
        return jax.lax.stop_gradient(jnp.sqrt(jnp.mean(jnp.square(table))))

    def encode_audio(self, features: jax.Array, feature_lengths: jax.Array, *, train: bool = False) -> AudioEmbeddings:
        """features f[B, C, T, F], feature_lengths i32[B, C] -> full-resolution AudioEmbeddings."""
        return self._encode(features, feature_lengths, train)[0]

    def _encoder_states(self, features, feature_lengths, train):
        """features f[B, C, T, F] -> (encoder states f[B*C, T', E], their lengths i32[B*C], 0 for empty clips)."""
        c = self.config
        batch, clips, frames, mels = features.shape
        if frames > c.max_audio_frames:
            raise ValueError(
                f"audio clips have {frames} frames, more than max_audio_frames={c.max_audio_frames}; "
                "cut long audio into chunks (one clip each) or raise the limit"
            )
        if mels != c.encoder.n_mels:
            raise ValueError(f"features have {mels} mel bins, the encoder expects {c.encoder.n_mels}")
        flat_lengths = feature_lengths.reshape(-1).astype(jnp.int32)
        hidden, hidden_lengths = self.encoder(features.reshape(batch * clips, frames, mels), flat_lengths, train=train)
        return hidden, jnp.where(flat_lengths > 0, hidden_lengths, 0)

    def _encode(self, features, feature_lengths, train):
        """-> (AudioEmbeddings, encoder states f[B*C, T', E], their lengths i32[B*C], the CTC head's
        (logits, lengths) where the audio embeddings or the positions need them, else None)."""
        batch, clips = features.shape[:2]
        c = self.config
        hidden, hidden_lengths = self._encoder_states(features, feature_lengths, train)
        states, state_lengths = hidden, hidden_lengths
        needs_ctc = c.ctc_compress or c.ctc_embed or c.audio_positions == "ctc"
        ctc = self.ctc_logits(hidden, hidden_lengths) if needs_ctc else None
        if c.ctc_compress:
            states, posteriors, state_lengths = ctc_compress(hidden, ctc[0], hidden_lengths, c.ctc_blank_id)
        target_rms = self.text_embedding_rms() if c.connector.norm_match else None
        embeds, lengths = self.connector(states, state_lengths, target_rms)
        if c.ctc_embed:
            if not c.ctc_compress:
                posteriors = posteriors_per_token(*ctc, c.ctc_blank_id, c.ctc_frames_per_audio_token, embeds.shape[1])
            # The hints train neither the table nor the CTC head: fed by the LLM's loss, the CTC head
            # drifts from its own task (experiments/tiny_asr/README.md, fourteenth stop).
            table = self.llm.embed_tokens.embedding[: c.ctc_vocab_size].astype(jnp.float32)
            embeds = embeds + jax.lax.stop_gradient(posteriors @ table).astype(embeds.dtype)
        lengths = jnp.where(hidden_lengths > 0, lengths, 0)
        embeds = zero_padding(embeds, lengths)
        audio = AudioEmbeddings(embeds.reshape(batch, clips, *embeds.shape[1:]), lengths.reshape(batch, clips))
        return audio, hidden, hidden_lengths, ctc

    def ctc_from_features(
        self, features: jax.Array, feature_lengths: jax.Array, *, train: bool = False
    ) -> tuple[jax.Array, jax.Array]:
        """Encoder + CTC head alone: features f[B, C, T, F], feature_lengths i32[B, C] ->
        (CTC logits f32[B*C, T' * k, K], lengths i32[B*C]); the connector and LLM do not run."""
        return self.ctc_logits(*self._encoder_states(features, feature_lengths, train))

    def inline_audio(self, audio: AudioEmbeddings) -> AudioEmbeddings:
        """The embeddings spliced into the prompt: all of them, or pooled ones for ``hybrid``."""
        if self.config.fusion != "hybrid":
            return audio
        batch, clips = audio.lengths.shape
        flat = audio.embeds.reshape(batch * clips, *audio.embeds.shape[2:])
        pooled, lengths = masked_pool(flat, audio.lengths.reshape(-1), self.config.hybrid_pool)
        return AudioEmbeddings(pooled.reshape(batch, clips, *pooled.shape[1:]), lengths.reshape(batch, clips))

    def embed(self, tokens: jax.Array, audio: AudioEmbeddings | None) -> jax.Array:
        """tokens i32[B, L] -> f[B, L, D], placeholders replaced by inline audio (decoder_only/hybrid)."""
        embeds = self.llm.embed(tokens)
        if self.config.fusion == "cross_attention" or audio is None:
            return embeds
        inline = self.inline_audio(audio)
        if is_concrete(tokens, inline.lengths):
            check_placeholders(np.asarray(tokens), np.asarray(inline.lengths), self.config.placeholder_id)
        return splice_audio(embeds, tokens, self.config.placeholder_id, inline)

    def memory(self, audio: AudioEmbeddings) -> AudioMemory | None:
        """Cross-attention memory over all clips of a row (None for decoder_only)."""
        if self.xattn is None:
            return None
        batch, clips, frames, width = audio.embeds.shape
        valid = jnp.arange(frames)[None, None, :] < audio.lengths[:, :, None]
        return self.xattn.project_memory(
            audio.embeds.reshape(batch, clips * frames, width), valid.reshape(batch, clips * frames)
        )

    def _bidir(self, tokens: jax.Array) -> jax.Array | None:
        if not self.config.audio_bidirectional or self.config.fusion == "cross_attention":
            return None
        return placeholder_span_ids(tokens, self.config.placeholder_id)

    def __call__(
        self,
        tokens: jax.Array,
        features: jax.Array,
        feature_lengths: jax.Array,
        *,
        segment_ids: jax.Array | None = None,
        positions: jax.Array | None = None,
        train: bool = False,
        with_ctc: bool = False,
    ):
        """-> logits f32[B, L, V] (position t predicts token t + 1); with ``with_ctc`` also the CTC
        head's (logits f32[B*C, T', K], lengths i32[B*C]) over each clip's encoder states."""
        audio, hidden, hidden_lengths, ctc = self._encode(features, feature_lengths, train)
        if with_ctc and ctc is None:
            ctc = self.ctc_logits(hidden, hidden_lengths)
        if self.config.audio_positions == "ctc":
            positions = self._aligned_positions(tokens, positions, segment_ids, ctc)
        logits, _ = self.llm(
            inputs_embeds=self.embed(tokens, audio),
            positions=positions,
            segment_ids=segment_ids,
            bidir_ids=self._bidir(tokens),
            memory=self.memory(audio),
        )
        return (logits, ctc) if with_ctc else logits

    def _aligned_positions(self, tokens, positions, segment_ids, ctc) -> jax.Array:
        """Rotary positions i32[B, L] of ``audio_positions`` "ctc" from the CTC head's outputs."""
        c = self.config
        if tokens.shape[0] != ctc[0].shape[0]:
            raise ValueError(
                f"audio_positions 'ctc' reads one clip per row; got {ctc[0].shape[0]} clips for {tokens.shape[0]} rows"
            )
        if positions is None:
            positions = default_positions(jnp.ones_like(tokens) if segment_ids is None else segment_ids)
        before = labels_before(*ctc, c.ctc_blank_id)
        return ctc_aligned_positions(tokens, positions, c.placeholder_id, before, c.ctc_frames_per_audio_token)

    def ctc_logits(self, hidden: jax.Array, lengths: jax.Array) -> tuple[jax.Array, jax.Array]:
        """Encoder states f[N, T', D] + lengths i32[N] -> (CTC logits f32[N, T' * k, K], lengths * k)
        with k = ``ctc_upsample``: state t emits CTC frames t*k ... t*k + k - 1."""
        if not self.config.ctc_vocab_size:
            raise ValueError("this model has no CTC head: set ctc_vocab_size > 0")
        n, frames, _ = hidden.shape
        k = self.config.ctc_upsample
        logits = self.ctc_head(hidden).astype(jnp.float32).reshape(n, frames * k, self.config.ctc_vocab_size)
        return logits, lengths * k

    def prefill(
        self, tokens: jax.Array, features: jax.Array, feature_lengths: jax.Array, segment_ids: jax.Array, cache: KVCache
    ) -> tuple[jax.Array, dict[str, Any]]:
        """Runs an audio prompt: (final hidden f[B, T, D], decoding state {"llm": cache, "memory": ...})."""
        audio, _, _, ctc = self._encode(features, feature_lengths, False)
        memory = self.memory(audio)
        positions = None
        if self.config.audio_positions == "ctc":
            positions = self._aligned_positions(tokens, default_positions(segment_ids, cache.next_positions), None, ctc)
        hidden, cache = self.llm.hidden_states(
            self.embed(tokens, audio),
            positions=positions,
            segment_ids=segment_ids,
            bidir_ids=self._bidir(tokens),
            cache=cache,
            memory=memory,
        )
        return hidden, {"llm": cache, "memory": memory}

    def logits(self, hidden: jax.Array) -> jax.Array:
        return self.llm.logits(hidden)

    def extend(self, tokens: jax.Array, state: dict[str, Any]) -> tuple[jax.Array, dict[str, Any]]:
        """tokens i32[B, T] appended to the decoding state -> (logits f32[B, T, V], state)."""
        logits, cache = self.llm(tokens, cache=state["llm"], memory=state["memory"])
        return logits, {"llm": cache, "memory": state["memory"]}
