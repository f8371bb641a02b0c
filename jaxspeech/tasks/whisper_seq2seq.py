"""Training task of the Whisper encoder-decoder: teacher-forced next-token loss on the transcript.

The batch is a ``jaxspeech.types.Batch`` with one clip per row (C = 1): features f32[B, 1, T, F],
feature_lengths i32[B, 1], and tokens / loss_mask from ``WhisperTokens`` (the decoder
prompt, then the text and ``<|endoftext|>`` as targets).

Input length: released checkpoints were trained on 30-s windows (T = 3000 frames, the audio padded
with silence, every frame attended). Our encoder also takes shorter buckets with ``lengths``, so
fine-tuning on duration buckets is cheaper but shows the model inputs it never saw in
pre-training (short windows, masked padding). ``full_window=True`` restores the pre-training
view: the batch must hold the encoder's full window (``2 * max_source_positions`` frames; the
data pipeline pads features with Whisper's silence value) and no lengths are passed, so every
frame is attended, exactly as ``WhisperTranscriber`` decodes.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import jax
import numpy as np

from jaxspeech.encoders.whisper import output_lengths
from jaxspeech.features.mel import HOP_LENGTH, SAMPLE_RATE
from jaxspeech.features.specaugment import SpecAugmentConfig, spec_augment
from jaxspeech.losses import next_token_loss
from jaxspeech.models.whisper_seq2seq import WhisperConfig, WhisperSeq2Seq
from jaxspeech.train.task import LOSS_WEIGHT
from jaxspeech.types import Batch


@dataclasses.dataclass(frozen=True)
class WhisperLossConfig:
    """Label smoothing mixes in the uniform distribution; ``z_loss`` weighs log(Z)^2 per target."""

    label_smoothing: float = 0.0
    z_loss: float = 0.0

    def __post_init__(self):
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {self.label_smoothing}")
        if self.z_loss < 0:
            raise ValueError(f"z_loss must be >= 0, got {self.z_loss}")


class WhisperTask:
    """``Task`` for ``jaxspeech.train.loop.train``: parameters under ``encoder/`` and ``decoder/``."""

    def __init__(
        self,
        model: WhisperConfig,
        loss: WhisperLossConfig = WhisperLossConfig(),
        spec_augment: SpecAugmentConfig | None = None,
        full_window: bool = False,
        encoder_trained: bool = True,
    ):
        self.config, self.loss_config, self.spec_augment, self.full_window = model, loss, spec_augment, full_window
        self.encoder_trained = encoder_trained  # only for train_flops: a frozen encoder runs no backward pass
        self.model = WhisperSeq2Seq(model)

    def encoder_inputs(self, features: Any, feature_lengths: Any) -> tuple[Any, Any]:
        """Batch features f32[B, 1, T, F], lengths i32[B, 1] -> (f32[B, T, F], i32[B] or None when
        ``full_window``). Works on numpy and jax arrays."""
        b, clips, frames, mels = features.shape
        if clips != 1:
            raise ValueError(
                f"Whisper batches hold one clip per row, got features of shape {tuple(features.shape)} "
                "(set data.pipeline.clips_per_row=1)"
            )
        if self.full_window and frames != self.config.encoder.max_frames:
            raise ValueError(
                f"full_window needs batches of the encoder's {self.config.encoder.max_frames} frames, got T={frames}"
            )
        features = features.reshape(b, frames, mels)
        return features, None if self.full_window else feature_lengths.reshape(b)

    def init_params(self, rng: jax.Array, batch: Batch) -> Mapping[str, Any]:
        features, lengths = self.encoder_inputs(batch.features, batch.feature_lengths)
        return self.model.init(rng, features, lengths, batch.tokens)["params"]

    def logits(self, params, batch: Batch, rng: jax.Array | None = None, *, train: bool = False) -> jax.Array:
        """logits f32[B, L, V] of the teacher-forced decoder; SpecAugment only when training."""
        features, lengths = self.encoder_inputs(batch.features, batch.feature_lengths)
        if train and self.spec_augment is not None:
            features = spec_augment(features, batch.feature_lengths[:, 0], rng, self.spec_augment)
        return self.model.apply({"params": params}, features, lengths, batch.tokens)

    def loss(self, params, batch: Batch, rng: jax.Array, *, train: bool) -> tuple[jax.Array, dict[str, jax.Array]]:
        cfg = self.loss_config
        logits = self.logits(params, batch, rng, train=train)
        token_loss = next_token_loss(
            logits, batch.tokens, batch.loss_mask, z_loss=cfg.z_loss, label_smoothing=cfg.label_smoothing
        )
        metrics = {"token_accuracy": token_loss.accuracy, "nll": token_loss.mean_nll, LOSS_WEIGHT: token_loss.count}
        return token_loss.loss, metrics

    def train_flops(self, batch: Batch) -> float:
        """Matmul FLOPs (all devices) of one train step on a batch shaped like ``batch`` (counted here as XLA's
        cost analysis counts a scanned layer once): forward, plus a backward of twice the forward
        for the decoder and, when it is trained, the encoder. Attention is counted dense (as computed)."""
        e, d = self.config.encoder, self.config.decoder
        rows, _, frames, mels = batch.features.shape
        length, states = batch.tokens.shape[1], output_lengths(frames)
        projections = lambda n, width, count: 2 * n * width * width * count
        encoder = (
            2 * frames * 3 * mels * e.d_model
            + 2 * states * 3 * e.d_model * e.d_model
            + e.num_layers
            * (projections(states, e.d_model, 4) + 4 * states * states * e.d_model + 4 * states * e.d_model * e.ffn_dim)
        )
        decoder = (
            d.num_layers
            * (
                projections(length, d.d_model, 6)
                + projections(states, d.d_model, 2)
                + 4 * length * length * d.d_model
                + 4 * length * states * d.d_model
                + 4 * length * d.d_model * d.ffn_dim
            )
            + 2 * length * d.d_model * d.vocab_size
        )
        return float(rows * ((3 if self.encoder_trained else 1) * encoder + 3 * decoder))

    def throughput_counts(self, batch: Batch) -> Mapping[str, float]:
        return {
            "examples": float(np.sum(np.asarray(batch.example_ids) >= 0)),
            "tokens": float(np.sum(np.asarray(batch.loss_mask))),
            "audio_seconds": float(np.sum(np.asarray(batch.feature_lengths))) * HOP_LENGTH / SAMPLE_RATE,
        }
