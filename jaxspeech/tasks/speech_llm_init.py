"""Speech LLMs started from Hugging Face checkpoints: a Whisper encoder and a Llama/Qwen2 LLM.

The ``init`` section of a Speech-LLM config (configs/slam_asr.py, configs/salmonn_style.py),
``SpeechLLMInitConfig``:
  * ``whisper_dir`` + ``llm_dir``: an HF Whisper directory and an HF Llama/Qwen2 directory
    (config.json + safetensors). Their config.json give the shapes of ``model.encoder.whisper`` and
    ``model.llm``, which then hold only the options ``OPTIONS``; the LLM directory's tokenizer is the
    default ``data.tokenizer``.
  * ``whisper`` + ``llm``: preset names (``jaxspeech.convert.presets``, e.g. "whisper-large-v3",
    "Llama-3.1-8B"): the same shapes without a download, enough to plan (``jaxspeech plan``); to
    train, the checkpoint directories are still needed and must match the presets. Before training, step 0 of the
    workdir gets their weights (``PretrainedSpeechLLM``) under ``encoder/`` and ``llm/``; the connector, cross-attention,
    LoRA adapters and CTC head keep their random init (``jaxspeech.train.warm_start``).
  * ``random``: ``{"encoder": WhisperEncoderConfig shapes, "llm": LLMConfig shapes}``, the same
    model from random init (no downloads: the debug variants and the shape tests); the vocabulary
    comes from the tokenizer.

Vocabulary: the LLM keeps its checkpoint's embedding rows (often padded past the tokenizer). The
tokenizer gains the audio placeholder when it lacks it (``load_speech_tokenizer``); when that makes
it larger than the embedding, the token embedding f[V0, D] and an untied lm_head kernel f[D, V0]
grow to V rows / columns initialised to the mean of the checkpoint's (``extend_vocab``), then to
the LLM's ``padded_vocab_size`` with zeros (``model.llm.vocab_multiple``: padding for sharding).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import numpy as np

from jaxspeech.config_dict import check_keys, dataclass_from_dict, plain
from jaxspeech.convert import presets
from jaxspeech.convert.hf_llm import config_from_hf as llm_config_from_hf
from jaxspeech.convert.hf_llm import load_hf_llm, load_hf_llm_config, pad_vocab
from jaxspeech.convert.hf_whisper import encoder_config_from_hf, load_hf_encoder_config, load_hf_whisper_encoder
from jaxspeech.encoders.whisper import WhisperEncoderConfig
from jaxspeech.errors import ConfigError
from jaxspeech.layers.lora import LORA_A, LORA_B
from jaxspeech.llm.config import LLMConfig
from jaxspeech.models.speech_llm import SpeechLLMConfig

RANDOM_KEYS = {"encoder", "llm"}
# Fields of model.encoder.whisper / model.llm that a config states; init decides all the others.
OPTIONS = ("dtype", "param_dtype", "scan_layers", "remat_policy", "attn_impl")
LLM_OPTIONS = (*OPTIONS, "vocab_multiple")  # model.llm also states how its vocabulary is padded
# Parameters inside the pretrained LLM that no checkpoint holds: they keep their initial values.
LORA_ADAPTERS = rf".*/({LORA_A}|{LORA_B})"
SET_CHECKPOINTS = "--set init.whisper_dir=<HF Whisper directory> --set init.llm_dir=<HF Llama/Qwen2 directory>"
# Shape fields that do not change the computation (a checkpoint may differ from its preset there).
NOT_ARCHITECTURE = ("max_position_embeddings", "initializer_range")
# Where a config states the options of each part.
OPTION_SECTIONS = {"encoder": "model.encoder.whisper", "llm": "model.llm"}


@dataclasses.dataclass(frozen=True)
class SpeechLLMInitConfig:
    """Where the encoder and LLM come from: both HF directories (with ``whisper`` / ``llm`` naming
    their presets, which is all a plan needs), or ``random`` shapes (``{"encoder":
    WhisperEncoderConfig shapes, "llm": LLMConfig shapes}``)."""

    whisper_dir: str | None = None
    llm_dir: str | None = None
    random: Mapping[str, Any] | None = None
    whisper: str | None = None
    llm: str | None = None

    @property
    def has_checkpoints(self) -> bool:
        return bool(self.whisper_dir or self.llm_dir)

    def describe(self) -> str:
        return f"HF checkpoints {self.whisper_dir} (encoder) and {self.llm_dir} (LLM)"


@dataclasses.dataclass(frozen=True)
class InitShapes:
    """Shape fields of the Whisper encoder and the LLM (``llm["vocab_size"]``: the checkpoint's
    embedding rows; absent for random init) and where they come from."""

    encoder: Mapping[str, Any]
    llm: Mapping[str, Any]
    source: str


def _shape_fields(config) -> dict[str, Any]:
    """The fields of ``config`` (a WhisperEncoderConfig or LLMConfig) that are not options."""
    return {f.name: getattr(config, f.name) for f in dataclasses.fields(config) if f.name not in LLM_OPTIONS}


def _preset_shapes(init: SpeechLLMInitConfig) -> dict[str, dict[str, Any]]:
    """Shape fields of the presets ``init.whisper`` / ``init.llm`` names ({} for none named)."""
    parts = {}
    if init.whisper:
        parts["encoder"] = _shape_fields(encoder_config_from_hf(presets.whisper_hf_config(init.whisper)))
    if init.llm:
        parts["llm"] = _shape_fields(llm_config_from_hf(presets.llm_hf_config(init.llm)))
    return parts


def _architecture(shapes: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in shapes.items() if k not in NOT_ARCHITECTURE}


def init_shapes(init: SpeechLLMInitConfig, need_weights: bool = True) -> InitShapes:
    """Encoder and LLM shapes from ``init`` (reads the two config.json files, not the weights; or
    the presets ``init.whisper`` / ``init.llm`` name, which checkpoint directories must then match).
    Raises with the ``--set`` flags to pass when ``init`` names neither checkpoints nor shapes, or
    only presets while ``need_weights`` (training: the presets give shapes, not weights)."""
    whisper_dir, llm_dir, random = init.whisper_dir, init.llm_dir, plain(init.random)
    named = _preset_shapes(init)
    if named and random:
        raise ConfigError("init", "set init.whisper + init.llm (presets) or init.random (from scratch), not both")
    if init.has_checkpoints:
        if random:
            raise ConfigError(
                "init", "set init.whisper_dir + init.llm_dir (pretrained) or init.random (from scratch), not both"
            )
        if not (whisper_dir and llm_dir):
            raise ConfigError(
                "init",
                f"whisper_dir={whisper_dir!r}, llm_dir={llm_dir!r}: a Speech LLM starts from both "
                f"checkpoints: pass {SET_CHECKPOINTS}",
            )
        shapes = InitShapes(
            _shape_fields(load_hf_encoder_config(whisper_dir)),
            _shape_fields(load_hf_llm_config(llm_dir)),
            init.describe(),
        )
        for part, preset, directory in (("encoder", init.whisper, whisper_dir), ("llm", init.llm, llm_dir)):
            if part in named:
                presets.check_matches(
                    preset, _architecture(named[part]), getattr(shapes, part), f"{directory}/config.json"
                )
        return shapes
    if named:
        if set(named) != {"encoder", "llm"}:
            raise ConfigError(
                "init",
                f"names the preset(s) {[p for p in (init.whisper, init.llm) if p]}: "
                "a Speech LLM needs both init.whisper and init.llm",
            )
        if need_weights:
            raise ConfigError(
                "init",
                f"names the architectures {init.whisper} + {init.llm} but no weights: "
                f"pass {SET_CHECKPOINTS} (presets are enough for jaxspeech plan, not for training)",
            )
        return InitShapes(named["encoder"], named["llm"], f"presets {init.whisper} + {init.llm}")
    if not random:
        raise ConfigError(
            "init",
            f"names no weights: pass the checkpoints with {SET_CHECKPOINTS} "
            "(or set init.random to train a random-init model)",
        )
    check_keys(random, RANDOM_KEYS, "config.init.random")
    parts = {}
    for part, cls in (("encoder", WhisperEncoderConfig), ("llm", LLMConfig)):
        values = dict(random.get(part) or {})
        stated = sorted(set(values) & {*LLM_OPTIONS, "vocab_size"})
        if stated:
            raise ConfigError(
                f"init.random.{part}",
                f"holds shapes only: set {stated} in {OPTION_SECTIONS[part]} (vocab_size comes from the tokenizer)",
            )
        shapes = _shape_fields(dataclass_from_dict(cls, values, f"init.random.{part}"))
        parts[part] = {k: v for k, v in shapes.items() if k != "vocab_size"}
    return InitShapes(parts["encoder"], parts["llm"], "random init")


def model_section(
    model: Mapping[str, Any], shapes: InitShapes, vocab_size: int | None, source: str = ""
) -> dict[str, Any]:
    """``config.model`` with ``encoder.whisper`` and ``llm`` completed by ``shapes`` (for
    ``speech_llm_kind.model_config``). A shape field stated in the config too raises, naming it, as does
    a tokenizer (``vocab_size`` tokens, from ``source``) too large for the checkpoint's embedding (more
    than the added audio placeholder; not checked when ``vocab_size`` is None)."""
    model = dict(plain(model))
    encoder = dict(model.get("encoder") or {})
    if encoder.get("kind", "whisper") != "whisper":
        raise ConfigError("model.encoder.kind", f"is {encoder['kind']!r}, but config.init gives a Whisper encoder")
    whisper, llm = dict(encoder.get("whisper") or {}), dict(model.get("llm") or {})
    for where, stated, given, options in (
        (OPTION_SECTIONS["encoder"], whisper, shapes.encoder, OPTIONS),
        (OPTION_SECTIONS["llm"], llm, shapes.llm, LLM_OPTIONS),
    ):
        clash = sorted(set(stated) & set(given))
        if clash:
            raise ConfigError(
                where, f"sets {clash}, which config.init decides ({shapes.source}); state only {list(options)} there"
            )
    rows = shapes.llm.get("vocab_size")
    if vocab_size is not None and rows is not None and vocab_size > rows + 1:
        raise ConfigError(
            "data.tokenizer",
            f"{source} has {vocab_size} tokens, the LLM of {shapes.source} "
            f"{rows} embedding rows: more than the audio placeholder is missing, so the "
            "tokenizer does not belong to the checkpoint (set data.tokenizer to the LLM's)",
        )
    model["encoder"] = {**encoder, "kind": "whisper", "whisper": {**shapes.encoder, **whisper}}
    model["llm"] = {**shapes.llm, **llm}
    return model


def extend_vocab(llm: Mapping[str, Any], config: LLMConfig) -> dict[str, Any]:
    """``DecoderLM`` params (numpy, no "params" level) of a checkpoint with V0 token rows, in the
    vocabulary of ``config``: the rows of ``embed_tokens/embedding`` f[V0, D] and the columns of an
    untied ``lm_head/kernel`` f[D, V0] up to ``config.vocab_size`` are the mean of the checkpoint's
    (computed in float64), those up to ``config.padded_vocab_size`` zeros."""
    embedding = np.asarray(llm["embed_tokens"]["embedding"])
    extra = config.vocab_size - embedding.shape[0]
    if extra < 0:
        raise ValueError(
            f"the model has {config.vocab_size} token rows, fewer than the checkpoint's {embedding.shape[0]}"
        )
    if config.padded_vocab_size == embedding.shape[0]:
        return dict(llm)

    def grow(table: np.ndarray, axis: int) -> np.ndarray:
        mean = np.mean(table.astype(np.float64), axis=axis, keepdims=True).astype(table.dtype)
        return pad_vocab(
            np.concatenate([table, np.repeat(mean, extra, axis=axis)], axis=axis), config.padded_vocab_size, axis
        )

    grown = {**llm, "embed_tokens": {**llm["embed_tokens"], "embedding": grow(embedding, 0)}}
    if "lm_head" in llm:
        grown["lm_head"] = {**llm["lm_head"], "kernel": grow(np.asarray(llm["lm_head"]["kernel"]), 1)}
    return grown


def _options(config) -> dict[str, Any]:
    return {name: getattr(config, name) for name in OPTIONS}


@dataclasses.dataclass(frozen=True)
class PretrainedSpeechLLM:
    """Step-0 weights from ``init``'s checkpoints in the layout of ``config`` (LoRA adapters fresh);
    ``parts``: the subtrees to load (a task that runs only the encoder, or only the LLM, names one)."""

    init: SpeechLLMInitConfig
    config: SpeechLLMConfig
    fresh: tuple[str, ...] = (LORA_ADAPTERS,)
    parts: tuple[str, ...] = ("encoder", "llm")

    @property
    def source(self) -> str:
        return self.init.describe()

    def load(self) -> dict[str, Any]:
        """{"encoder": {"whisper": ...}, "llm": ...} (the ``parts``): the checkpoints' weights (numpy) in the
        layout of ``config`` (its scan_layers, param_dtype), the LLM's vocabulary grown to
        ``config.llm``'s (``extend_vocab``). Raises ``CheckpointError`` naming a missing or misshapen tensor and the
        shape expected."""
        config, weights = self.config, {}
        if "encoder" in self.parts:
            _, encoder = load_hf_whisper_encoder(self.init.whisper_dir, **_options(config.encoder.whisper))
            weights["encoder"] = {"whisper": encoder}
        if "llm" in self.parts:
            _, llm = load_hf_llm(self.init.llm_dir, **_options(config.llm))
            weights["llm"] = extend_vocab(llm["params"], config.llm)
        return weights
