"""Tiny Speech LLM configurations and hand-built batches for tests."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jaxspeech.connectors.config import connector_config
from jaxspeech.connectors.cross_attention import CrossAttentionConfig
from jaxspeech.encoders.whisper import WhisperEncoderConfig
from jaxspeech.llm.config import LLMConfig
from jaxspeech.models.audio_encoder import WhisperAudioEncoderConfig
from jaxspeech.models.speech_llm import SpeechLLMConfig

PLACEHOLDER = 3
VOCAB = 64
MELS = 16


def tiny_config(fusion: str = "decoder_only", connector: str = "frame_stack", **changes) -> SpeechLLMConfig:
    llm = LLMConfig(
        vocab_size=VOCAB,
        hidden_size=32,
        intermediate_size=48,
        num_layers=4,
        num_heads=4,
        num_kv_heads=2,
        scan_layers=fusion == "decoder_only",
    )
    encoder = WhisperAudioEncoderConfig(
        whisper=WhisperEncoderConfig(
            n_mels=MELS, d_model=24, num_layers=2, num_heads=4, ffn_dim=48, max_source_positions=100
        )
    )
    fields = {
        "linear": {},
        "frame_stack": dict(hidden_size=40, stack=2),
        "conv": dict(hidden_size=40),
        "qformer": dict(window=4, window_stride=4, num_queries=2, num_layers=1, size=16, num_heads=2, ffn_size=32),
    }
    conn = connector_config(connector, output_size=32, **fields[connector])
    xattn = None
    if fusion != "decoder_only":
        xattn = CrossAttentionConfig(
            hidden_size=32, num_layers=4, every=2, num_heads=4, num_kv_heads=4, intermediate_size=48
        )
    return SpeechLLMConfig(
        encoder=encoder,
        connector=conn,
        llm=llm,
        fusion=fusion,
        xattn=xattn,
        hybrid_pool=3,
        placeholder_id=PLACEHOLDER,
        max_audio_frames=200,
    ).replace(**changes)


def example_tokens(config: SpeechLLMConfig, clip_frames: list[int], prefix: list[int], suffix: list[int]) -> list[int]:
    """prefix + [placeholder * n_clip for each clip] + suffix (placeholders only where fusion inlines audio)."""
    tokens = list(prefix)
    for frames in clip_frames:
        tokens += [PLACEHOLDER] * config.audio_token_count(frames)
    return tokens + list(suffix)


def make_batch(config: SpeechLLMConfig, rows: list[tuple[list[int], list[int], list[int]]], frames: int, seed: int = 0):
    """rows of (clip_frames, prefix, suffix) -> dict of padded arrays (right padding, C = max clips)."""
    rng = np.random.default_rng(seed)
    clips = max(len(r[0]) for r in rows)
    token_rows = [example_tokens(config, *r) for r in rows]
    length = max(len(t) for t in token_rows)
    batch = {
        "tokens": np.zeros((len(rows), length), np.int32),
        "segment_ids": np.zeros((len(rows), length), np.int32),
        "features": np.zeros((len(rows), clips, frames, MELS), np.float32),
        "feature_lengths": np.zeros((len(rows), clips), np.int32),
    }
    for b, ((clip_frames, _, _), tokens) in enumerate(zip(rows, token_rows)):
        batch["tokens"][b, : len(tokens)] = tokens
        batch["segment_ids"][b, : len(tokens)] = 1
        for c, n in enumerate(clip_frames):
            batch["features"][b, c, :n] = rng.normal(size=(n, MELS))
            batch["feature_lengths"][b, c] = n
    return {k: jnp.asarray(v) for k, v in batch.items()}


def row(batch: dict, b: int, tokens_len: int, clips: int, frames: int) -> dict:
    """Row ``b`` of a batch cut to its own sizes (an unpadded single-example batch)."""
    return {
        "tokens": batch["tokens"][b : b + 1, :tokens_len],
        "segment_ids": batch["segment_ids"][b : b + 1, :tokens_len],
        "features": batch["features"][b : b + 1, :clips, :frames],
        "feature_lengths": batch["feature_lengths"][b : b + 1, :clips],
    }


def init_params(model, batch: dict, seed: int = 0):
    """Parameters of every submodule (the CTC head too when the config has one)."""
    from flax import linen as nn

    return nn.unbox(
        model.init(
            jax.random.key(seed),
            batch["tokens"],
            batch["features"],
            batch["feature_lengths"],
            segment_ids=batch["segment_ids"],
            with_ctc=bool(model.config.ctc_vocab_size),
        )
    )
