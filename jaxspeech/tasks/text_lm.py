"""Training task of a text-only LM (``TextLM``: the Speech LLM's LLM alone) on packed text, and its
held-out perplexity.

The batch is a ``jaxspeech.types.TextBatch``: several texts per row (``segment_ids``), each
attending only to itself, positions restarting in every text.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Iterable, Mapping

import jax
import numpy as np

from jaxspeech.evals.metrics import PerplexityResult
from jaxspeech.llm.config import LLMConfig
from jaxspeech.losses import next_token_loss
from jaxspeech.models.text_lm import TextLM
from jaxspeech.train.flops import lowered_flops, plain_shapes, without_scan
from jaxspeech.train.task import LOSS_WEIGHT
from jaxspeech.types import TextBatch


@dataclasses.dataclass(frozen=True)
class TextLossConfig:
    z_loss: float = 0.0
    label_smoothing: float = 0.0


class TextLMTask:
    """``Task`` for ``jaxspeech.train.loop.train``: next-token loss on every token of every text but
    its first."""

    def __init__(self, llm: LLMConfig, loss: TextLossConfig = TextLossConfig()):
        self.config, self.loss_config = llm, loss
        self.model = TextLM(llm)

    def logits(self, params, batch: TextBatch) -> jax.Array:
        """f32[B, L, V]; ``params`` without the "params" level."""
        return self.model.apply(
            {"params": params}, batch.tokens, segment_ids=batch.segment_ids, positions=batch.positions
        )

    def init_params(self, rng: jax.Array, batch: TextBatch) -> Mapping[str, Any]:
        return self.model.init(rng, batch.tokens, segment_ids=batch.segment_ids, positions=batch.positions)["params"]

    def loss(self, params, batch: TextBatch, rng: jax.Array, *, train: bool) -> tuple[jax.Array, dict[str, jax.Array]]:
        del rng, train  # the LLM has no dropout
        cfg = self.loss_config
        token_loss = next_token_loss(
            self.logits(params, batch),
            batch.tokens,
            batch.loss_mask,
            z_loss=cfg.z_loss,
            label_smoothing=cfg.label_smoothing,
        )
        metrics = {
            "token_accuracy": token_loss.accuracy,
            "nll": token_loss.mean_nll,
            LOSS_WEIGHT: token_loss.count,
            "total_loss": token_loss.loss,
        }
        return token_loss.loss, metrics

    def train_flops(self, batch: TextBatch) -> float:
        """FLOPs (all devices) of one train step: XLA's count of the gradient of an unrolled copy."""
        unrolled = TextLMTask(without_scan(self.config), self.loss_config)
        shapes, rng = plain_shapes(batch), jax.random.key(0)
        params = jax.eval_shape(unrolled.init_params, rng, shapes)
        return lowered_flops(jax.grad(lambda p, b: unrolled.loss(p, b, rng, train=True)[0]), params, shapes)

    def throughput_counts(self, batch: TextBatch) -> Mapping[str, float]:
        segment_ids = np.asarray(batch.segment_ids)
        return {"examples": float(segment_ids.max(axis=1).sum()), "tokens": float(np.sum(np.asarray(batch.loss_mask)))}


@functools.partial(jax.jit, static_argnames="task")
def _nll_sum(task: TextLMTask, params, batch: TextBatch) -> tuple[jax.Array, jax.Array]:
    token_loss = next_token_loss(task.logits(params, batch), batch.tokens, batch.loss_mask)
    return token_loss.nll, token_loss.count


def perplexity(task: TextLMTask, params: Mapping[str, Any], batches: Iterable[TextBatch]) -> PerplexityResult:
    """exp(mean next-token NLL) over every target of ``batches`` (no label smoothing)."""
    nll, count = 0.0, 0
    for batch in batches:
        batch_nll, batch_count = jax.device_get(_nll_sum(task, params, batch))
        nll, count = nll + float(batch_nll), count + int(batch_count)
    if not count:
        raise ValueError("no held-out tokens to compute a perplexity on")
    return PerplexityResult(nll=nll, tokens=count)
