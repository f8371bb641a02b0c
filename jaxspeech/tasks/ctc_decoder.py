"""The CTC head alone as a decoder: greedy CTC (``decoding/ctc.py``) on the encoder states of a Speech
LLM's parameters (or a CTC encoder's: the same ``encoder/`` and ``ctc_head/``); the connector and the
LLM do not run."""

from __future__ import annotations

import functools
from typing import Any, Mapping

import jax

from jaxspeech.data.tokenizers import Tokenizer
from jaxspeech.decoding.ctc import greedy_ctc
from jaxspeech.layers.lora import LoraConfig, merge_lora
from jaxspeech.models.speech_llm import SpeechLLM, SpeechLLMConfig
from jaxspeech.types import Batch


@functools.partial(jax.jit, static_argnames="config")
def _ctc_logits(config: SpeechLLMConfig, params, features, feature_lengths):
    return SpeechLLM(config).apply(params, features, feature_lengths, method=SpeechLLM.ctc_from_features)


class CTCDecoder:
    """``Decoder`` (``tasks/kinds.py``) of eval batches with one clip per row: one transcript each."""

    def __init__(self, config: SpeechLLMConfig, tokenizer: Tokenizer, lora: LoraConfig | None = None):
        if not config.ctc_vocab_size:
            raise ValueError("decoding with the CTC head needs a model with one (model.ctc)")
        self.config, self.tokenizer, self.lora = config, tokenizer, lora

    def prepare(self, params: Mapping[str, Any]) -> dict:
        variables = {"params": params}
        return merge_lora(variables, self.lora) if self.lora is not None else variables

    def label_paths(self, prepared: dict, features, feature_lengths) -> list[list[int]]:
        """features f32[B, 1, T, F] + feature_lengths i32[B, 1] -> the greedy CTC labels of each row."""
        if features.shape[1] != 1:
            raise ValueError(f"CTC decoding reads one audio clip per row; this batch has {features.shape[1]}")
        logits, lengths = jax.device_get(_ctc_logits(self.config, prepared, features, feature_lengths))
        return greedy_ctc(logits, lengths, self.config.ctc_blank_id)

    def __call__(self, prepared: dict, batch: Batch) -> list[str]:
        paths = self.label_paths(prepared, batch.features, batch.feature_lengths)
        return [self.tokenizer.decode(path) for path in paths]
