"""Dense layer whose kernel carries logical axis names (the unit LoRA and freezing act on).

``FLATTEN_INPUTS`` names, per JAX backend, whether ``Dense`` multiplies an input of several leading
axes f[B, T, in] as one flattened matrix f[B*T, in]: on XLA:CPU the kernel gradient over one leading
axis is much faster (``benchmarks/dense_flatten.py`` measures it); elsewhere the reshape could cost a
relayout (TPU tiles), so the batched dot stays.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
from flax import linen as nn

from jaxspeech.layers.broadcast import over_leading_axes

Initializer = Callable[..., jax.Array]
DEFAULT_KERNEL_INIT = nn.initializers.lecun_normal()
FLATTEN_INPUTS = {"cpu": True}


def flatten_inputs() -> bool:
    """``FLATTEN_INPUTS`` of the default backend (False for backends it does not name)."""
    return FLATTEN_INPUTS.get(jax.default_backend(), False)


class Dense(nn.Module):
    """y f[..., features] = x f[..., in] @ kernel f[in, features] (+ bias f[features]).

    ``axes`` names the kernel's (input, output) logical axes, e.g. ``("embed", "mlp")``.
    """

    features: int
    axes: tuple[str, str]
    use_bias: bool = False
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32
    kernel_init: Initializer = DEFAULT_KERNEL_INIT

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        kernel = self.param(
            "kernel",
            nn.with_logical_partitioning(self.kernel_init, self.axes),
            (x.shape[-1], self.features),
            self.param_dtype,
        )
        if x.ndim > 2 and flatten_inputs():
            y = jnp.dot(x.reshape(-1, x.shape[-1]).astype(self.dtype), kernel.astype(self.dtype))
            y = y.reshape(*x.shape[:-1], self.features)
        else:
            y = jnp.dot(x.astype(self.dtype), kernel.astype(self.dtype))
        if self.use_bias:
            bias = self.param(
                "bias",
                nn.with_logical_partitioning(nn.initializers.zeros, self.axes[1:]),
                (self.features,),
                self.param_dtype,
            )
            y = y + over_leading_axes(bias.astype(self.dtype), y.ndim)
        return y
