"""Training task of the Speech LLM: next-token loss on the assistant targets, optional z-loss,
label smoothing, an auxiliary CTC loss on the encoder, SpecAugment and LoRA adapters.

The batch is a ``jaxspeech.types.Batch``. The CTC targets are the loss-masked tokens of each row
without its end token (rows must hold one example: C = 1).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import struct

from jaxspeech.features.specaugment import SpecAugmentConfig, spec_augment
from jaxspeech.features.mel import HOP_LENGTH, SAMPLE_RATE
from jaxspeech.errors import ConfigError
from jaxspeech.layers.lora import LoraConfig, lora
from jaxspeech.losses import next_token_loss
from jaxspeech.models.speech_llm import SpeechLLM, SpeechLLMConfig
from jaxspeech.train.flops import lowered_flops, plain_shapes, without_scan
from jaxspeech.train.task import LOSS_WEIGHT
from jaxspeech.types import Batch


@dataclasses.dataclass(frozen=True)
class SpeechLossConfig:
    """``ctc_weight`` mixes in the CTC loss (per target token) when the model has a CTC head;
    ``eos_ids`` are left out of the CTC targets (CTC's blank is the model's ``ctc_blank_id``).
    ``target_input_noise`` is the share of target tokens replaced by random ones in the LLM's
    teacher-forced input while training (the loss still asks for the true next token): where the
    text before a token is unreliable, only the audio can tell what comes next."""

    z_loss: float = 0.0
    label_smoothing: float = 0.0
    ctc_weight: float = 0.0
    target_input_noise: float = 0.0
    eos_ids: tuple[int, ...] = ()

    def __post_init__(self):
        if not 0.0 <= self.target_input_noise < 1.0:
            raise ConfigError("task.loss.target_input_noise", f"a share in [0, 1), got {self.target_input_noise}")


def ctc_targets(tokens: jax.Array, loss_mask: jax.Array, eos_ids: tuple[int, ...]) -> tuple[jax.Array, jax.Array]:
    """Left-aligned target labels i32[B, L] and their paddings f32[B, L] (1 = padding)."""
    keep = (loss_mask > 0) & ~jnp.isin(tokens, jnp.asarray(list(eos_ids) or [-1], jnp.int32))
    order = jnp.argsort(~keep, axis=1, stable=True)
    labels = jnp.take_along_axis(tokens, order, axis=1)
    count = keep.sum(axis=1, keepdims=True)
    paddings = (jnp.arange(tokens.shape[1])[None, :] >= count).astype(jnp.float32)
    return jnp.where(paddings > 0, 0, labels), paddings


def ctc_min_frames(labels: jax.Array, label_paddings: jax.Array) -> jax.Array:
    """i32[B]: the fewest input frames a CTC alignment of ``labels`` i32[B, L] needs: one per label
    plus one blank between each pair of equal neighbours."""
    valid = label_paddings == 0
    repeats = (labels[:, 1:] == labels[:, :-1]) & valid[:, 1:]
    return valid.sum(axis=1) + repeats.sum(axis=1)


@struct.dataclass
class CTCSum:
    """``loss``: the CTC loss f32[] summed over the rows whose labels fit their frames;
    ``labels``: their label count f32[]; ``infeasible_fraction``: the share of rows with audio left out."""

    loss: jax.Array
    labels: jax.Array
    infeasible_fraction: jax.Array


def summed_ctc_loss(
    ctc_logits: jax.Array,
    ctc_lengths: jax.Array,
    tokens: jax.Array,
    loss_mask: jax.Array,
    eos_ids: tuple[int, ...],
    blank_id: int,
) -> CTCSum:
    """CTC of logits f32[N, T, K] (valid frames ``ctc_lengths`` i32[N]) against the loss-masked
    tokens i32[N, L] of each row without its end token (``ctc_targets``)."""
    labels, label_paddings = ctc_targets(tokens, loss_mask, eos_ids)
    logit_paddings = (jnp.arange(ctc_logits.shape[1])[None, :] >= ctc_lengths[:, None]).astype(jnp.float32)
    per_row = optax.ctc_loss(ctc_logits, logit_paddings, labels, label_paddings, blank_id=blank_id)
    # Rows whose transcript cannot be aligned to their frames (speech too fast for the encoder
    # rate) would give a huge, meaningless loss: they are left out and counted.
    has_audio = ctc_lengths > 0
    feasible = has_audio & (ctc_min_frames(labels, label_paddings) <= ctc_lengths)
    label_count = jnp.sum(jnp.where(feasible, jnp.sum(1.0 - label_paddings, axis=1), 0.0))
    return CTCSum(
        loss=jnp.sum(jnp.where(feasible, per_row, 0.0)),
        labels=label_count,
        infeasible_fraction=jnp.sum(has_audio & ~feasible) / jnp.maximum(jnp.sum(has_audio), 1),
    )


class SpeechLLMTask:
    """``Task`` for ``jaxspeech.train.loop.train``."""

    def __init__(
        self,
        model: SpeechLLMConfig,
        loss: SpeechLossConfig = SpeechLossConfig(),
        spec_augment: SpecAugmentConfig | None = None,
        lora: LoraConfig | None = None,
    ):
        if loss.ctc_weight and not model.ctc_vocab_size:
            raise ConfigError("task.loss.ctc_weight", "> 0 needs a CTC head: set model.ctc_vocab_size")
        self.config, self.loss_config, self.spec_augment, self.lora = model, loss, spec_augment, lora
        self.model = SpeechLLM(model)

    def _inputs(self, batch: Batch):
        return (batch.tokens, batch.features, batch.feature_lengths)

    def init_params(self, rng: jax.Array, batch: Batch) -> Mapping[str, Any]:
        with lora(self.lora):
            variables = self.model.init(
                rng,
                *self._inputs(batch),
                segment_ids=batch.segment_ids,
                positions=batch.positions,
                with_ctc=bool(self.config.ctc_vocab_size),
            )
        return variables["params"]

    def apply(self, params, batch: Batch, rng: jax.Array | None = None, *, train: bool = False):
        """(logits, ctc outputs or None) for ``batch``; SpecAugment and dropout only when training."""
        tokens, lengths = batch.tokens, batch.feature_lengths
        features, rngs = training_inputs(batch, rng, self.spec_augment) if train else (batch.features, {})
        if train and self.loss_config.target_input_noise:
            tokens = noisy_targets(
                jax.random.fold_in(rng, 1),
                tokens,
                batch.loss_mask,
                self.loss_config.target_input_noise,
                self.config.llm.vocab_size,
                self.config.placeholder_id,
            )
        with_ctc = bool(self.config.ctc_vocab_size)
        with lora(self.lora, deterministic=not train):
            out = self.model.apply(
                {"params": params},
                tokens,
                features,
                lengths,
                segment_ids=batch.segment_ids,
                positions=batch.positions,
                train=train,
                with_ctc=with_ctc,
                rngs=rngs,
            )
        return out if with_ctc else (out, None)

    def loss(self, params, batch: Batch, rng: jax.Array, *, train: bool) -> tuple[jax.Array, dict[str, jax.Array]]:
        cfg = self.loss_config
        logits, ctc = self.apply(params, batch, rng, train=train)
        token_loss = next_token_loss(
            logits, batch.tokens, batch.loss_mask, z_loss=cfg.z_loss, label_smoothing=cfg.label_smoothing
        )
        total = token_loss.loss
        metrics = {
            "token_accuracy": token_loss.accuracy,
            "nll": token_loss.mean_nll,
            LOSS_WEIGHT: token_loss.count,
        }
        if ctc is not None:
            ctc_sum = summed_ctc_loss(*ctc, batch.tokens, batch.loss_mask, cfg.eos_ids, self.config.ctc_blank_id)
            ctc_loss = ctc_sum.loss / jnp.maximum(token_loss.count, 1.0)
            metrics["ctc_loss"] = ctc_loss
            metrics["ctc_infeasible_fraction"] = ctc_sum.infeasible_fraction
            if cfg.ctc_weight:
                total = total + cfg.ctc_weight * ctc_loss
        metrics["total_loss"] = total
        return total, metrics

    def train_flops(self, batch: Batch) -> float:
        """FLOPs (all devices) of one train step on a batch shaped like ``batch``: XLA's count of the
        gradient of the loss of an unrolled copy of the model (every layer counted; attention as
        computed, padding included). Weight gradients are counted for every parameter, frozen
        ones too, so with frozen parts this is an upper bound (optimizer update FLOPs are left out)."""
        unrolled = SpeechLLMTask(without_scan(self.config), self.loss_config, self.spec_augment, self.lora)
        shapes = plain_shapes(batch)
        rng = jax.random.key(0)
        params = jax.eval_shape(unrolled.init_params, rng, shapes)
        gradient = jax.grad(lambda p, b, r: unrolled.loss(p, b, r, train=True)[0])
        return lowered_flops(gradient, params, shapes, rng)

    def throughput_counts(self, batch: Batch) -> Mapping[str, float]:
        return speech_throughput(batch)


def training_inputs(batch: Batch, rng: jax.Array, augment: SpecAugmentConfig | None) -> tuple[jax.Array, dict]:
    """(features f32[B, C, T, F] with SpecAugment applied when ``augment`` is set, the dropout rngs)."""
    augment_rng, dropout_rng = jax.random.split(rng)
    features = batch.features
    if augment is not None:
        b, c, t, f = features.shape
        flat = spec_augment(features.reshape(b * c, t, f), batch.feature_lengths.reshape(-1), augment_rng, augment)
        features = flat.reshape(b, c, t, f)
    return features, {"dropout": dropout_rng}


def noisy_targets(
    rng: jax.Array, tokens: jax.Array, loss_mask: jax.Array, share: float, vocab_size: int, placeholder_id: int
) -> jax.Array:
    """tokens i32[B, L] with each loss-masked (target) token replaced, with probability ``share``,
    by a token drawn uniformly from the vocabulary without the audio placeholder."""
    replace_rng, draw_rng = jax.random.split(rng)
    replace = (loss_mask > 0) & jax.random.bernoulli(replace_rng, share, tokens.shape)
    drawn = jax.random.randint(draw_rng, tokens.shape, 0, vocab_size - 1, dtype=tokens.dtype)
    drawn = jnp.where(drawn >= placeholder_id, drawn + 1, drawn)
    return jnp.where(replace, drawn, tokens)


def speech_throughput(batch: Batch) -> dict[str, float]:
    """Examples, target tokens and audio seconds of a host batch."""
    return {
        "examples": float(np.sum(np.asarray(batch.example_ids) >= 0)),
        "tokens": float(np.sum(np.asarray(batch.loss_mask))),
        "audio_seconds": float(np.sum(np.asarray(batch.feature_lengths))) * HOP_LENGTH / SAMPLE_RATE,
    }
