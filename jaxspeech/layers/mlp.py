"""Feed-forward blocks: gated (SwiGLU, Llama/Qwen2) and plain two-layer (Whisper, Conformer)."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import linen as nn

from jaxspeech.layers import axes
from jaxspeech.layers.dense import Dense

ACTIVATIONS = {
    "silu": nn.silu,
    "swish": nn.silu,
    "gelu": lambda x: nn.gelu(x, approximate=False),
    "gelu_tanh": lambda x: nn.gelu(x, approximate=True),
    "relu": nn.relu,
}


def activation(name: str):
    """The activation function called ``name`` (silu/swish, gelu, gelu_tanh, relu)."""
    try:
        return ACTIVATIONS[name]
    except KeyError:
        raise ValueError(f"unknown activation {name!r}; expected one of {sorted(ACTIVATIONS)}") from None


class GatedMLP(nn.Module):
    """down(act(gate(x)) * up(x)): f[B, T, D] -> f[B, T, D]."""

    hidden_size: int
    act: str = "silu"
    use_bias: bool = False
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        dense = lambda n, ax, name: Dense(n, ax, self.use_bias, self.dtype, self.param_dtype, name=name)
        gate = dense(self.hidden_size, (axes.EMBED, axes.MLP), "gate_proj")(x)
        up = dense(self.hidden_size, (axes.EMBED, axes.MLP), "up_proj")(x)
        hidden = nn.with_logical_constraint(
            activation(self.act)(gate) * up, (axes.ACT_BATCH, axes.ACT_LENGTH, axes.ACT_MLP)
        )
        return dense(x.shape[-1], (axes.MLP, axes.EMBED), "down_proj")(hidden)


class MLP(nn.Module):
    """fc2(act(fc1(x))): f[B, T, D] -> f[B, T, D] (``out_features`` overrides the output width)."""

    hidden_size: int
    act: str = "gelu"
    use_bias: bool = True
    out_features: int | None = None
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        hidden = Dense(
            self.hidden_size, (axes.EMBED, axes.MLP), self.use_bias, self.dtype, self.param_dtype, name="fc1"
        )(x)
        hidden = activation(self.act)(hidden)
        out = self.out_features or x.shape[-1]
        return Dense(out, (axes.MLP, axes.EMBED), self.use_bias, self.dtype, self.param_dtype, name="fc2")(hidden)
