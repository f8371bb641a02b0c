"""Hugging Face ``ParakeetEncoder`` / ``ParakeetForCTC`` directories -> Conformer variables.

A directory holds ``config.json`` and ``model.safetensors`` (or shards + index). The model built
from the config fixes every parameter's shape; each HF tensor is checked against the shape it must
have and any mismatch, missing tensor or leftover tensor raises ``CheckpointError`` naming it.

Layout changes: torch ``Linear`` / 1x1 ``Conv1d`` weights are transposed to [in, out]; ``Conv2d``
weights [out, in, kh, kw] become [kh, kw, in, out]; the depthwise ``Conv1d`` [C, 1, K] becomes
[K, C]; ``bias_u`` / ``bias_v`` [H, D] are flattened to [H * D]; and the subsampling projection's
input rows are reordered from torch's channel-major (C, F') flattening to our mel-major (F', C).
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn
from flax import traverse_util

from jaxspeech.convert.safetensors_io import CheckpointError, SafetensorsReader
from jaxspeech.encoders.conformer import ConformerConfig, ConformerCTC, ConformerEncoder
from jaxspeech.encoders.subsampling import subsampled_features
from jaxspeech.layers.mlp import ACTIVATIONS

ENCODER_TYPE, CTC_TYPE = "parakeet_encoder", "parakeet_ctc"


@dataclasses.dataclass(frozen=True)
class Layout:
    """How one HF tensor maps to one of our arrays: its HF shape given ours, and the conversion."""

    hf_shape: Callable[[tuple[int, ...]], tuple[int, ...]]
    to_ours: Callable[[np.ndarray, tuple[int, ...]], np.ndarray]


SAME = Layout(lambda s: s, lambda a, s: a)
LINEAR = Layout(lambda s: (s[1], s[0]), lambda a, s: a.T)
CONV1X1 = Layout(lambda s: (s[1], s[0], 1), lambda a, s: a[:, :, 0].T)
DEPTHWISE1D = Layout(lambda s: (s[1], 1, s[0]), lambda a, s: a[:, 0, :].T)
CONV2D = Layout(lambda s: (s[3], s[2], s[0], s[1]), lambda a, s: a.transpose(2, 3, 1, 0))
POINTWISE2D = Layout(lambda s: (s[1], s[0], 1, 1), lambda a, s: a[:, :, 0, 0].T)


def _heads_layout(num_heads: int) -> Layout:
    return Layout(lambda s: (num_heads, s[0] // num_heads), lambda a, s: a.reshape(s))


def _projection_layout(channels: int, mel_out: int) -> Layout:
    """Our kernel [F' * C, D] (mel-major rows) <- torch weight [D, C * F'] (channel-major columns)."""

    def to_ours(a, s):
        return a.reshape(s[1], channels, mel_out).transpose(2, 1, 0).reshape(s)

    return Layout(lambda s: (s[1], s[0]), to_ours)


# (our path inside a block, HF name inside "layers.{i}.", layout)
_BLOCK_TENSORS = (
    *[(f"{ours}/{lin}/{p}", f"{hf}.{lin_hf}.{p_hf}", LINEAR if p == "kernel" else SAME)
      for ours, hf in (("ffn1", "feed_forward1"), ("ffn2", "feed_forward2"))
      for lin, lin_hf in (("fc1", "linear1"), ("fc2", "linear2"))
      for p, p_hf in (("kernel", "weight"), ("bias", "bias"))],
    *[(f"attention/{proj}/{p}", f"self_attn.{proj}.{p_hf}", LINEAR if p == "kernel" else SAME)
      for proj in ("q_proj", "k_proj", "v_proj", "o_proj")
      for p, p_hf in (("kernel", "weight"), ("bias", "bias"))],
    ("attention/pos_proj/kernel", "self_attn.relative_k_proj.weight", LINEAR),
    ("conv/pointwise_in/kernel", "conv.pointwise_conv1.weight", CONV1X1),
    ("conv/pointwise_in/bias", "conv.pointwise_conv1.bias", SAME),
    ("conv/depthwise/kernel", "conv.depthwise_conv.weight", DEPTHWISE1D),
    ("conv/depthwise/bias", "conv.depthwise_conv.bias", SAME),
    ("conv/norm/scale", "conv.norm.weight", SAME),
    ("conv/norm/bias", "conv.norm.bias", SAME),
    ("conv/pointwise_out/kernel", "conv.pointwise_conv2.weight", CONV1X1),
    ("conv/pointwise_out/bias", "conv.pointwise_conv2.bias", SAME),
    *[(f"{ours}/{p}", f"{hf}.{p_hf}", SAME)
      for ours, hf in (("norm_ffn1", "norm_feed_forward1"), ("norm_attention", "norm_self_att"),
                       ("norm_conv", "norm_conv"), ("norm_ffn2", "norm_feed_forward2"), ("norm_out", "norm_out"))
      for p, p_hf in (("scale", "weight"), ("bias", "bias"))],
)  # fmt: skip
_BLOCK_STATS = (("conv/norm/mean", "conv.norm.running_mean"), ("conv/norm/var", "conv.norm.running_var"))
_IGNORED_SUFFIXES = ("num_batches_tracked",)


def config_from_hf(hf: Mapping[str, Any], **overrides: Any) -> ConformerConfig:
    """ConformerConfig from a Parakeet ``config.json`` dict (encoder or CTC); ``overrides`` set dtype, scan, ..."""
    if hf.get("model_type") == CTC_TYPE:
        hf = hf["encoder_config"]
    if hf.get("model_type", ENCODER_TYPE) != ENCODER_TYPE:
        raise CheckpointError(
            None, None, f"has model_type {hf.get('model_type')!r}, expected {ENCODER_TYPE} or {CTC_TYPE}"
        )
    if hf.get("subsampling_conv_stride", 2) != 2:
        raise CheckpointError(
            None,
            None,
            f"has subsampling_conv_stride {hf['subsampling_conv_stride']}, expected 2 (the only one supported)",
        )
    act = hf.get("hidden_act", "silu")
    if act not in ACTIVATIONS:
        raise CheckpointError(None, None, f"has hidden_act {act!r}, expected one of {sorted(ACTIVATIONS)}")
    num_heads = hf.get("num_attention_heads", 8)
    if hf.get("num_key_value_heads", num_heads) != num_heads:
        raise CheckpointError(
            None, None, "has num_key_value_heads != num_attention_heads (Parakeet attention has as many of each)"
        )
    config = ConformerConfig(
        input_dim=hf.get("num_mel_bins", 80),
        d_model=hf.get("hidden_size", 1024),
        num_layers=hf.get("num_hidden_layers", 24),
        num_heads=num_heads,
        ffn_dim=hf.get("intermediate_size", 4096),
        activation=act,
        conv_kernel_size=hf.get("conv_kernel_size", 9),
        conv_norm="batch_norm",
        subsampling="dw_conv2d",
        subsampling_factor=hf.get("subsampling_factor", 8),
        subsampling_channels=hf.get("subsampling_conv_channels", 256),
        subsampling_kernel_size=hf.get("subsampling_conv_kernel_size", 3),
        subsampling_padding="same",
        pos_encoding="rel_pos",
        xscaling=bool(hf.get("scale_input", True)),
        attention_bias=bool(hf.get("attention_bias", True)),
        ffn_bias=bool(hf.get("attention_bias", True)),
        conv_bias=bool(hf.get("convolution_bias", True)),
        dropout_rate=float(hf.get("dropout", 0.1)),
        ffn_dropout_rate=float(hf.get("activation_dropout", 0.1)),
        pos_dropout_rate=float(hf.get("dropout_positions", 0.0)),
    )
    return config.replace(**overrides)


def _abstract_variables(config: ConformerConfig, vocab_size: int | None) -> dict[str, dict[str, jax.ShapeDtypeStruct]]:
    """{'params': {'a/b': shape}, 'batch_stats': {...}} of the model built from ``config``."""
    model = ConformerEncoder(config) if vocab_size is None else ConformerCTC(config, vocab_size)
    features = jnp.zeros((1, config.subsampling_factor, config.input_dim), jnp.float32)
    shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), features, jnp.ones((1,), jnp.int32)))
    return {name: traverse_util.flatten_dict(tree, sep="/") for name, tree in nn.unbox(shapes).items()}


def _subsampling_rows(config: ConformerConfig) -> list[tuple[str, str, Layout]]:
    if config.subsampling != "dw_conv2d":
        raise ValueError(f"Parakeet checkpoints use dw_conv2d subsampling, config asks for {config.subsampling!r}")
    rows = [("conv_0/kernel", "layers.0.weight", CONV2D), ("conv_0/bias", "layers.0.bias", SAME)]
    for stage in range(1, config.subsampling_config.num_stages):
        depthwise, pointwise = 3 * stage - 1, 3 * stage  # torch Sequential: conv, ReLU, [dw, pw, ReLU]...
        rows += [
            (f"depthwise_{stage}/kernel", f"layers.{depthwise}.weight", CONV2D),
            (f"depthwise_{stage}/bias", f"layers.{depthwise}.bias", SAME),
            (f"pointwise_{stage}/kernel", f"layers.{pointwise}.weight", POINTWISE2D),
            (f"pointwise_{stage}/bias", f"layers.{pointwise}.bias", SAME),
        ]
    mel_out = subsampled_features(config.input_dim, config.subsampling_config)
    rows += [
        ("proj/kernel", "linear.weight", _projection_layout(config.subsampling_channels, mel_out)),
        ("proj/bias", "linear.bias", SAME),
    ]
    return [(f"subsampling/{ours}", f"subsampling.{hf}", layout) for ours, hf, layout in rows]


def convert_parakeet(reader: SafetensorsReader, config: ConformerConfig, vocab_size: int | None = None) -> dict:
    """Variables {'params', 'batch_stats'} (numpy, ``config.param_dtype``) for ``ConformerEncoder``,
    or for ``ConformerCTC`` when ``vocab_size`` is given (HF names then start with ``encoder.``)."""
    if config.pos_encoding != "rel_pos" or config.conv_norm != "batch_norm":
        raise ValueError("Parakeet checkpoints need pos_encoding='rel_pos' and conv_norm='batch_norm'")
    expected = _abstract_variables(config, vocab_size)
    ours_prefix, hf_prefix = ("", "") if vocab_size is None else ("encoder/", "encoder.")
    heads = _heads_layout(config.num_heads)
    params_rows = [(ours_prefix + o, hf_prefix + h, l) for o, h, l in _subsampling_rows(config)]
    stats_rows = []
    for i in range(config.num_layers):
        block = f"{ours_prefix}{'layers' if config.scan_layers else f'layers_{i}'}/"
        params_rows += [(block + o, f"{hf_prefix}layers.{i}.{h}", l, i) for o, h, l in _BLOCK_TENSORS]
        params_rows += [
            (block + f"attention/pos_bias_{b}", f"{hf_prefix}layers.{i}.self_attn.bias_{b}", heads, i) for b in "uv"
        ]
        stats_rows += [(block + o, f"{hf_prefix}layers.{i}.{h}", SAME, i) for o, h in _BLOCK_STATS]
    if vocab_size is not None:
        params_rows += [("ctc_head/kernel", "ctc_head.weight", CONV1X1), ("ctc_head/bias", "ctc_head.bias", SAME)]
    variables = {
        "params": _read(reader, params_rows, expected["params"], config),
        "batch_stats": _read(reader, stats_rows, expected["batch_stats"], config),
    }
    extra = [n for n in reader.unused() if not n.endswith(_IGNORED_SUFFIXES)]
    if extra:
        raise CheckpointError(reader.path, None, f"holds tensors the Conformer model does not use: {extra[:10]}")
    return variables


def _read(reader: SafetensorsReader, rows: list[tuple], expected: dict, config: ConformerConfig) -> dict:
    """Reads every row whose path the model has; rows are (ours, hf, layout[, layer index])."""
    dtype = np.dtype(config.param_dtype)
    flat: dict[str, np.ndarray] = {}
    stacked: dict[str, list[np.ndarray]] = {}
    for ours, hf_name, layout, *layer in rows:
        if ours not in expected:
            continue  # e.g. a bias the config switches off
        shape = tuple(expected[ours].shape)
        if layer and config.scan_layers:
            shape = shape[1:]
        hf_shape = tuple(layout.hf_shape(shape))
        value = layout.to_ours(np.asarray(reader.get(hf_name, hf_shape), dtype=dtype), shape)
        if layer and config.scan_layers:
            stacked.setdefault(ours, []).append(value)
        else:
            flat[ours] = value
    flat.update({name: np.stack(values) for name, values in stacked.items()})
    missing = sorted(set(expected) - set(flat))
    if missing:
        raise ValueError(f"no Parakeet tensor is known for parameters {missing[:10]}")
    return traverse_util.unflatten_dict(flat, sep="/")


@dataclasses.dataclass(frozen=True)
class ParakeetCheckpoint:
    """A converted checkpoint: ``vocab_size`` is None for a bare encoder (use ``ConformerEncoder``),
    the CTC vocabulary (blank included) for ``ParakeetForCTC`` (use ``ConformerCTC``)."""

    config: ConformerConfig
    vocab_size: int | None
    variables: dict


def load_parakeet(path: str, **overrides: Any) -> ParakeetCheckpoint:
    """Reads an HF Parakeet directory (``ParakeetEncoder`` or ``ParakeetForCTC``).

    ``overrides`` change runtime fields of the config (dtype, param_dtype, scan_layers, attn_impl, ...).
    """
    config_path = os.path.join(path, "config.json")
    try:
        with open(config_path) as f:
            hf = json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        raise CheckpointError(config_path, None, f"cannot be read as the model config ({e})") from e
    try:
        config = config_from_hf(hf, **overrides)
    except CheckpointError as e:
        raise e.at(config_path) from None
    vocab_size = int(hf["vocab_size"]) if hf.get("model_type") == CTC_TYPE else None
    return ParakeetCheckpoint(config, vocab_size, convert_parakeet(SafetensorsReader(path), config, vocab_size))
