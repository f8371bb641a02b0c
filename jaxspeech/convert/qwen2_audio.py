"""Hugging Face ``Qwen2AudioForConditionalGeneration`` directories -> ``SpeechLLM`` params.

Qwen2-Audio is a Whisper encoder whose last block's output is average-pooled (kernel 2, stride 2)
before the final LayerNorm, one Linear (``multi_modal_projector``) to the text width, and a Qwen2
LM whose ``audio_token_index`` placeholders are replaced by the audio embeddings (causal attention
over them). Clip lengths: L mel frames -> (L - 1) // 2 + 1 after the conv stem -> (n - 2) // 2 + 1
after pooling (``WhisperEncoderConfig.pool_before_norm = 2``; the data side counts placeholders
with the same steps).

Tensor names: the Hub layout that ``save_pretrained`` writes (``audio_tower.*``,
``multi_modal_projector.*``, ``language_model.model.*``, ``language_model.lm_head.*``) and the
in-memory layout of transformers 5 (``model.audio_tower.*``, ``model.multi_modal_projector.*``,
``model.language_model.*``, ``lm_head.*``). The Whisper-encoder and Qwen2 name tables are those of
``jaxspeech.convert.hf_whisper`` and ``jaxspeech.convert.hf_llm``.

Where we differ from transformers (both documented in ``tests/models/test_qwen2_audio_parity.py``):
  * our encoder zeroes mel frames past each clip's length before each convolution (so padding
    never changes a clip's result); HF's convolutions read the padded frames as given. The two
    agree exactly when frames past the length are zero and the length is even; otherwise the conv
    stem's last valid frame differs, and through attention every frame of that clip a little;
  * HF's audio tower requires exactly ``2 * max_source_positions`` mel frames; ours takes any
    number up to that.
HF's ``Qwen2AudioEncoder`` computes ``embed_scale`` from ``scale_embedding`` but never applies it,
so that field is ignored here too. The lm head is never tied to the embedding (HF builds it as a
separate Linear whatever ``text_config.tie_word_embeddings`` says).
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn
from flax import traverse_util

from jaxspeech.connectors.config import LinearConnectorConfig
from jaxspeech.convert import hf_llm, hf_whisper
from jaxspeech.convert.safetensors_io import CheckpointError, SafetensorsReader
from jaxspeech.models.audio_encoder import WhisperAudioEncoderConfig
from jaxspeech.models.speech_llm import SpeechLLM, SpeechLLMConfig

MODEL_TYPE = "qwen2_audio"
POOL = 2  # Qwen2AudioEncoder.avg_pooler = AvgPool1d(2, stride=2)

# transformers' Qwen2AudioEncoderConfig / Qwen2Config defaults: config.json files written as a diff
# against them omit these fields.
AUDIO_DEFAULTS = {
    "num_mel_bins": 128,
    "encoder_layers": 32,
    "encoder_attention_heads": 20,
    "encoder_ffn_dim": 5120,
    "d_model": 1280,
    "max_source_positions": 1500,
    "activation_function": "gelu",
}
TEXT_DEFAULTS = {
    "model_type": "qwen2",
    "vocab_size": 151936,
    "hidden_size": 4096,
    "intermediate_size": 22016,
    "num_hidden_layers": 32,
    "num_attention_heads": 32,
    "num_key_value_heads": 32,
    "hidden_act": "silu",
    "max_position_embeddings": 32768,
    "rms_norm_eps": 1e-6,
}
OPTIONS = ("dtype", "param_dtype", "scan_layers", "remat_policy", "attn_impl")


@dataclasses.dataclass(frozen=True)
class _Layout:
    """Name prefixes of the checkpoint's four parts."""

    audio: str
    projector: str
    lm: str  # replaces the "model." of a Qwen2ForCausalLM's names
    head: str  # replaces the "lm_head." of a Qwen2ForCausalLM's names


HUB_LAYOUT = _Layout("audio_tower.", "multi_modal_projector.", "language_model.model.", "language_model.lm_head.")
TRANSFORMERS_LAYOUT = _Layout("model.audio_tower.", "model.multi_modal_projector.", "model.language_model.", "lm_head.")


def _apply_options(config, options: dict):
    """``config`` with the options that it has a field for replaced."""
    fields = {f.name for f in dataclasses.fields(config)}
    return config.replace(**{k: v for k, v in options.items() if k in fields})


def config_from_hf(hf: dict, **options: Any) -> SpeechLLMConfig:
    """SpeechLLMConfig from a Qwen2-Audio ``config.json`` dict.

    ``options`` (dtype, param_dtype, scan_layers, remat_policy, attn_impl) apply to every part that
    has the field.
    """
    unknown = sorted(set(options) - set(OPTIONS))
    if unknown:
        raise ValueError(f"unknown options {unknown}; supported: {OPTIONS}")
    if hf.get("model_type") != MODEL_TYPE:
        raise CheckpointError(None, None, f"has model_type {hf.get('model_type')!r}, expected {MODEL_TYPE!r}")
    for part in ("audio_config", "text_config"):
        if not isinstance(hf.get(part), dict):
            raise CheckpointError(None, None, f"lacks the {part!r} dict (a Qwen2-Audio config.json has one)")
    placeholder = hf.get("audio_token_index", hf.get("audio_token_id"))
    if not isinstance(placeholder, int):
        raise CheckpointError(None, None, "lacks an integer 'audio_token_index'")

    audio_hf = {**AUDIO_DEFAULTS, **hf["audio_config"]}
    try:
        encoder = hf_whisper.encoder_config_from_hf(audio_hf)
    except CheckpointError as e:
        raise CheckpointError(None, None, f"audio_config {e.what}") from None
    encoder = _apply_options(encoder.replace(pool_before_norm=POOL), options)

    text_hf = {**TEXT_DEFAULTS, **hf["text_config"]}
    if text_hf.get("use_sliding_window"):
        raise CheckpointError(
            None, None, "text_config asks for sliding-window attention (use_sliding_window), which is not supported"
        )
    try:
        llm = hf_llm.config_from_hf(text_hf)
    except CheckpointError as e:
        raise CheckpointError(None, None, f"text_config {e.what}") from None
    llm = _apply_options(llm.replace(tie_word_embeddings=False), options)

    connector = _apply_options(LinearConnectorConfig(output_size=llm.hidden_size), options)
    return SpeechLLMConfig(
        encoder=WhisperAudioEncoderConfig(whisper=encoder),
        connector=connector,
        llm=llm,
        fusion="decoder_only",
        placeholder_id=placeholder,
        max_audio_frames=encoder.max_frames,
    )


def _abstract_params(config: SpeechLLMConfig) -> dict[str, jax.ShapeDtypeStruct]:
    """Flat {'encoder/whisper/conv1/kernel': ShapeDtypeStruct, ...} of the SpeechLLM's parameters."""
    frames = 4  # any clip the encoder accepts; parameter shapes do not depend on it
    features = jnp.zeros((1, 1, frames, config.encoder.n_mels), jnp.float32)
    lengths = jnp.full((1, 1), frames, jnp.int32)
    tokens = jnp.full((1, config.audio_token_count(frames)), config.placeholder_id, jnp.int32)
    shapes = jax.eval_shape(lambda: SpeechLLM(config).init(jax.random.key(0), tokens, features, lengths))
    return traverse_util.flatten_dict(nn.unbox(shapes)["params"], sep="/")


def _read_config(path: str) -> dict:
    config_path = os.path.join(path, "config.json")
    try:
        with open(config_path) as f:
            return json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        raise CheckpointError(config_path, None, f"cannot be read as the model config ({e})") from e


def _layout(reader: SafetensorsReader) -> _Layout:
    """transformers' in-memory names when any tensor uses them, else the Hub names."""
    inner = (TRANSFORMERS_LAYOUT.audio, TRANSFORMERS_LAYOUT.projector, TRANSFORMERS_LAYOUT.lm)
    return TRANSFORMERS_LAYOUT if any(k.startswith(inner) for k in reader.keys()) else HUB_LAYOUT


def _rename(name: str, old: str, new: str) -> str:
    if not name.startswith(old):
        raise ValueError(f"tensor name {name!r} does not start with {old!r}")
    return new + name[len(old) :]


def _lm_name(layout: _Layout, name: str) -> str:
    """A Qwen2ForCausalLM tensor name -> its name in the Qwen2-Audio checkpoint."""
    if name.startswith("lm_head."):
        return _rename(name, "lm_head.", layout.head)
    return _rename(name, "model.", layout.lm)


def _unused_is_ignorable(config: SpeechLLMConfig, layout: _Layout, name: str) -> bool:
    for ours, theirs in (("model.", layout.lm), ("lm_head.", layout.head)):
        if name.startswith(theirs):
            return hf_llm.ignorable_tensor(config.llm, ours + name[len(theirs) :])
    return False


def load_hf_qwen2_audio(path: str, **options: Any) -> tuple[SpeechLLMConfig, dict]:
    """Reads an HF Qwen2-Audio directory (config.json + model.safetensors, or shards + index) ->
    (SpeechLLMConfig, params {'params': {'encoder': {'whisper': ...}, 'connector': {'linear': ...},
    'llm': ...}}) as numpy arrays.

    Every tensor's shape is checked; a missing, misshapen or unused tensor raises ``CheckpointError``
    naming it. ``options``: see ``config_from_hf``.
    """
    try:
        config = config_from_hf(_read_config(path), **options)
    except CheckpointError as e:
        raise e.at(os.path.join(path, "config.json")) from None
    reader = SafetensorsReader(path)
    layout = _layout(reader)
    encoder_config = config.encoder.whisper

    encoder = hf_whisper.encoder_params_from_tensors(
        encoder_config, lambda name, shape: reader.get(_rename(name, "model.encoder.", layout.audio), shape)
    )
    positions = layout.audio + "embed_positions.weight"
    if positions in reader:
        table = reader.get(positions, (encoder_config.max_source_positions, encoder_config.d_model))
        hf_whisper.check_encoder_positions(table, encoder_config, path, positions)

    dtype = np.dtype(config.connector.param_dtype)
    audio_width, text_width = encoder_config.d_model, config.llm.hidden_size
    projector = {
        "kernel": np.asarray(reader.get(layout.projector + "linear.weight", (text_width, audio_width)), dtype).T,
        "bias": np.asarray(reader.get(layout.projector + "linear.bias", (text_width,)), dtype),
    }
    llm = hf_llm.params_from_tensors(config.llm, lambda name, shape: reader.get(_lm_name(layout, name), shape))

    extra = [n for n in reader.unused() if not _unused_is_ignorable(config, layout, n)]
    if extra:
        raise CheckpointError(path, None, f"holds tensors the Qwen2-Audio model does not use: {extra[:10]}")
    params = {"encoder": {"whisper": encoder}, "connector": {"linear": projector}, "llm": llm}
    _check_tree(config, params, path)
    return config, {"params": params}


def _check_tree(config: SpeechLLMConfig, params: dict, source: str) -> None:
    """The assembled tree must have exactly the SpeechLLM's parameter paths and shapes."""
    expected = _abstract_params(config)
    flat = traverse_util.flatten_dict(params, sep="/")
    problems = sorted(set(expected) ^ set(flat))
    problems += sorted(k for k in set(expected) & set(flat) if tuple(expected[k].shape) != flat[k].shape)
    if problems:
        raise CheckpointError(source, None, f"gives parameters that do not fit the SpeechLLM at {problems[:10]}")
