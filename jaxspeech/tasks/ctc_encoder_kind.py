"""The CTC-encoder task kind (``task.kind = "ctc_encoder"``): the Speech LLM's audio encoder and CTC
head trained alone on CTC, e.g. as the first stage of a staged run (the encoder learns to read before
an LLM is put on top).

Config sections are the Speech LLM's (``tasks/speech_llm_kind.py``): ``init`` and ``model`` as
there (the CTC head is always on; the connector and LLM settings are read but never run, so one
``model`` section serves every stage of a staged config); ``task`` (``CTCEncoderTaskConfig``):
``spec_augment``. The parameters are exactly the Speech LLM's ``encoder/`` and ``ctc_head/``.
Batches hold the transcript's tokens alone (``TranscriptTokens``); evaluation decodes greedily
with the CTC head (``CTCDecoder``; a lexicon does not apply).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

from jaxspeech.config_dict import dataclass_from_dict, plain
from jaxspeech.data.pipeline_config import PipelineConfig
from jaxspeech.data.speech_llm_tokens import TranscriptTokens
from jaxspeech.decoding.generate import GenerationConfig
from jaxspeech.decoding.lexicon import TokenAutomaton
from jaxspeech.features.specaugment import SpecAugmentConfig
from jaxspeech.tasks.ctc_decoder import CTCDecoder
from jaxspeech.tasks.ctc_encoder import CTCEncoderTask
from jaxspeech.tasks.speech_llm_init import PretrainedSpeechLLM
from jaxspeech.tasks.speech_llm_kind import SpeechLLMKind
from jaxspeech.train.config import TrainConfig


@dataclasses.dataclass(frozen=True)
class CTCEncoderTaskConfig:
    """The ``task`` section of a CTC-encoder config."""

    kind: str = "ctc_encoder"
    spec_augment: SpecAugmentConfig | None = None


def speech_llm_sections(config: Mapping[str, Any], **model_changes) -> dict[str, Any]:
    """The ``init`` and ``model`` sections of ``config`` (``model_changes`` applied) for a
    ``SpeechLLMKind`` that builds the shared model config, tokenizer and pretrained weights."""
    sections = {"model": {**plain(config.get("model") or {}), **model_changes}}
    if "init" in config:
        sections["init"] = config["init"]
    return sections


class CTCEncoderKind:
    """``TaskKind`` of CTC on the encoder alone (see the module docstring)."""

    def __init__(self, config: Mapping[str, Any], need_weights: bool = True):
        self.task_config = dataclass_from_dict(CTCEncoderTaskConfig, config.get("task") or {}, "task")
        self.speech = SpeechLLMKind(speech_llm_sections(config, ctc=True), need_weights)
        self.init_source = self.speech.init_source

    def tokenizer_path(self, data_dir: str, tokenizer: str | None, build: bool) -> str:
        return self.speech.tokenizer_path(data_dir, tokenizer, build)

    def setup(self, tokenizer_path: str) -> None:
        speech = self.speech
        speech.setup(tokenizer_path)
        self.tokenizer_file, self.tokenizer, self.model = speech.tokenizer_file, speech.tokenizer, speech.model
        self.task = CTCEncoderTask(self.model, self.task_config.spec_augment, speech.vocab.eos_ids)

    @property
    def vocab_size(self) -> int:
        return self.speech.vocab_size

    def train_config(self, train: TrainConfig) -> TrainConfig:
        return train

    def check_train_source(self, source) -> None:
        del source  # records without a transcript are rejected by the pipeline

    def pipeline_values(self, values: dict[str, Any]) -> dict[str, Any]:
        return self.speech.pipeline_values(values)

    def check_pipeline(self, pipeline: PipelineConfig, where: str) -> None:
        self.speech.check_pipeline(pipeline, where)

    def example_tokens(self, inference: bool = False) -> TranscriptTokens:
        return TranscriptTokens(self.tokenizer_file, inference)

    def decoder(self, generation: GenerationConfig, lexicon: TokenAutomaton | None) -> CTCDecoder:
        del generation, lexicon  # greedy CTC: no search settings, no lexicon
        return CTCDecoder(self.model, self.tokenizer)

    def pretrained(self) -> PretrainedSpeechLLM | None:
        pretrained = self.speech.pretrained()
        return None if pretrained is None else dataclasses.replace(pretrained, parts=("encoder",))

    def after_training(self, params: Mapping[str, Any], workdir: str) -> list[str]:
        return []

    def notes(self) -> list[str]:
        return ["Decoded greedily with the CTC head alone (no LLM, no lexicon)."]
