"""Tiny Conformer configs, padded feature batches and jit-compiled forwards shared by the tests."""

from __future__ import annotations

import functools

import jax
import numpy as np
from flax import linen as nn

from jaxspeech.encoders.conformer import ConformerConfig, ConformerEncoder

MELS = 16
TINY = ConformerConfig(
    input_dim=MELS,
    d_model=32,
    num_layers=2,
    num_heads=4,
    ffn_dim=64,
    conv_kernel_size=5,
    subsampling_channels=8,
    dropout_rate=0.0,
    ffn_dropout_rate=0.0,
)


def features(lengths, total: int | None = None, seed: int = 0, padding_value: float | None = 0.0):
    """(f32[B, T, MELS] random log-mel-like features, i32[B] lengths); padded frames hold
    ``padding_value`` (None: random garbage, to show that padding never leaks)."""
    lengths = np.asarray(lengths, np.int32)
    total = int(lengths.max()) if total is None else total
    rng = np.random.RandomState(seed)
    x = rng.randn(len(lengths), total, MELS).astype(np.float32)
    padded = np.arange(total)[None, :] >= lengths[:, None]
    x[padded] = 100 * rng.randn(int(padded.sum()), MELS) if padding_value is None else padding_value
    return x, lengths


@functools.lru_cache(maxsize=None)
def forward(config: ConformerConfig, hidden_layers=None):
    """jit(variables, features, lengths) -> ConformerEncoder outputs (eval mode), cached per config."""
    model = ConformerEncoder(config)
    return jax.jit(lambda variables, x, lengths: model.apply(variables, x, lengths, hidden_layers=hidden_layers))


def random_variables(module, *args, seed: int = 0, **kwargs):
    """Random variables for ``module.init(key, *args, **kwargs)``'s tree, drawn in numpy from its
    abstract shapes (no compiled initialiser): kernels ~ N(0, 1/fan_in), biases ~ N(0, 0.1^2),
    norm scales and batch-norm variances around 1 (non-trivial values expose mapping bugs)."""
    shapes = nn.unbox(jax.eval_shape(lambda: module.init(jax.random.key(0), *args, **kwargs)))
    rng = np.random.RandomState(seed)

    def draw(path, leaf):
        name = path[-1].key
        if name in ("scale", "var"):
            return (1.0 + 0.1 * np.abs(rng.randn(*leaf.shape))).astype(leaf.dtype)
        if name == "kernel":
            return (rng.randn(*leaf.shape) / np.sqrt(leaf.shape[-2])).astype(leaf.dtype)
        return (0.1 * rng.randn(*leaf.shape)).astype(leaf.dtype)

    return jax.tree_util.tree_map_with_path(draw, shapes)


@functools.lru_cache(maxsize=None)
def init(config: ConformerConfig, seed: int = 0):
    """Random variables of a ``ConformerEncoder`` for ``config`` (cached: do not modify them)."""
    x, lengths = features([config.subsampling_factor * 4])
    return random_variables(ConformerEncoder(config), x, lengths, seed=seed)
