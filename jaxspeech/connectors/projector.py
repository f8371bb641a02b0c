"""Projector connectors: linear, frame stacking + MLP, strided conv + MLP; optional norm matching.

All take encoder frames x f[B, T, E] with valid lengths i32[B] and return (y f[B, T', D], lengths'
i32[B]) with padded outputs zeroed; padding never changes a valid output.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import linen as nn

from jaxspeech.connectors.config import ConnectorConfig, output_lengths
from jaxspeech.layers import axes
from jaxspeech.layers.dense import Dense
from jaxspeech.kernels.masks import padding_mask
from jaxspeech.layers.mlp import MLP


def zero_padding(x: jax.Array, lengths: jax.Array) -> jax.Array:
    """x f[B, T, ...] with positions t >= lengths[b] set to 0."""
    valid = padding_mask(lengths, x.shape[1]).reshape(x.shape[:2] + (1,) * (x.ndim - 2))
    return jnp.where(valid, x, 0).astype(x.dtype)


class NormMatch(nn.Module):
    """Rescales each vector to ``target_rms`` (the LLM text-embedding RMS) times a learned gain."""

    param_dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, target_rms: jax.Array) -> jax.Array:
        gain = self.param("gain", nn.with_logical_partitioning(nn.initializers.ones, ()), (), self.param_dtype)
        x32 = x.astype(jnp.float32)
        rms = jnp.sqrt(jnp.mean(jnp.square(x32), axis=-1, keepdims=True) + 1e-12)
        return (x32 * (gain * target_rms / rms)).astype(x.dtype)


def connector_output(y: jax.Array, lengths: jax.Array, config: ConnectorConfig, target_rms: jax.Array | None):
    """The shared end of every connector: (y f[B, T', D] zeroed past the new lengths i32[B], which
    ``config.downsample`` gives), rescaled by ``NormMatch`` first when ``config.norm_match``. Call it
    from a compact method: the NormMatch module (``norm_match``) joins the calling module."""
    new_lengths = output_lengths(lengths, config.downsample)
    if config.norm_match:
        if target_rms is None:
            raise ValueError("norm_match needs the LLM's text-embedding RMS (target_rms)")
        y = NormMatch(config.param_dtype, name="norm_match")(y, target_rms)
    return zero_padding(y, new_lengths), new_lengths


class Projector(nn.Module):
    """linear | frame_stack | conv connector (``connectors/config.py``)."""

    config: ConnectorConfig

    @nn.compact
    def __call__(self, x: jax.Array, lengths: jax.Array, target_rms: jax.Array | None = None):
        c = self.config
        x = zero_padding(x, lengths)
        if c.kind == "linear":
            y = Dense(c.output_size, (axes.EMBED, axes.MLP), True, c.dtype, c.param_dtype, name="linear")(x)
        elif c.kind == "frame_stack":
            batch, frames, width = x.shape
            padded = -(-frames // c.stack) * c.stack
            x = jnp.pad(x, ((0, 0), (0, padded - frames), (0, 0))).reshape(batch, padded // c.stack, c.stack * width)
            y = MLP(c.hidden_size, c.act, True, c.output_size, c.dtype, c.param_dtype, name="mlp")(x)
        elif c.kind == "conv":
            conv = nn.Conv(
                c.hidden_size,
                (c.kernel,),
                strides=(c.stride,),
                padding=[(c.kernel // 2, c.kernel // 2)],
                dtype=c.dtype,
                param_dtype=c.param_dtype,
                kernel_init=nn.with_logical_partitioning(
                    nn.initializers.lecun_normal(), (axes.KERNEL, axes.CONV_IN, axes.CONV_OUT)
                ),
                bias_init=nn.with_logical_partitioning(nn.initializers.zeros, (axes.CONV_OUT,)),
                name="conv",
            )
            y = MLP(c.hidden_size, c.act, True, c.output_size, c.dtype, c.param_dtype, name="mlp")(nn.gelu(conv(x)))
        else:
            raise ValueError(f"Projector does not implement connector kind {c.kind!r}")
        return connector_output(y, lengths, c, target_rms)
