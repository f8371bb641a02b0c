"""Dormancy diagnostics logged during training (``eval.dormancy_every``): does the LLM read the audio?

Every ``every`` steps, on one fixed batch (the first ``eval.dormancy_examples`` utterances of the
first eval set, with their transcripts as targets), ``DormancyDiagnostics`` writes to metrics.jsonl
and TensorBoard (``evals/dormancy.py`` computes them):

* ``dormancy/audio_text_rms_ratio``: RMS of the audio embeddings entering the LLM over the RMS of
  the text-token embeddings (far above 1: the audio drowns the instruction; far below: it is
  easy to ignore);
* ``dormancy/attention_on_audio`` and ``dormancy/attention_on_instruction``: the share of the LLM's
  self-attention on the audio tokens (on the instruction) from the positions that predict the
  transcript, teacher-forced, averaged over layers and heads; ``.../layer_<i>`` per layer.

Only a Speech LLM has these; for other task kinds no hook is added.
"""

from __future__ import annotations

import dataclasses
import functools
import logging

import jax
import numpy as np

from jaxspeech.data.pipeline import DataPipeline
from jaxspeech.evals.dormancy import attention_mass, embedding_rms_ratio
from jaxspeech.layers.lora import LoraConfig
from jaxspeech.models.speech_llm import SpeechLLMConfig
from jaxspeech.recipes.build import FirstN, Run
from jaxspeech.tasks.speech_llm_kind import SpeechLLMKind
from jaxspeech.train.hooks import StepContext
from jaxspeech.types import Batch

log = logging.getLogger(__name__)

PREFIX = "dormancy/"


def diagnostics_batch(run: Run, examples: int) -> Batch:
    """The first ``examples`` utterances of the first eval set as one batch with their transcripts
    as targets (the largest bucket, one clip per row; rejected utterances and padding rows left out)."""
    eval_pipeline = run.eval_pipeline
    config = dataclasses.replace(
        eval_pipeline,
        bucket_frames=eval_pipeline.bucket_frames[-1:],
        max_tokens=eval_pipeline.max_tokens[-1:],
        clips_per_row=1,
        bucket_rows=(examples,),
        num_workers=0,
    )
    source = FirstN(run.source(run.data.eval_sets[0]), examples)
    pipeline = DataPipeline(source, config, tokenize=run.kind.example_tokens(), process_index=0, process_count=1)
    with pipeline.iterator() as batches:
        batch = next(batches).batch
    real = np.asarray(batch.example_ids)[:, 0] >= 0
    if not real.any():
        raise ValueError(
            f"eval.dormancy_every: none of the first {examples} utterances of {run.data.eval_sets[0]} fits a batch"
        )
    return jax.tree.map(lambda x: None if x is None else np.asarray(x)[real], batch)


@functools.partial(jax.jit, static_argnames=("config", "lora"))
def _rms_ratio(config: SpeechLLMConfig, params: dict, batch: dict, lora: LoraConfig | None) -> jax.Array:
    return embedding_rms_ratio(config, params, batch, lora)["mean_ratio"]


def dormancy_metrics(
    config: SpeechLLMConfig, params: dict, batch: Batch, lora: LoraConfig | None = None
) -> dict[str, float]:
    """The ``dormancy/*`` scalars (module docstring) of ``params`` (without the "params" level) on ``batch``."""
    variables = {"params": params}
    fields = {
        "tokens": batch.tokens,
        "segment_ids": batch.segment_ids,
        "features": batch.features,
        "feature_lengths": batch.feature_lengths,
    }
    ratio = _rms_ratio(config, variables, fields, lora)
    mass = attention_mass(config, variables, fields, np.asarray(batch.loss_mask), lora=lora)
    ratio, audio, instruction = jax.device_get((ratio, mass["audio"], mass["instruction"]))
    metrics = {
        f"{PREFIX}audio_text_rms_ratio": float(ratio),
        f"{PREFIX}attention_on_audio": float(np.mean(audio)),
        f"{PREFIX}attention_on_instruction": float(np.mean(instruction)),
    }
    metrics.update({f"{PREFIX}attention_on_audio/layer_{i}": float(value) for i, value in enumerate(audio)})
    return metrics


class DormancyDiagnostics:
    """Training hook (``train/hooks.py``): logs ``dormancy_metrics`` every ``every`` steps and after the last."""

    def __init__(self, config: SpeechLLMConfig, batch: Batch, every: int, lora: LoraConfig | None = None):
        self.config, self.batch, self.every, self.lora = config, batch, every, lora
        self.last_step: int | None = None

    def __call__(self, ctx: StepContext) -> None:
        ctx.logger.write(ctx.step, dormancy_metrics(self.config, ctx.state["params"], self.batch, self.lora))
        self.last_step = ctx.step

    def finish(self, ctx: StepContext) -> None:
        if ctx.stop_reason != "preempted" and self.last_step != ctx.step:
            self(ctx)


def dormancy_hooks(run: Run) -> list[DormancyDiagnostics]:
    """The run's dormancy hook when ``eval.dormancy_every`` > 0 and the task is a Speech LLM; else none."""
    every = run.eval.dormancy_every
    if not every:
        return []
    if not isinstance(run.kind, SpeechLLMKind):
        log.info(
            "eval.dormancy_every: a %s run has no audio tokens in an LLM; no dormancy diagnostics",
            type(run.kind).__name__,
        )
        return []
    batch = diagnostics_batch(run, run.eval.dormancy_examples)
    return [DormancyDiagnostics(run.kind.model, batch, every, run.kind.task_config.lora)]
