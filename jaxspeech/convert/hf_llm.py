"""Hugging Face ``LlamaForCausalLM`` / ``Qwen2ForCausalLM`` directories <-> ``DecoderLM`` params.

A directory holds ``config.json`` and ``model.safetensors`` (or shards + index). Import checks every
tensor's shape against the model built from the config and names the tensor on any mismatch;
export writes a directory ``transformers`` loads with ``from_pretrained``. A model whose vocabulary
is padded for sharding (``LLMConfig.vocab_multiple``) gets zero rows past the checkpoint's
``vocab_size`` on import, and export drops them.
"""

from __future__ import annotations

import json
import os
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn
from flax import traverse_util

from jaxspeech.convert.safetensors_io import CheckpointError, SafetensorsReader, write_safetensors
from jaxspeech.layers.rope import RopeConfig
from jaxspeech.llm.config import LLMConfig
from jaxspeech.llm.decoder import DecoderLM

SUPPORTED_MODEL_TYPES = ("llama", "qwen2")
_ARCHITECTURES = {"llama": "LlamaForCausalLM", "qwen2": "Qwen2ForCausalLM"}

# (our path inside a layer, HF name inside "model.layers.{i}.", transpose?)
_LAYER_TENSORS = (
    ("input_layernorm/scale", "input_layernorm.weight", False),
    ("post_attention_layernorm/scale", "post_attention_layernorm.weight", False),
    ("self_attn/q_proj/kernel", "self_attn.q_proj.weight", True),
    ("self_attn/k_proj/kernel", "self_attn.k_proj.weight", True),
    ("self_attn/v_proj/kernel", "self_attn.v_proj.weight", True),
    ("self_attn/o_proj/kernel", "self_attn.o_proj.weight", True),
    ("self_attn/q_proj/bias", "self_attn.q_proj.bias", False),
    ("self_attn/k_proj/bias", "self_attn.k_proj.bias", False),
    ("self_attn/v_proj/bias", "self_attn.v_proj.bias", False),
    ("self_attn/o_proj/bias", "self_attn.o_proj.bias", False),
    ("mlp/gate_proj/kernel", "mlp.gate_proj.weight", True),
    ("mlp/up_proj/kernel", "mlp.up_proj.weight", True),
    ("mlp/down_proj/kernel", "mlp.down_proj.weight", True),
    ("mlp/gate_proj/bias", "mlp.gate_proj.bias", False),
    ("mlp/up_proj/bias", "mlp.up_proj.bias", False),
    ("mlp/down_proj/bias", "mlp.down_proj.bias", False),
)
_GLOBAL_TENSORS = (
    ("embed_tokens/embedding", "model.embed_tokens.weight", False),
    ("norm/scale", "model.norm.weight", False),
    ("lm_head/kernel", "lm_head.weight", True),
)
# Our parameters with a vocabulary axis (padded to ``padded_vocab_size``), and that axis.
_VOCAB_AXIS = {"embed_tokens/embedding": 0, "lm_head/kernel": 1}


def _rope_from_hf(hf: dict) -> RopeConfig:
    theta = float(hf.get("rope_theta", (hf.get("rope_parameters") or {}).get("rope_theta", 10000.0)))
    scaling = hf.get("rope_scaling") or hf.get("rope_parameters") or {}
    kind = scaling.get("rope_type", scaling.get("type", "default"))
    if kind in (None, "default"):
        return RopeConfig(theta=theta)
    if kind == "linear":
        return RopeConfig(theta=theta, scaling="linear", factor=float(scaling["factor"]))
    if kind == "llama3":
        return RopeConfig(
            theta=theta,
            scaling="llama3",
            factor=float(scaling["factor"]),
            low_freq_factor=float(scaling["low_freq_factor"]),
            high_freq_factor=float(scaling["high_freq_factor"]),
            original_max_position=int(scaling["original_max_position_embeddings"]),
        )
    raise CheckpointError(
        None, None, f"rope scaling type {kind!r} is not supported (supported: default, linear, llama3)"
    )


def config_from_hf(hf: dict, **overrides: Any) -> LLMConfig:
    """LLMConfig from a ``config.json`` dict; ``overrides`` set dtype, scan_layers, attn_impl, ..."""
    model_type = hf.get("model_type")
    if model_type not in SUPPORTED_MODEL_TYPES:
        raise CheckpointError(None, None, f"has model_type {model_type!r}; supported: {SUPPORTED_MODEL_TYPES}")
    if hf.get("hidden_act", "silu") not in ("silu", "swish"):
        raise CheckpointError(None, None, f"has hidden_act {hf['hidden_act']!r}, expected silu")
    try:
        config = _llm_config(hf, model_type)
    except KeyError as e:
        raise CheckpointError(None, None, f"lacks the field {e.args[0]!r}") from None
    return config.replace(**overrides)


def _llm_config(hf: dict, model_type: str) -> LLMConfig:
    return LLMConfig(
        vocab_size=hf["vocab_size"],
        hidden_size=hf["hidden_size"],
        intermediate_size=hf["intermediate_size"],
        num_layers=hf["num_hidden_layers"],
        num_heads=hf["num_attention_heads"],
        num_kv_heads=hf.get("num_key_value_heads") or hf["num_attention_heads"],
        head_dim=hf.get("head_dim"),
        rms_norm_eps=hf.get("rms_norm_eps", 1e-6),
        rope=_rope_from_hf(hf),
        qkv_bias=model_type == "qwen2",
        attention_bias=bool(hf.get("attention_bias", False)),
        mlp_bias=bool(hf.get("mlp_bias", False)),
        tie_word_embeddings=bool(hf.get("tie_word_embeddings", False)),
        max_position_embeddings=hf.get("max_position_embeddings", 4096),
        initializer_range=hf.get("initializer_range", 0.02),
    )


def config_to_hf(config: LLMConfig, model_type: str) -> dict:
    """A ``config.json`` dict for ``model_type`` ("llama" or "qwen2") describing ``config``."""
    if model_type not in SUPPORTED_MODEL_TYPES:
        raise ValueError(f"cannot export model_type {model_type!r}; supported: {SUPPORTED_MODEL_TYPES}")
    if model_type == "qwen2" and (not config.qkv_bias or config.attention_bias or config.mlp_bias):
        raise ValueError("a qwen2 export needs qkv_bias=True and no o/mlp bias")
    if model_type == "llama" and config.qkv_bias and not config.attention_bias:
        raise ValueError("a llama export cannot express q/k/v bias without o bias; export as qwen2")
    rope = config.rope
    hf = {
        "architectures": [_ARCHITECTURES[model_type]],
        "model_type": model_type,
        "vocab_size": config.vocab_size,
        "hidden_size": config.hidden_size,
        "intermediate_size": config.intermediate_size,
        "num_hidden_layers": config.num_layers,
        "num_attention_heads": config.num_heads,
        "num_key_value_heads": config.num_kv_heads,
        "head_dim": config.resolved_head_dim,
        "hidden_act": config.hidden_act,
        "rms_norm_eps": config.rms_norm_eps,
        "rope_theta": rope.theta,
        "tie_word_embeddings": config.tie_word_embeddings,
        "max_position_embeddings": config.max_position_embeddings,
        "initializer_range": config.initializer_range,
        "torch_dtype": "float32",
    }
    if model_type == "llama":
        hf.update(attention_bias=config.attention_bias, mlp_bias=config.mlp_bias)
    if rope.scaling == "linear":
        hf["rope_scaling"] = {"rope_type": "linear", "factor": rope.factor}
    elif rope.scaling == "llama3":
        hf["rope_scaling"] = {
            "rope_type": "llama3",
            "factor": rope.factor,
            "low_freq_factor": rope.low_freq_factor,
            "high_freq_factor": rope.high_freq_factor,
            "original_max_position_embeddings": rope.original_max_position,
        }
    return hf


def _abstract_params(config: LLMConfig) -> dict[str, jax.ShapeDtypeStruct]:
    """Flat {'a/b/c': ShapeDtypeStruct} of the model's parameters."""
    model = DecoderLM(config)
    shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 1), jnp.int32)))
    return traverse_util.flatten_dict(nn.unbox(shapes)["params"], sep="/")


def _layer_path(config: LLMConfig, i: int, inner: str) -> str:
    return f"layers/{inner}" if config.scan_layers else f"layers_{i}/{inner}"


def _tensor_map(config: LLMConfig, expected: dict) -> list[tuple[str, str, bool, int | None]]:
    """(our path, HF name, transpose, layer index or None) for every parameter of the model."""
    rows = [(ours, hf, t, None) for ours, hf, t in _GLOBAL_TENSORS if ours in expected]
    for i in range(config.num_layers):
        for inner, hf, t in _LAYER_TENSORS:
            if _layer_path(config, i, inner) in expected:
                rows.append((_layer_path(config, i, inner), f"model.layers.{i}.{hf}", t, i))
    covered = {ours for ours, *_ in rows}
    missing = sorted(set(expected) - covered)
    if missing:
        raise ValueError(f"no HF name known for parameters {missing}")
    return rows


def params_from_tensors(config: LLMConfig, get: Callable[[str, tuple], np.ndarray]) -> dict:
    """A ``DecoderLM``'s params (nested, no 'params' level) from ``get(hf_name, hf_shape) -> array``
    asked for ``*ForCausalLM`` names (``model.layers.0...``, ``lm_head.weight``); checkpoints that
    store the LM under another prefix rename inside ``get``, which raises on missing / misshapen tensors."""
    expected = _abstract_params(config)
    dtype = np.dtype(config.param_dtype)
    flat: dict[str, Any] = {}
    stacked: dict[str, list[np.ndarray]] = {}
    for ours, hf_name, transpose, layer in _tensor_map(config, expected):
        shape = list(expected[ours].shape)
        if ours in _VOCAB_AXIS:
            shape[_VOCAB_AXIS[ours]] = config.vocab_size
        per_layer_shape = tuple(shape[1:] if (config.scan_layers and layer is not None) else shape)
        hf_shape = per_layer_shape[::-1] if transpose else per_layer_shape
        tensor = np.asarray(get(hf_name, hf_shape), dtype=dtype)
        tensor = tensor.T if transpose else tensor
        if ours in _VOCAB_AXIS:
            tensor = pad_vocab(tensor, config.padded_vocab_size, _VOCAB_AXIS[ours])
        if config.scan_layers and layer is not None:
            stacked.setdefault(ours, []).append(tensor)
        else:
            flat[ours] = tensor
    flat.update({k: np.stack(v) for k, v in stacked.items()})
    return traverse_util.unflatten_dict(flat, sep="/")


def pad_vocab(table: np.ndarray, rows: int, axis: int) -> np.ndarray:
    """``table`` with zeros appended along its vocabulary ``axis`` up to ``rows`` entries."""
    missing = rows - table.shape[axis]
    if missing <= 0:
        return table
    widths = [(0, 0)] * table.ndim
    widths[axis] = (0, missing)
    return np.pad(table, widths)


def ignorable_tensor(config: LLMConfig, hf_name: str) -> bool:
    """Checkpoint tensors that carry no parameter: a tied head's copy, rotary tables."""
    return (config.tie_word_embeddings and hf_name == "lm_head.weight") or hf_name.endswith("rotary_emb.inv_freq")


def load_hf_llm_config(path: str, **overrides: Any) -> LLMConfig:
    """LLMConfig from an HF Llama/Qwen2 directory's ``config.json`` (``overrides``: see ``config_from_hf``)."""
    config_path = os.path.join(path, "config.json")
    try:
        with open(config_path) as f:
            hf = json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        raise CheckpointError(config_path, None, f"cannot be read as the model config ({e})") from e
    try:
        return config_from_hf(hf, **overrides)
    except CheckpointError as e:
        raise e.at(config_path) from None


def load_hf_llm(path: str, **overrides: Any) -> tuple[LLMConfig, dict]:
    """Reads an HF Llama/Qwen2 directory -> (LLMConfig, params {'params': ...}) as numpy arrays.

    Raises ``CheckpointError`` naming the tensor on a missing tensor or a wrong shape.
    """
    config = load_hf_llm_config(path, **overrides)
    reader = SafetensorsReader(path)
    params = params_from_tensors(config, reader.get)
    extra = [n for n in reader.unused() if not ignorable_tensor(config, n)]
    if extra:
        raise CheckpointError(path, None, f"holds tensors the model of its config.json does not use: {extra[:10]}")
    return config, {"params": params}


def export_hf_llm(
    config: LLMConfig,
    params: dict,
    out_dir: str,
    model_type: str,
    dtype: Any = np.float32,
    max_shard_bytes: int = 5 * 2**30,
    extra_files: dict[str, str] | None = None,
) -> None:
    """Writes ``params`` as an HF directory (config.json + safetensors) of ``model_type``.

    ``extra_files`` maps file names (e.g. tokenizer.json) to source paths copied alongside.
    """
    flat = traverse_util.flatten_dict(nn.unbox(params)["params"], sep="/")
    expected = _abstract_params(config)
    tensors: dict[str, np.ndarray] = {}
    for ours, hf_name, transpose, layer in _tensor_map(config, expected):
        value = np.asarray(jax.device_get(flat[ours]))
        if config.scan_layers and layer is not None:
            value = value[layer]
        if ours in _VOCAB_AXIS:  # the checkpoint holds the real tokens only
            value = np.take(value, np.arange(config.vocab_size), axis=_VOCAB_AXIS[ours])
        value = value.T if transpose else value
        tensors[hf_name] = np.ascontiguousarray(value.astype(dtype))
    write_safetensors(tensors, out_dir, max_shard_bytes=max_shard_bytes)
    hf = config_to_hf(config, model_type)
    hf["torch_dtype"] = np.dtype(dtype).name
    with open(os.path.join(out_dir, "config.json"), "w") as f:
        json.dump(hf, f, indent=2)
    for name, source in (extra_files or {}).items():
        with open(source, "rb") as src, open(os.path.join(out_dir, name), "wb") as dst:
            dst.write(src.read())
