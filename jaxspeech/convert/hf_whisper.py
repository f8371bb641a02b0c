"""Whisper checkpoints <-> ``WhisperSeq2Seq`` params.

Imports Hugging Face ``WhisperForConditionalGeneration`` / ``WhisperModel`` directories
(config.json + model.safetensors, or shards + index) and OpenAI checkpoints (``.pt`` holding
``{"dims": ..., "model_state_dict": ...}``, read with ``torch.load(weights_only=True)``: tensors and
plain containers only, never arbitrary pickled objects). Exports HF directories that
``transformers`` loads. Every tensor's shape is checked against the model built from the config;
errors name the tensor and the expected vs found shape.

The encoder's sinusoidal position table is stored as a weight by both formats; it is not a
parameter here, so import verifies it equals ``sinusoids(max_source_positions, d_model)`` and export
writes it. The output projection is tied to the token embedding (``proj_out.weight``, when present,
must equal ``embed_tokens.weight``).
"""

from __future__ import annotations

import json
import os
import re
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn
from flax import traverse_util

from jaxspeech.convert.safetensors_io import CheckpointError, SafetensorsReader, write_safetensors
from jaxspeech.encoders.whisper import WhisperEncoder, WhisperEncoderConfig
from jaxspeech.layers.embeddings import sinusoids
from jaxspeech.models.whisper_seq2seq import (
    WhisperConfig,
    WhisperDecoderConfig,
    WhisperGenerationConfig,
    WhisperSeq2Seq,
)

SUPPORTED_MODEL_TYPES = ("whisper",)
ENCODER_POSITIONS = "model.encoder.embed_positions.weight"
TIED_OUTPUT = "proj_out.weight"

# Axis permutations between PyTorch tensors and our arrays; each is its own inverse.
_COPY = None
_LINEAR = (1, 0)  # torch Linear weight [out, in] <-> kernel [in, out]
_CONV = (2, 1, 0)  # torch Conv1d weight [out, in, k] <-> flax kernel [k, in, out]
Permutation = tuple[int, ...] | None


def _permute(array: np.ndarray, permutation: Permutation) -> np.ndarray:
    return array if permutation is None else array.transpose(permutation)


def _permute_shape(shape: tuple[int, ...], permutation: Permutation) -> tuple[int, ...]:
    return tuple(shape) if permutation is None else tuple(shape[i] for i in permutation)


def _attention_rows(ours: str, hf: str) -> list[tuple[str, str, Permutation]]:
    rows = [(f"{ours}/{p}_proj/kernel", f"{hf}.{p}_proj.weight", _LINEAR) for p in "qkv"]
    rows += [(f"{ours}/{p}_proj/bias", f"{hf}.{p}_proj.bias", _COPY) for p in "qv"]
    rows += [
        (f"{ours}/o_proj/kernel", f"{hf}.out_proj.weight", _LINEAR),
        (f"{ours}/o_proj/bias", f"{hf}.out_proj.bias", _COPY),
    ]
    return rows


def _norm_rows(ours: str, hf: str) -> list[tuple[str, str, Permutation]]:
    return [(f"{ours}/scale", f"{hf}.weight", _COPY), (f"{ours}/bias", f"{hf}.bias", _COPY)]


_MLP_ROWS = [
    ("mlp/fc1/kernel", "fc1.weight", _LINEAR),
    ("mlp/fc1/bias", "fc1.bias", _COPY),
    ("mlp/fc2/kernel", "fc2.weight", _LINEAR),
    ("mlp/fc2/bias", "fc2.bias", _COPY),
]
_ENCODER_LAYER = (
    _attention_rows("self_attn", "self_attn")
    + _norm_rows("self_attn_layer_norm", "self_attn_layer_norm")
    + _norm_rows("final_layer_norm", "final_layer_norm")
    + _MLP_ROWS
)
_DECODER_LAYER = (
    _ENCODER_LAYER
    + _attention_rows("encoder_attn", "encoder_attn")
    + _norm_rows("encoder_attn_layer_norm", "encoder_attn_layer_norm")
)
_ENCODER_GLOBAL = [
    ("conv1/kernel", "conv1.weight", _CONV),
    ("conv1/bias", "conv1.bias", _COPY),
    ("conv2/kernel", "conv2.weight", _CONV),
    ("conv2/bias", "conv2.bias", _COPY),
] + _norm_rows("layer_norm", "layer_norm")
_DECODER_GLOBAL = [
    ("embed_tokens/embedding", "embed_tokens.weight", _COPY),
    ("embed_positions", "embed_positions.weight", _COPY),
] + _norm_rows("layer_norm", "layer_norm")

# (our path, HF name, axis permutation, layer index or None)
TensorRow = tuple[str, str, Permutation, int | None]


def encoder_config_from_hf(hf: dict, source: str | None = None) -> WhisperEncoderConfig:
    """WhisperEncoderConfig from the encoder fields of a Whisper-style config dict (``d_model``,
    ``encoder_layers``, ...); ``source`` (a file) names the dict in errors."""
    if hf.get("activation_function", "gelu") != "gelu":
        raise CheckpointError(source, None, f"has activation_function {hf['activation_function']!r}, expected gelu")
    try:
        return WhisperEncoderConfig(
            n_mels=hf["num_mel_bins"],
            d_model=hf["d_model"],
            num_layers=hf["encoder_layers"],
            num_heads=hf["encoder_attention_heads"],
            ffn_dim=hf["encoder_ffn_dim"],
            max_source_positions=hf["max_source_positions"],
        )
    except KeyError as e:
        raise CheckpointError(source, None, f"lacks the field {e.args[0]!r}") from None


def config_from_hf(hf: dict, **options: Any) -> WhisperConfig:
    """WhisperConfig from a ``config.json`` dict; ``options`` set dtype, scan_layers, attn_impl, ... on both halves."""
    if hf.get("model_type") not in SUPPORTED_MODEL_TYPES:
        raise CheckpointError(
            None, None, f"has model_type {hf.get('model_type')!r}; supported: {SUPPORTED_MODEL_TYPES}"
        )
    if hf.get("scale_embedding", False):
        raise CheckpointError(
            None, None, "has scale_embedding=true, which is not supported (no released Whisper uses it)"
        )
    encoder = encoder_config_from_hf(hf)
    try:
        decoder = WhisperDecoderConfig(
            vocab_size=hf["vocab_size"],
            d_model=hf["d_model"],
            num_layers=hf["decoder_layers"],
            num_heads=hf["decoder_attention_heads"],
            ffn_dim=hf["decoder_ffn_dim"],
            max_target_positions=hf["max_target_positions"],
            init_std=hf.get("init_std", 0.02),
        )
    except KeyError as e:
        raise CheckpointError(None, None, f"lacks the field {e.args[0]!r}") from None
    return WhisperConfig(encoder, decoder).with_options(**options)


def config_to_hf(config: WhisperConfig, generation: WhisperGenerationConfig | None = None) -> dict:
    """A ``config.json`` dict (``WhisperForConditionalGeneration``) describing ``config``."""
    e, d = config.encoder, config.decoder
    hf = {
        "architectures": ["WhisperForConditionalGeneration"],
        "model_type": "whisper",
        "vocab_size": d.vocab_size,
        "num_mel_bins": e.n_mels,
        "d_model": d.d_model,
        "encoder_layers": e.num_layers,
        "encoder_attention_heads": e.num_heads,
        "encoder_ffn_dim": e.ffn_dim,
        "decoder_layers": d.num_layers,
        "decoder_attention_heads": d.num_heads,
        "decoder_ffn_dim": d.ffn_dim,
        "max_source_positions": e.max_source_positions,
        "max_target_positions": d.max_target_positions,
        "activation_function": "gelu",
        "scale_embedding": False,
        "init_std": d.init_std,
        "tie_word_embeddings": True,
        "is_encoder_decoder": True,
        "torch_dtype": "float32",
    }
    if generation is not None:
        hf.update(
            decoder_start_token_id=generation.decoder_start_token_id,
            eos_token_id=generation.eos_token_id,
            pad_token_id=generation.pad_token_id,
            bos_token_id=generation.eos_token_id,
            begin_suppress_tokens=list(generation.begin_suppress_tokens),
            suppress_tokens=list(generation.suppress_tokens),
        )
    return hf


def generation_from_hf(hf: dict, config_hf: dict | None = None) -> WhisperGenerationConfig:
    """WhisperGenerationConfig from ``generation_config.json`` (falling back to ``config.json`` fields)."""
    merged = {**(config_hf or {}), **hf}

    def field(name):
        if merged.get(name) is None:
            raise CheckpointError(None, None, f"lacks {name!r} (generation_config.json or config.json)")
        value = merged[name]
        return value[0] if isinstance(value, list) else value

    return WhisperGenerationConfig(
        decoder_start_token_id=int(field("decoder_start_token_id")),
        eos_token_id=int(field("eos_token_id")),
        pad_token_id=int(
            merged.get("pad_token_id") if merged.get("pad_token_id") is not None else field("eos_token_id")
        ),
        no_timestamps_token_id=merged.get("no_timestamps_token_id"),
        is_multilingual=bool(merged.get("is_multilingual", bool(merged.get("lang_to_id")))),
        lang_to_id=dict(merged.get("lang_to_id") or {}),
        task_to_id=dict(merged.get("task_to_id") or {}),
        suppress_tokens=tuple(merged.get("suppress_tokens") or ()),
        begin_suppress_tokens=tuple(merged.get("begin_suppress_tokens") or ()),
    )


def generation_to_hf(generation: WhisperGenerationConfig, max_length: int) -> dict:
    """A ``generation_config.json`` dict that HF ``generate`` reads."""
    hf = {
        "decoder_start_token_id": generation.decoder_start_token_id,
        "eos_token_id": generation.eos_token_id,
        "pad_token_id": generation.pad_token_id,
        "bos_token_id": generation.eos_token_id,
        "is_multilingual": generation.is_multilingual,
        "lang_to_id": dict(generation.lang_to_id),
        "task_to_id": dict(generation.task_to_id),
        "suppress_tokens": list(generation.suppress_tokens),
        "begin_suppress_tokens": list(generation.begin_suppress_tokens),
        "max_length": max_length,
    }
    if generation.no_timestamps_token_id is not None:
        hf["no_timestamps_token_id"] = generation.no_timestamps_token_id
    return hf


def _read_json(path: str) -> dict:
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        raise CheckpointError(path, None, f"cannot be read as JSON ({e})") from e


def load_generation_config(path: str) -> WhisperGenerationConfig:
    """Generation settings of an HF Whisper directory (``generation_config.json`` + ``config.json``)."""
    config_hf = _read_json(os.path.join(path, "config.json"))
    generation_path = os.path.join(path, "generation_config.json")
    generation_hf = _read_json(generation_path) if os.path.exists(generation_path) else {}
    try:
        return generation_from_hf(generation_hf, config_hf)
    except CheckpointError as e:
        raise e.at(path) from None


def _abstract_params(config: WhisperConfig) -> dict[str, jax.ShapeDtypeStruct]:
    """Flat {'encoder/conv1/kernel': ShapeDtypeStruct, ...} of the model's parameters."""
    model = WhisperSeq2Seq(config)
    features = jnp.zeros((1, 2, config.encoder.n_mels), jnp.float32)
    tokens = jnp.zeros((1, 1), jnp.int32)
    shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), features, None, tokens))
    return traverse_util.flatten_dict(nn.unbox(shapes)["params"], sep="/")


def _abstract_encoder_params(config: WhisperEncoderConfig) -> dict[str, jax.ShapeDtypeStruct]:
    """Flat {'conv1/kernel': ShapeDtypeStruct, ...} of a ``WhisperEncoder``'s parameters."""
    features = jnp.zeros((1, 2, config.n_mels), jnp.float32)
    shapes = jax.eval_shape(lambda: WhisperEncoder(config).init(jax.random.key(0), features))
    return traverse_util.flatten_dict(nn.unbox(shapes)["params"], sep="/")


def _half_rows(
    half: str, config: WhisperEncoderConfig | WhisperDecoderConfig, global_rows, layer_rows
) -> list[TensorRow]:
    """Rows of one half (paths inside it; HF names under ``model.{half}.``)."""
    rows = [(ours, f"model.{half}.{hf}", fn, None) for ours, hf, fn in global_rows]
    for i in range(config.num_layers):
        layer = "layers" if config.scan_layers else f"layers_{i}"
        rows += [(f"{layer}/{ours}", f"model.{half}.layers.{i}.{hf}", fn, i) for ours, hf, fn in layer_rows]
    return rows


def encoder_tensor_map(config: WhisperEncoderConfig) -> list[TensorRow]:
    """Rows for every parameter of a ``WhisperEncoder``: our paths inside the encoder, HF names as in
    ``WhisperForConditionalGeneration`` (``model.encoder.*``)."""
    return _half_rows("encoder", config, _ENCODER_GLOBAL, _ENCODER_LAYER)


def _tensor_map(config: WhisperConfig, expected: dict) -> list[TensorRow]:
    """Rows for every parameter of the model."""
    rows = [(f"encoder/{ours}", hf, fn, layer) for ours, hf, fn, layer in encoder_tensor_map(config.encoder)]
    rows += [
        (f"decoder/{ours}", hf, fn, layer)
        for ours, hf, fn, layer in _half_rows("decoder", config.decoder, _DECODER_GLOBAL, _DECODER_LAYER)
    ]
    unknown = sorted(set(expected) - {ours for ours, *_ in rows})
    if unknown:
        raise ValueError(f"no checkpoint name known for parameters {unknown}")
    return rows


def _is_scanned(config: WhisperConfig, path: str, layer: int | None) -> bool:
    """Whether ``path`` (a parameter of layer ``layer``) is stacked on a leading layers axis."""
    half = config.encoder if path.startswith("encoder/") else config.decoder
    return layer is not None and half.scan_layers


def _gather(
    rows: list[TensorRow],
    expected: dict,
    get: Callable[[str, tuple], np.ndarray],
    is_scanned: Callable[[str, int | None], bool],
    dtype: Any,
) -> dict:
    """Nested params from ``get(hf_name, hf_shape) -> array`` (which raises on missing / misshapen tensors)."""
    dtype = np.dtype(dtype)
    flat: dict[str, np.ndarray] = {}
    stacked: dict[str, list[np.ndarray]] = {}
    for ours, hf_name, permutation, layer in rows:
        shape = expected[ours].shape
        scanned = is_scanned(ours, layer)
        hf_shape = _permute_shape(shape[1:] if scanned else shape, permutation)
        tensor = _permute(np.asarray(get(hf_name, hf_shape), dtype=dtype), permutation)
        if scanned:
            stacked.setdefault(ours, []).append(tensor)
        else:
            flat[ours] = tensor
    flat.update({k: np.stack(v) for k, v in stacked.items()})
    return traverse_util.unflatten_dict(flat, sep="/")


def _params_from_tensors(config: WhisperConfig, get: Callable[[str, tuple], np.ndarray]) -> dict:
    """{'params': ...} of the whole model from ``get(hf_name, hf_shape)``."""
    expected = _abstract_params(config)
    scanned = lambda path, layer: _is_scanned(config, path, layer)
    return {"params": _gather(_tensor_map(config, expected), expected, get, scanned, config.encoder.param_dtype)}


def encoder_params_from_tensors(config: WhisperEncoderConfig, get: Callable[[str, tuple], np.ndarray]) -> dict:
    """A ``WhisperEncoder``'s params ({'conv1': ..., 'layers_0': ...}, no 'params' level) from
    ``get(hf_name, hf_shape) -> array`` asked for ``model.encoder.*`` names (checkpoints that store
    the encoder under another prefix rename inside ``get``); ``get`` raises on missing / misshapen
    tensors. The position table is not a parameter: check it with ``check_encoder_positions``."""
    expected = _abstract_encoder_params(config)
    rows = encoder_tensor_map(config)
    unknown = sorted(set(expected) - {ours for ours, *_ in rows})
    if unknown:
        raise ValueError(f"no checkpoint name known for encoder parameters {unknown}")
    scanned = lambda path, layer: layer is not None and config.scan_layers
    return _gather(rows, expected, get, scanned, config.param_dtype)


def check_encoder_positions(
    table: np.ndarray, config: WhisperEncoderConfig, source: str, tensor: str = ENCODER_POSITIONS
) -> None:
    """The stored encoder position table must be the sinusoids we compute.

    Checkpoints hold the table as computed in float32 by torch (angles up to 1499 rad), which
    differs from the exact table by up to ~1.2e-4 (measured for 1500 x 384), or rounded to
    float16; the tolerance covers both and still rejects any other (e.g. learned) table.
    """
    expected = sinusoids(config.max_source_positions, config.d_model)
    dtype = np.dtype(table.dtype)
    tolerance = max(1e-3, 2 * float(np.finfo(dtype).eps)) if dtype.kind == "f" else 1e-3
    diff = float(np.max(np.abs(np.asarray(table, np.float32) - expected)))
    if diff > tolerance:
        raise CheckpointError(
            source,
            tensor,
            f"(the encoder position table) differs from sinusoids(max_source_positions, "
            f"d_model) by {diff:.3g} (> {tolerance:.3g}); learned encoder positions are not supported",
        )


def _file_names(reader: SafetensorsReader) -> Callable[[str], str]:
    """``WhisperForConditionalGeneration`` tensor name -> its name in ``reader``'s files
    (``WhisperModel`` checkpoints name tensors without the ``model.`` prefix)."""
    bare = not any(k.startswith("model.") for k in reader.keys())
    return (lambda name: name.removeprefix("model.")) if bare else (lambda name: name)


def _check_stored_positions(
    reader: SafetensorsReader, to_file: Callable[[str], str], config: WhisperEncoderConfig, source: str
) -> None:
    """The checkpoint's encoder position table, when it stores one, must be our sinusoids."""
    if to_file(ENCODER_POSITIONS) in reader:
        table = reader.get(to_file(ENCODER_POSITIONS), (config.max_source_positions, config.d_model))
        check_encoder_positions(table, config, source)


def load_hf_config(path: str, **options: Any) -> WhisperConfig:
    """The WhisperConfig of an HF Whisper directory's ``config.json`` (no weights read), with ``options``."""
    config_path = os.path.join(path, "config.json")
    try:
        return config_from_hf(_read_json(config_path), **options)
    except CheckpointError as e:
        raise e.at(config_path) from None


def load_hf_whisper(path: str, **options: Any) -> tuple[WhisperConfig, dict]:
    """Reads an HF Whisper directory -> (WhisperConfig, params {'params': ...} as numpy arrays).

    ``options`` (dtype, param_dtype, scan_layers, remat_policy, attn_impl) apply to both halves.
    Accepts ``WhisperForConditionalGeneration`` (``model.`` prefix) and ``WhisperModel`` layouts.
    """
    config = load_hf_config(path, **options)
    reader = SafetensorsReader(path)
    to_file = _file_names(reader)
    params = _params_from_tensors(config, lambda name, shape: reader.get(to_file(name), shape))
    _check_stored_positions(reader, to_file, config.encoder, path)
    if TIED_OUTPUT in reader:
        embedding = params["params"]["decoder"]["embed_tokens"]["embedding"]
        output = np.asarray(reader.get(TIED_OUTPUT, embedding.shape), embedding.dtype)
        if not np.array_equal(output, embedding):
            raise CheckpointError(path, TIED_OUTPUT, "differs from the token embedding; untied heads are not supported")
    extra = reader.unused()
    if extra:
        raise CheckpointError(path, None, f"holds tensors the Whisper model does not use: {extra[:10]}")
    return config, params


def load_hf_encoder_config(path: str, **options: Any) -> WhisperEncoderConfig:
    """The encoder's shapes from an HF Whisper directory's ``config.json``, with ``options`` (dtype,
    param_dtype, scan_layers, remat_policy, attn_impl)."""
    config_path = os.path.join(path, "config.json")
    hf = _read_json(config_path)
    if hf.get("model_type") not in SUPPORTED_MODEL_TYPES:
        raise CheckpointError(
            config_path, None, f"has model_type {hf.get('model_type')!r}; supported: {SUPPORTED_MODEL_TYPES}"
        )
    return encoder_config_from_hf(hf, config_path).replace(**options)


def load_hf_whisper_encoder(path: str, **options: Any) -> tuple[WhisperEncoderConfig, dict]:
    """Reads the encoder half of an HF Whisper directory -> (WhisperEncoderConfig, a
    ``WhisperEncoder``'s params as numpy arrays, no 'params' level); the decoder's tensors are not read.

    ``options``: see ``load_hf_encoder_config``. Raises ``CheckpointError`` naming a missing or
    misshapen tensor (with the expected shape)."""
    config = load_hf_encoder_config(path, **options)
    reader = SafetensorsReader(path)
    to_file = _file_names(reader)
    params = encoder_params_from_tensors(config, lambda name, shape: reader.get(to_file(name), shape))
    _check_stored_positions(reader, to_file, config, path)
    return config, params


# OpenAI state-dict names -> HF names (applied in order).
_OPENAI_TO_HF = (
    (r"^(encoder|decoder)\.blocks\.", r"\1.layers."),
    (r"\.attn\.query\.", ".self_attn.q_proj."),
    (r"\.attn\.key\.", ".self_attn.k_proj."),
    (r"\.attn\.value\.", ".self_attn.v_proj."),
    (r"\.attn\.out\.", ".self_attn.out_proj."),
    (r"\.cross_attn\.query\.", ".encoder_attn.q_proj."),
    (r"\.cross_attn\.key\.", ".encoder_attn.k_proj."),
    (r"\.cross_attn\.value\.", ".encoder_attn.v_proj."),
    (r"\.cross_attn\.out\.", ".encoder_attn.out_proj."),
    (r"\.attn_ln\.", ".self_attn_layer_norm."),
    (r"\.cross_attn_ln\.", ".encoder_attn_layer_norm."),
    (r"\.mlp\.0\.", ".fc1."),
    (r"\.mlp\.2\.", ".fc2."),
    (r"\.mlp_ln\.", ".final_layer_norm."),
    (r"^encoder\.ln_post\.", "encoder.layer_norm."),
    (r"^decoder\.ln\.", "decoder.layer_norm."),
    (r"^encoder\.positional_embedding$", "encoder.embed_positions.weight"),
    (r"^decoder\.positional_embedding$", "decoder.embed_positions.weight"),
    (r"^decoder\.token_embedding\.", "decoder.embed_tokens."),
)
_OPENAI_DIMS = (
    "n_mels",
    "n_audio_ctx",
    "n_audio_state",
    "n_audio_head",
    "n_audio_layer",
    "n_vocab",
    "n_text_ctx",
    "n_text_state",
    "n_text_head",
    "n_text_layer",
)


def openai_name_to_hf(name: str) -> str:
    """``decoder.blocks.0.cross_attn.query.weight`` -> ``model.decoder.layers.0.encoder_attn.q_proj.weight``."""
    for pattern, replacement in _OPENAI_TO_HF:
        name = re.sub(pattern, replacement, name)
    return "model." + name


def config_from_openai_dims(dims: dict, **options: Any) -> WhisperConfig:
    """WhisperConfig from an OpenAI ``ModelDimensions`` dict (the MLP is 4x wide in every release)."""
    missing = [k for k in _OPENAI_DIMS if k not in dims]
    if missing:
        raise CheckpointError(None, None, f"'dims' lacks {missing}")
    if dims["n_audio_state"] != dims["n_text_state"]:
        raise CheckpointError(
            None, None, f"'dims' has n_audio_state {dims['n_audio_state']} != n_text_state {dims['n_text_state']}"
        )
    width = int(dims["n_audio_state"])
    encoder = WhisperEncoderConfig(
        n_mels=dims["n_mels"],
        d_model=width,
        num_layers=dims["n_audio_layer"],
        num_heads=dims["n_audio_head"],
        ffn_dim=4 * width,
        max_source_positions=dims["n_audio_ctx"],
    )
    decoder = WhisperDecoderConfig(
        vocab_size=dims["n_vocab"],
        d_model=width,
        num_layers=dims["n_text_layer"],
        num_heads=dims["n_text_head"],
        ffn_dim=4 * width,
        max_target_positions=dims["n_text_ctx"],
    )
    return WhisperConfig(encoder, decoder).with_options(**options)


def load_openai_whisper(path: str, **options: Any) -> tuple[WhisperConfig, dict]:
    """Reads an OpenAI ``.pt`` checkpoint -> (WhisperConfig, params) with ``torch.load(weights_only=True)``."""
    try:
        import torch  # only this format needs torch (not a dependency of jaxspeech itself)
    except ImportError as e:
        raise CheckpointError(
            path,
            None,
            "is an OpenAI .pt checkpoint, which needs PyTorch to read: pip install "
            "torch (or convert it to a Hugging Face directory with safetensors)",
        ) from e
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for corrupt or non-weights files
        raise CheckpointError(
            path, None, f"is not a loadable OpenAI Whisper checkpoint ({type(e).__name__}: {e})"
        ) from e
    if (
        not isinstance(checkpoint, dict)
        or not isinstance(checkpoint.get("dims"), dict)
        or not isinstance(checkpoint.get("model_state_dict"), dict)
    ):
        raise CheckpointError(path, None, "is not a dict with a 'dims' dict and a 'model_state_dict' dict")
    try:
        config = config_from_openai_dims(checkpoint["dims"], **options)
    except CheckpointError as e:
        raise e.at(path) from None
    not_tensors = [k for k, v in checkpoint["model_state_dict"].items() if not isinstance(v, torch.Tensor)]
    if not_tensors:
        raise CheckpointError(path, None, f"has model_state_dict entries that are not tensors: {not_tensors[:10]}")
    tensors = {openai_name_to_hf(k): v.float().numpy() for k, v in checkpoint["model_state_dict"].items()}
    used: set[str] = set()

    def get(name: str, shape: tuple) -> np.ndarray:
        if name not in tensors:
            raise CheckpointError(path, name, f"is missing (expected shape {tuple(shape)})")
        if tensors[name].shape != tuple(shape):
            raise CheckpointError(path, name, f"has shape {tensors[name].shape}, expected {tuple(shape)}")
        used.add(name)
        return tensors[name]

    params = _params_from_tensors(config, get)
    e = config.encoder
    if ENCODER_POSITIONS in tensors:
        check_encoder_positions(get(ENCODER_POSITIONS, (e.max_source_positions, e.d_model)), e, path)
    extra = sorted(set(tensors) - used)
    if extra:
        raise CheckpointError(path, None, f"holds tensors the Whisper model does not use: {extra[:10]}")
    return config, params


def hf_tensors(config: WhisperConfig, params: dict, dtype: Any = np.float32) -> dict[str, np.ndarray]:
    """Our params -> {HF name: tensor} of a ``WhisperForConditionalGeneration`` (tied head omitted)."""
    flat = traverse_util.flatten_dict(nn.unbox(params)["params"], sep="/")
    tensors: dict[str, np.ndarray] = {}
    for ours, hf_name, permutation, layer in _tensor_map(config, _abstract_params(config)):
        if ours not in flat:
            raise ValueError(f"params lack {ours!r}")
        value = np.asarray(jax.device_get(flat[ours]))
        value = value[layer] if _is_scanned(config, ours, layer) else value
        tensors[hf_name] = np.ascontiguousarray(_permute(value, permutation).astype(dtype))
    e = config.encoder
    tensors[ENCODER_POSITIONS] = sinusoids(e.max_source_positions, e.d_model).astype(dtype)
    return tensors


def export_hf_whisper(
    config: WhisperConfig,
    params: dict,
    out_dir: str,
    generation: WhisperGenerationConfig | None = None,
    dtype: Any = np.float32,
    max_shard_bytes: int = 5 * 2**30,
    extra_files: dict[str, str] | None = None,
) -> None:
    """Writes an HF ``WhisperForConditionalGeneration`` directory (config.json, safetensors, and
    generation_config.json when ``generation`` is given). ``extra_files`` maps names (tokenizer.json,
    preprocessor_config.json, ...) to source paths copied alongside."""
    write_safetensors(hf_tensors(config, params, dtype), out_dir, max_shard_bytes=max_shard_bytes)
    hf = config_to_hf(config, generation)
    hf["torch_dtype"] = np.dtype(dtype).name
    with open(os.path.join(out_dir, "config.json"), "w") as f:
        json.dump(hf, f, indent=2)
    if generation is not None:
        with open(os.path.join(out_dir, "generation_config.json"), "w") as f:
            json.dump(generation_to_hf(generation, config.decoder.max_target_positions), f, indent=2)
    for name, source in (extra_files or {}).items():
        with open(source, "rb") as src, open(os.path.join(out_dir, name), "wb") as dst:
            dst.write(src.read())
