"""The Conformer's depthwise convolution against XLA's grouped convolution: values and gradients."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn

from jaxspeech.encoders.conformer import DepthwiseConv1D


def _grouped_conv(x, kernel, left):
    """The reference: one input channel per group, ``left`` zero frames before and K - 1 - left after."""
    taps, channels = kernel.shape
    return jax.lax.conv_general_dilated(
        x,
        kernel[:, None, :],
        window_strides=(1,),
        padding=[(left, taps - 1 - left)],
        dimension_numbers=("NWC", "WIO", "NWC"),
        feature_group_count=channels,
    )


@pytest.mark.parametrize("causal", [False, True])
def test_values_and_gradients_equal_a_grouped_convolution(causal):
    x = jax.random.normal(jax.random.key(0), (2, 13, 6))
    weights = jax.random.normal(jax.random.key(1), (2, 13, 6))  # a loss that weighs every output differently
    module = DepthwiseConv1D(kernel_size=5, causal=causal, use_bias=False)
    params = nn.unbox(module.init(jax.random.key(2), x))
    left = 4 if causal else 2

    def ours(x, kernel):
        return jnp.sum(jnp.sin(module.apply({"params": {"kernel": kernel}}, x)) * weights)

    def reference(x, kernel):
        return jnp.sum(jnp.sin(_grouped_conv(x, kernel, left)) * weights)

    kernel = params["params"]["kernel"]
    value, grads = jax.value_and_grad(ours, argnums=(0, 1))(x, kernel)
    expected_value, expected_grads = jax.value_and_grad(reference, argnums=(0, 1))(x, kernel)
    np.testing.assert_allclose(float(value), float(expected_value), rtol=1e-5)
    for got, expected in zip(grads, expected_grads):
        np.testing.assert_allclose(np.asarray(got), np.asarray(expected), atol=1e-5)
