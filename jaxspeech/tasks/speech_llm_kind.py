"""The Speech-LLM task kind (``task.kind = "speech_llm"``): ASR (or any prompted audio task) with an
audio encoder -> connector -> decoder LLM trained on its next-token loss.

Config sections:
  * ``init`` (optional, ``SpeechLLMInitConfig``): HF checkpoints or random shapes for a Whisper
    encoder and an LLM (``jaxspeech.tasks.speech_llm_init``); without it the model is
    ``model`` as written, from random init;
  * ``model``: ``SpeechLLMConfig`` fields and ``ctc`` (add a CTC head); ``placeholder_id`` and
    (with ``ctc``) ``ctc_vocab_size`` come from the tokenizer, ``llm.vocab_size`` too unless a
    checkpoint has more embedding rows;
  * ``task`` (``SpeechLLMTaskConfig``): ``loss``, ``spec_augment``, ``lora`` and ``prompt``.

The tokenizer is ``data.tokenizer``, else ``init.llm_dir``, else ``<data dir>/tokenizer.model``
(trained with the embedded corpus when ``data.tokenizer_vocab`` is set); it gains the audio
placeholder (``load_speech_tokenizer``).
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Mapping

import jax
import numpy as np

from jaxspeech.config_dict import dataclass_from_dict, plain
from jaxspeech.data.pipeline_config import PipelineConfig
from jaxspeech.data.prompts import instruction_prompts
from jaxspeech.data.special_tokens import AUDIO_PLACEHOLDER
from jaxspeech.data.speech_llm_tokens import SpeechLLMTokens, load_speech_tokenizer
from jaxspeech.data.tokenizers import Tokenizer
from jaxspeech.decoding.generate import GenerationConfig
from jaxspeech.decoding.lexicon import TokenAutomaton
from jaxspeech.decoding.speech import decoding_params, generate_from_audio
from jaxspeech.errors import ConfigError, UsageError
from jaxspeech.features.specaugment import SpecAugmentConfig
from jaxspeech.layers.lora import LoraConfig
from jaxspeech.models.speech_llm import SpeechLLMConfig
from jaxspeech.tasks.speech_llm import SpeechLLMTask, SpeechLossConfig
from jaxspeech.tasks.speech_llm_init import (
    InitShapes,
    PretrainedSpeechLLM,
    SpeechLLMInitConfig,
    init_shapes,
    model_section,
)
from jaxspeech.train.config import TrainConfig
from jaxspeech.types import Batch

DEFAULT_TOKENIZER = "tokenizer.model"


@dataclasses.dataclass(frozen=True)
class PromptConfig:
    """``instruction``: the prompt's instruction (``jaxspeech.data.prompts``: "asr", ...); ``chat``: wrap
    it in the tokenizer's chat template (None: when the tokenizer has one); ``system``: a system turn;
    ``chunk_tags``: the audio's k-th time chunk (a clip, or with ``chunk_frames`` a piece of that many
    log-mel frames) follows the control token ``<chunk_k>`` (NVLM's tile tags in time; the tokenizer
    must hold them, as the sentencepiece models jaxspeech trains do: 16); ``prompts``: instruction prompts
    added to (or replacing) ``data.prompts.DEFAULT_INSTRUCTION_PROMPTS``, by instruction, each a user
    turn with an ``{audio}`` slot; a record's ``instruction`` picks one."""

    instruction: str = "asr"
    chat: bool | None = False
    system: str | None = None
    chunk_tags: bool = False
    chunk_frames: int | None = None
    prompts: Mapping[str, str] = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        try:
            prompts = instruction_prompts(plain(self.prompts))
        except (ValueError, TypeError, AttributeError) as e:
            raise ConfigError(
                "task.prompt.prompts", f"expected {{instruction: prompt with an {{audio}} slot}}: {e}"
            ) from None
        if self.instruction not in prompts:
            raise ConfigError(
                "task.prompt.instruction", f"{self.instruction!r} has no prompt; known: {sorted(prompts)}"
            )
        object.__setattr__(self, "prompts", dict(plain(self.prompts)))
        if self.chunk_frames is not None and (self.chunk_frames < 1 or not self.chunk_tags):
            raise ConfigError("task.prompt.chunk_frames", f"needs chunk_tags and a value >= 1, got {self.chunk_frames}")


@dataclasses.dataclass(frozen=True)
class SpeechLLMTaskConfig:
    """The ``task`` section of a Speech-LLM config."""

    kind: str = "speech_llm"
    loss: SpeechLossConfig = SpeechLossConfig()
    spec_augment: SpecAugmentConfig | None = None
    lora: LoraConfig | None = None
    prompt: PromptConfig = PromptConfig()

    def __post_init__(self):
        if self.loss.eos_ids:
            raise ValueError("task.loss.eos_ids come from the tokenizer: leave them out of the config")


@dataclasses.dataclass(frozen=True)
class Vocabulary:
    """What the model and the loss take from the tokenizer (``source`` names it in errors); a plan
    (``jaxspeech plan``) states it without a tokenizer file."""

    size: int
    placeholder_id: int
    pad_id: int
    eos_ids: tuple[int, ...]
    source: str

    @classmethod
    def of(cls, tokenizer: Tokenizer) -> "Vocabulary":
        placeholder = tokenizer.token_to_id(AUDIO_PLACEHOLDER)
        if placeholder is None:
            raise UsageError(str(tokenizer.source), f"has no {AUDIO_PLACEHOLDER} token: not a Speech LLM tokenizer")
        return cls(
            tokenizer.vocab_size, placeholder, tokenizer.pad_id or 0, tuple(tokenizer.eos_ids), str(tokenizer.source)
        )


def model_config(model: Mapping[str, Any], vocab: Vocabulary) -> SpeechLLMConfig:
    """SpeechLLMConfig with the placeholder and CTC head sized from the tokenizer's ``vocab``, and the
    LLM's vocabulary too unless ``model.llm.vocab_size`` (a checkpoint's padded embedding) is larger."""
    model = dict(plain(model))
    use_ctc = bool(model.pop("ctc", False))
    llm = dict(model.get("llm") or {})
    llm["vocab_size"] = max(vocab.size, llm.get("vocab_size", 0))
    model.update(
        llm=llm,
        placeholder_id=vocab.placeholder_id,
        ctc_vocab_size=vocab.size if use_ctc else 0,
        ctc_blank_id=vocab.pad_id,
    )
    model.setdefault("connector", {})
    model["connector"] = {**model["connector"], "output_size": llm.get("hidden_size", 512)}
    return dataclass_from_dict(SpeechLLMConfig, model, "model")


class SpeechLLMDecoder:
    """Generation from the audio prompts of eval batches (``decoding/speech.py``)."""

    def __init__(self, kind: "SpeechLLMKind", generation: GenerationConfig, lexicon: TokenAutomaton | None):
        self.kind, self.generation, self.lexicon = kind, generation, lexicon

    def prepare(self, params: Mapping[str, Any]) -> tuple[SpeechLLMConfig, dict]:
        return decoding_params(self.kind.model, {"params": params}, self.kind.task_config.lora)

    def __call__(self, prepared: tuple[SpeechLLMConfig, dict], batch: Batch) -> list[str]:
        config, params = prepared
        segment_ids = np.array(batch.segment_ids)
        padding = np.asarray(batch.weights) == 0
        segment_ids[padding, 0] = 1  # padding rows: a dummy one-token prompt, inactive
        out = generate_from_audio(
            config,
            params,
            batch.tokens,
            segment_ids,
            batch.features,
            batch.feature_lengths,
            self.generation,
            lexicon=self.lexicon,
            active=~padding,
        )
        tokens, lengths = jax.device_get((out.tokens, out.lengths))
        return [self.kind.tokenizer.decode(row[:length].tolist()) for row, length in zip(tokens, lengths)]


class SpeechLLMKind:
    """``TaskKind`` of the Speech LLM (see the module docstring)."""

    def __init__(self, config: Mapping[str, Any], need_weights: bool = True):
        self.task_config = dataclass_from_dict(SpeechLLMTaskConfig, config.get("task") or {}, "task")
        has_init = "init" in config
        self.init = dataclass_from_dict(SpeechLLMInitConfig, config.get("init") or {}, "init")
        self.shapes: InitShapes | None = init_shapes(self.init, need_weights) if has_init else None
        self.model_values = plain(config.get("model") or {})
        self.init_source = self.init.describe() if self.init.has_checkpoints else "random init"
        # Every model key checked now, with stand-ins for what the tokenizer decides later.
        size = max(2, self.shapes.llm.get("vocab_size", 0) if self.shapes else 0)
        self._model(Vocabulary(size, 1, 0, (), "a stand-in"), check_size=False)

    def _model(self, vocab: Vocabulary, check_size: bool = True) -> SpeechLLMConfig:
        values = self.model_values
        if self.shapes is not None:
            values = model_section(values, self.shapes, vocab.size if check_size else None, vocab.source)
        return model_config(values, vocab)

    def tokenizer_path(self, data_dir: str, tokenizer: str | None, build: bool) -> str:
        if build:
            raise ConfigError(
                "data.build_tokenizer",
                "writes Whisper tokenizers: a Speech LLM's tokenizer is "
                "data.tokenizer, init.llm_dir's, or trained with the corpus (data.tokenizer_vocab)",
            )
        return tokenizer or self.init.llm_dir or os.path.join(data_dir, DEFAULT_TOKENIZER)

    def setup(self, tokenizer_path: str) -> None:
        self.tokenizer_file = tokenizer_path
        self.tokenizer = load_speech_tokenizer(tokenizer_path)
        self.setup_model(Vocabulary.of(self.tokenizer))
        prompt = self.task_config.prompt
        self.prompt = (
            prompt
            if prompt.chat is not None
            else dataclasses.replace(prompt, chat=self.tokenizer.chat_template is not None)
        )

    def setup_model(self, vocab: Vocabulary) -> None:
        """The model config and the trainer's task for a tokenizer of ``vocab`` (what a plan needs)."""
        self.vocab = vocab
        self.model = self._model(vocab)
        cfg = self.task_config
        self.task = SpeechLLMTask(
            self.model, dataclasses.replace(cfg.loss, eos_ids=vocab.eos_ids), cfg.spec_augment, cfg.lora
        )

    @property
    def vocab_size(self) -> int:
        return self.model.llm.padded_vocab_size  # the logits' width (padding ids included, never emitted)

    def train_config(self, train: TrainConfig) -> TrainConfig:
        return train

    def check_train_source(self, source) -> None:
        del source  # records without a transcript are rejected by the pipeline

    def pipeline_values(self, values: dict[str, Any]) -> dict[str, Any]:
        return {**values, "n_mels": self.model.encoder.n_mels, "pad_token_id": self.vocab.pad_id}

    def check_pipeline(self, pipeline: PipelineConfig, where: str) -> None:
        if pipeline.bucket_frames[-1] > self.model.max_audio_frames:
            raise ConfigError(
                f"{where}.bucket_frames",
                f"reach {pipeline.bucket_frames[-1]} frames but model.max_audio_frames "
                f"is {self.model.max_audio_frames}: raise it or drop the bucket",
            )
        # The longest clip's chunks need as many tags in the tokenizer (a plan has no tokenizer to ask).
        if self.task_config.prompt.chunk_tags and getattr(self, "tokenizer_file", None) is not None:
            tokens = self.example_tokens()
            tokens.chunk_tag_ids(len(tokens.chunk_token_counts([pipeline.bucket_frames[-1]])))

    @property
    def instruction_prompts(self) -> dict[str, str]:
        """{instruction: prompt}: the defaults with ``task.prompt.prompts``."""
        return instruction_prompts(self.task_config.prompt.prompts)

    def example_tokens(self, inference: bool = False) -> SpeechLLMTokens:
        steps = () if self.model.fusion == "cross_attention" else self.model.inline_steps
        prompt = self.prompt
        return SpeechLLMTokens(
            self.tokenizer_file,
            steps,
            instruction=prompt.instruction,
            prompts=self.instruction_prompts,
            chat=bool(prompt.chat),
            system=prompt.system,
            chunk_tags=prompt.chunk_tags,
            chunk_frames=prompt.chunk_frames,
            inference=inference,
        )

    def decoder(self, generation: GenerationConfig, lexicon: TokenAutomaton | None) -> SpeechLLMDecoder:
        generation = dataclasses.replace(
            generation, eos_ids=tuple(self.tokenizer.eos_ids), pad_id=self.tokenizer.pad_id or 0
        )
        return SpeechLLMDecoder(self, generation, lexicon)

    def pretrained(self) -> PretrainedSpeechLLM | None:
        return PretrainedSpeechLLM(self.init, self.model) if self.init.has_checkpoints else None

    def after_training(self, params: Mapping[str, Any], workdir: str) -> list[str]:
        return []

    def notes(self) -> list[str]:
        return []
