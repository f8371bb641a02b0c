"""The Whisper fine-tuning task kind (``task.kind = "whisper_seq2seq"``): the encoder-decoder baseline.

Config sections:
  * ``init`` (``WhisperInitConfig``): ``whisper_dir`` (an HF Whisper directory: config.json,
    safetensors, generation_config.json, tokenizer.json) to fine-tune, with ``whisper`` naming its
    preset (``jaxspeech.convert.presets``: enough for ``jaxspeech plan``; the directory must match
    it), or ``random``
    (``WhisperConfig`` shape fields ``{"encoder": {...}, "decoder": {...}}``; the vocabulary comes
    from the tokenizer) to train from scratch;
  * ``model`` (``WhisperModelOptions``): options on both halves (dtype, scan_layers, ...);
  * ``task`` (``WhisperTaskConfig``): ``language`` (None for English-only checkpoints),
    ``leading_space``, ``loss``, ``spec_augment``, ``freeze_encoder`` (prepends
    ``("encoder/.*", None)`` to ``train.optimizer.lr_rules``), ``full_window`` (one bucket of the
    encoder's 30-s window, every frame attended: the pre-training view, see ``WhisperTask``).

The tokenizer is ``data.tokenizer``, else ``init.whisper_dir``; ``data.build_tokenizer`` writes a
byte-level Whisper-style tokenizer there when it is missing (debug runs). Pretrained weights reach
the trainer as its step-0 checkpoint. After training the model is exported as an HF Whisper
directory, ``<workdir>/whisper_hf``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils

from jaxspeech import paths
from jaxspeech.config_dict import dataclass_from_dict, plain
from jaxspeech.convert import presets
from jaxspeech.convert.hf_whisper import config_from_hf, export_hf_whisper, load_generation_config, load_hf_whisper
from jaxspeech.data.pipeline_config import PipelineConfig
from jaxspeech.data.tokenizers import TOKENIZER_JSON, Tokenizer, load_tokenizer
from jaxspeech.data.whisper_tokens import (
    END_OF_TEXT,
    NO_TIMESTAMPS,
    START_OF_TRANSCRIPT,
    TASKS,
    WhisperTokens,
    language_token,
    task_token,
    write_byte_level_whisper_tokenizer,
)
from jaxspeech.decoding.generate import GenerationConfig
from jaxspeech.decoding.lexicon import TokenAutomaton
from jaxspeech.errors import ConfigError, UsageError
from jaxspeech.features.specaugment import SpecAugmentConfig
from jaxspeech.decoding.whisper import make_generate_fn
from jaxspeech.models.whisper_seq2seq import WhisperConfig, WhisperGenerationConfig
from jaxspeech.tasks.whisper_seq2seq import WhisperLossConfig, WhisperTask
from jaxspeech.train.config import TrainConfig
from jaxspeech.types import Batch

log = logging.getLogger(__name__)

FREEZE_ENCODER_RULE = ("encoder/.*", None)
WHISPER_TASK = "transcribe"
EXPORT_SUBDIR = "whisper_hf"
METHODS = ("greedy", "beam")
# Files of an HF Whisper directory besides weights and configs, copied into the export when present.
SIDE_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.json",
    "merges.txt",
    "normalizer.json",
    "preprocessor_config.json",
)


@dataclasses.dataclass(frozen=True)
class WhisperInitConfig:
    whisper_dir: str | None = None
    random: Mapping[str, Any] | None = None
    whisper: str | None = None  # a preset name


@dataclasses.dataclass(frozen=True)
class WhisperModelOptions:
    """Options on both halves of ``WhisperConfig``; None keeps the model's default."""

    dtype: str | None = None
    param_dtype: str | None = None
    scan_layers: bool | None = None
    remat_policy: str | None = None
    attn_impl: str | None = None

    def given(self) -> dict[str, Any]:
        """The options set, dtype names as dtypes."""
        options = {k: v for k, v in dataclasses.asdict(self).items() if v is not None}
        return {k: jnp.dtype(v) if k in ("dtype", "param_dtype") else v for k, v in options.items()}


@dataclasses.dataclass(frozen=True)
class WhisperTaskConfig:
    kind: str = "whisper_seq2seq"
    language: str | None = "en"
    leading_space: bool = True
    loss: WhisperLossConfig = WhisperLossConfig()
    spec_augment: SpecAugmentConfig | None = None
    freeze_encoder: bool = False
    full_window: bool = False


def generation_for_tokenizer(tokenizer: Tokenizer, language: str | None) -> WhisperGenerationConfig:
    """Generation settings of a random-init Whisper whose special tokens are ``tokenizer``'s: the
    prompt of ``WhisperTokens``, every special token but the end suppressed, no empty output."""

    def token_id(token: str, required: bool = True) -> int | None:
        found = tokenizer.token_to_id(token)
        if found is None and required:
            raise UsageError(str(tokenizer.source), f"has no {token} token: not a Whisper-style tokenizer")
        return found

    end = token_id(END_OF_TEXT)
    languages = {language_token(language): token_id(language_token(language))} if language is not None else {}
    tasks = {task: token_id(task_token(task), required=False) for task in TASKS}
    return WhisperGenerationConfig(
        decoder_start_token_id=token_id(START_OF_TRANSCRIPT),
        eos_token_id=end,
        pad_token_id=end,
        no_timestamps_token_id=token_id(NO_TIMESTAMPS),
        is_multilingual=bool(languages),
        lang_to_id=languages,
        task_to_id={task: i for task, i in tasks.items() if i is not None},
        suppress_tokens=tuple(sorted(tokenizer.special_ids - {end})),
        begin_suppress_tokens=(end,),
    )


class WhisperDecoder:
    """Greedy or beam decoding of eval batches (``make_generate_fn``: compiled once per bucket)."""

    def __init__(self, kind: "WhisperSeq2SeqKind", generation: GenerationConfig):
        self.kind = kind
        self.generate = make_generate_fn(
            kind.model,
            kind.generation,
            language=kind.tokens.language,
            task=kind.tokens.task,
            num_beams=generation.num_beams if generation.method == "beam" else 1,
            max_new_tokens=generation.max_new_tokens,
            length_penalty=generation.length_penalty,
        )

    def prepare(self, params: Mapping[str, Any]) -> dict:
        return {"params": params}

    def __call__(self, variables: dict, batch: Batch) -> list[str]:
        features, lengths = self.kind.task.encoder_inputs(batch.features, batch.feature_lengths)
        out = self.generate(variables, features, lengths, np.asarray(batch.weights) > 0)  # padding rows idle
        tokens, counts = jax.device_get((out.tokens, out.lengths))
        return [self.kind.tokenizer.decode(row[:count].tolist()).strip() for row, count in zip(tokens, counts)]


@dataclasses.dataclass(frozen=True)
class PretrainedWhisper:
    """Step-0 weights: every parameter of the HF Whisper directory ``path``."""

    path: str
    options: Mapping[str, Any]
    source: str
    fresh: tuple[str, ...] = ()

    def load(self) -> Mapping[str, Any]:
        return load_hf_whisper(self.path, **self.options)[1]["params"]


class WhisperSeq2SeqKind:
    """``TaskKind`` of Whisper fine-tuning (see the module docstring)."""

    def __init__(self, config: Mapping[str, Any], need_weights: bool = True):
        self.task_config = dataclass_from_dict(WhisperTaskConfig, config.get("task") or {}, "task")
        self.init = dataclass_from_dict(WhisperInitConfig, config.get("init") or {}, "init")
        self.options = dataclass_from_dict(WhisperModelOptions, config.get("model") or {}, "model").given()
        whisper_dir, random_shapes, preset = self.init.whisper_dir, plain(self.init.random), self.init.whisper
        if whisper_dir and random_shapes:
            raise ConfigError(
                "init", "set init.whisper_dir (fine-tune a checkpoint) or init.random (from scratch), not both"
            )
        if preset and random_shapes:
            raise ConfigError("init", "set init.whisper (a preset) or init.random (from scratch), not both")
        if preset and not whisper_dir and need_weights:
            raise ConfigError(
                "init",
                f"names the architecture {preset} but no weights: pass "
                "--set init.whisper_dir=<HF Whisper directory> (a preset is enough for "
                "jaxspeech plan, not for training)",
            )
        if not (whisper_dir or random_shapes or preset):
            raise ConfigError(
                "init", "set init.whisper_dir=<HF Whisper directory> (or init.random to train a random-init Whisper)"
            )
        if random_shapes:  # the shapes checked now; the vocabulary comes with the tokenizer
            dataclass_from_dict(WhisperConfig, random_shapes, "init.random")
        self.init_source = f"HF Whisper checkpoint {whisper_dir}" if whisper_dir else "random init"

    @property
    def language(self) -> str | None:
        return self.task_config.language

    def tokenizer_path(self, data_dir: str, tokenizer: str | None, build: bool) -> str:
        path = tokenizer or self.init.whisper_dir
        if not path:
            raise ConfigError(
                "data.tokenizer",
                "no tokenizer: set data.tokenizer (a directory with tokenizer.json) or init.whisper_dir",
            )
        if build and not os.path.isfile(os.path.join(path, TOKENIZER_JSON)):
            write_byte_level_whisper_tokenizer(path, languages=(self.language or "en",))
            log.info("wrote a byte-level Whisper-style tokenizer to %s", path)
        return path

    def planned_model(self) -> WhisperConfig | None:
        """The model of ``init.whisper_dir``'s config.json or of the preset ``init.whisper`` (which the
        directory must match), without a tokenizer; None for random init."""
        planned = None
        if self.init.whisper:
            planned = config_from_hf(presets.whisper_hf_config(self.init.whisper), **self.options)
        if not self.init.whisper_dir:
            return planned
        with open(os.path.join(self.init.whisper_dir, "config.json")) as f:
            config = config_from_hf(json.load(f), **self.options)
        if planned is not None:
            presets.check_matches(
                self.init.whisper,
                dataclasses.asdict(planned),
                dataclasses.asdict(config),
                f"{self.init.whisper_dir}/config.json",
            )
        return config

    def _model(self) -> tuple[WhisperConfig, WhisperGenerationConfig]:
        """(config, generation settings); a checkpoint's weights are read only for step 0."""
        if self.init.whisper_dir:
            return self.planned_model(), load_generation_config(self.init.whisper_dir)
        shapes = dict(plain(self.init.random))
        shapes["decoder"] = {**(shapes.get("decoder") or {}), "vocab_size": self.tokenizer.vocab_size}
        config = dataclass_from_dict(WhisperConfig, shapes, "init.random").with_options(**self.options)
        return config, generation_for_tokenizer(self.tokenizer, self.language)

    def setup(self, tokenizer_path: str) -> None:
        self.tokenizer_file = tokenizer_path
        self.tokenizer = load_tokenizer(tokenizer_path)
        model, self.generation = self._model()
        self.setup_model(model, self.generation.pad_token_id)
        if self.tokenizer.vocab_size > self.model.decoder.vocab_size:
            raise UsageError(
                tokenizer_path,
                f"has {self.tokenizer.vocab_size} tokens, the decoder only {self.model.decoder.vocab_size} embeddings",
            )
        cfg = self.task_config
        self.tokens = WhisperTokens(
            tokenizer_path,
            self.language if self.generation.is_multilingual else None,
            WHISPER_TASK,
            leading_space=cfg.leading_space,
        )
        prompt = self.generation.prompt(self.tokens.language, self.tokens.task)
        if self.tokens.prefix_ids != prompt or self.tokens.end_id != self.generation.eos_token_id:
            raise UsageError(
                tokenizer_path,
                f"gives the prompt {self.tokens.prefix_ids} and end token "
                f"{self.tokens.end_id}, the generation config {prompt} and {self.generation.eos_token_id}: "
                "tokenizer and checkpoint do not match",
            )

    def setup_model(self, model: WhisperConfig, pad_id: int) -> None:
        """The trainer's task for ``model`` whose padding id is ``pad_id`` (what a plan needs)."""
        cfg = self.task_config
        self.model, self.pad_id = model, pad_id
        self.task = WhisperTask(
            model, cfg.loss, cfg.spec_augment, full_window=cfg.full_window, encoder_trained=not cfg.freeze_encoder
        )

    @property
    def vocab_size(self) -> int:
        return self.model.decoder.vocab_size

    def check_train_source(self, source) -> None:
        for index in range(len(source)):  # a blank transcript fails here, not at some later step
            self.tokens.transcript(source[index])

    def train_config(self, train: TrainConfig) -> TrainConfig:
        if not self.task_config.freeze_encoder:
            return train
        optimizer = dataclasses.replace(train.optimizer, lr_rules=(FREEZE_ENCODER_RULE, *train.optimizer.lr_rules))
        return dataclasses.replace(train, optimizer=optimizer)

    def pipeline_values(self, values: dict[str, Any]) -> dict[str, Any]:
        values = {**values, "n_mels": self.model.encoder.n_mels, "pad_token_id": self.pad_id}
        if self.task_config.full_window:  # one bucket: the encoder's whole window
            max_tokens = values.get("max_tokens", PipelineConfig.max_tokens)
            values.update(
                bucket_frames=(self.model.encoder.max_frames,),
                max_tokens=max_tokens if isinstance(max_tokens, int) else max(max_tokens),
            )
        return values

    def check_pipeline(self, pipeline: PipelineConfig, where: str) -> None:
        window = self.model.encoder.max_frames
        if max(pipeline.bucket_frames) > window:
            raise ConfigError(
                f"{where}.bucket_frames", f"{pipeline.bucket_frames} exceed the encoder's {window}-frame window"
            )
        if any(c != 1 for c in pipeline.clips_per_row):
            raise ConfigError(
                f"{where}.clips_per_row", f"must be 1: Whisper rows hold one clip, got {pipeline.clips_per_row}"
            )
        if max(pipeline.max_tokens) > self.model.decoder.max_target_positions:
            raise ConfigError(
                f"{where}.max_tokens",
                f"{pipeline.max_tokens} exceed the decoder's {self.model.decoder.max_target_positions} positions",
            )

    def example_tokens(self, inference: bool = False) -> WhisperTokens | None:
        return None if inference else self.tokens  # decoding reads only the audio

    def decoder(self, generation: GenerationConfig, lexicon: TokenAutomaton | None) -> WhisperDecoder:
        if generation.method not in METHODS:
            raise ConfigError(
                "eval.generation.method", f"expected one of {METHODS} for Whisper, got {generation.method!r}"
            )
        unsupported = [
            f.name
            for f in dataclasses.fields(GenerationConfig)
            if f.name not in ("method", "num_beams", "max_new_tokens", "length_penalty", "eos_ids", "pad_id")
            and getattr(generation, f.name) != f.default
        ]
        if unsupported or lexicon is not None:
            raise ConfigError(
                "eval.generation",
                f"Whisper decoding takes method, num_beams, max_new_tokens and "
                f"length_penalty only, got {unsupported + (['eval.lexicon'] if lexicon is not None else [])}",
            )
        return WhisperDecoder(self, generation)

    def pretrained(self) -> PretrainedWhisper | None:
        if not self.init.whisper_dir:
            return None
        return PretrainedWhisper(self.init.whisper_dir, self.options, self.init_source)

    def after_training(self, params: Mapping[str, Any], workdir: str) -> list[str]:
        if not paths.is_local(workdir):  # the safetensors export writes a local folder
            return [f"Not exported in Hugging Face format: {workdir} is not a local folder."]
        exported = self.export(params, os.path.join(workdir, EXPORT_SUBDIR))
        return [
            f"The fine-tuned model in Hugging Face format: {exported} "
            f"(`jaxspeech transcribe --whisper-dir {exported}`)."
        ]

    def export(self, params: Mapping[str, Any], out_dir: str) -> str:
        """Writes ``params`` as an HF Whisper directory (safetensors, config.json, generation_config.json
        and the tokenizer's files) that ``jaxspeech transcribe --whisper-dir`` and ``transformers`` load.
        Collective: every process calls it, process 0 writes."""
        host_params = multihost_utils.process_allgather(params, tiled=True)  # tiled: no extra process axis
        if jax.process_index() == 0:
            os.makedirs(out_dir, exist_ok=True)
            side_files = {
                name: os.path.join(self.tokenizer_file, name)
                for name in SIDE_FILES
                if os.path.isfile(os.path.join(self.tokenizer_file, name))
            }
            export_hf_whisper(self.model, {"params": host_params}, out_dir, self.generation, extra_files=side_files)
        return out_dir

    def notes(self) -> list[str]:
        notes = []
        if self.task_config.full_window:
            notes.append(
                f"full_window: every example padded to the encoder's {self.model.encoder.max_frames}-frame window."
            )
        if self.task_config.freeze_encoder:
            notes.append("The encoder was frozen.")
        return notes
