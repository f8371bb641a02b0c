"""Training task of the Speech LLM's audio encoder alone: CTC on its CTC head, no connector and no LLM.

The model is the Speech LLM itself (``SpeechLLM.ctc_from_features``), so the parameters are
exactly its ``encoder/`` and ``ctc_head/`` and a CTC-trained encoder drops into a Speech LLM
unchanged. The batch is a ``jaxspeech.types.Batch`` with one clip per row whose loss-masked
tokens are the CTC targets (``CTCTokens``: the transcript alone).
"""

from __future__ import annotations

from typing import Any, Mapping

import jax
import jax.numpy as jnp

from jaxspeech.features.specaugment import SpecAugmentConfig
from jaxspeech.errors import ConfigError
from jaxspeech.models.speech_llm import SpeechLLM, SpeechLLMConfig
from jaxspeech.tasks.speech_llm import speech_throughput, summed_ctc_loss, training_inputs
from jaxspeech.train.flops import lowered_flops, plain_shapes, without_scan
from jaxspeech.train.task import LOSS_WEIGHT
from jaxspeech.types import Batch


class CTCEncoderTask:
    """``Task`` for ``jaxspeech.train.loop.train``: the CTC loss per target label."""

    def __init__(
        self, model: SpeechLLMConfig, spec_augment: SpecAugmentConfig | None = None, eos_ids: tuple[int, ...] = ()
    ):
        if not model.ctc_vocab_size:
            raise ConfigError("model.ctc_vocab_size", "a CTC encoder needs a CTC head: expected > 0, got 0")
        self.config, self.spec_augment, self.eos_ids = model, spec_augment, eos_ids
        self.model = SpeechLLM(model)

    def init_params(self, rng: jax.Array, batch: Batch) -> Mapping[str, Any]:
        return self.model.init(rng, batch.features, batch.feature_lengths, method=SpeechLLM.ctc_from_features)["params"]

    def apply(self, params, batch: Batch, rng: jax.Array | None = None, *, train: bool = False):
        """(CTC logits f32[B, T', K], lengths i32[B]); SpecAugment and dropout only when training."""
        features, rngs = training_inputs(batch, rng, self.spec_augment) if train else (batch.features, {})
        return self.model.apply(
            {"params": params},
            features,
            batch.feature_lengths,
            train=train,
            rngs=rngs,
            method=SpeechLLM.ctc_from_features,
        )

    def loss(self, params, batch: Batch, rng: jax.Array, *, train: bool) -> tuple[jax.Array, dict[str, jax.Array]]:
        ctc = summed_ctc_loss(
            *self.apply(params, batch, rng, train=train),
            batch.tokens,
            batch.loss_mask,
            self.eos_ids,
            self.config.ctc_blank_id,
        )
        loss = ctc.loss / jnp.maximum(ctc.labels, 1.0)
        return loss, {
            "ctc_loss": loss,
            "ctc_infeasible_fraction": ctc.infeasible_fraction,
            LOSS_WEIGHT: ctc.labels,
            "total_loss": loss,
        }

    def train_flops(self, batch: Batch) -> float:
        """FLOPs (all devices) of one train step: XLA's count of the gradient of an unrolled copy."""
        unrolled = CTCEncoderTask(without_scan(self.config), self.spec_augment, self.eos_ids)
        shapes, rng = plain_shapes(batch), jax.random.key(0)
        params = jax.eval_shape(unrolled.init_params, rng, shapes)
        return lowered_flops(jax.grad(lambda p, b, r: unrolled.loss(p, b, r, train=True)[0]), params, shapes, rng)

    def throughput_counts(self, batch: Batch) -> Mapping[str, float]:
        return speech_throughput(batch)
