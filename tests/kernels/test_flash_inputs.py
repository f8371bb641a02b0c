"""Bad inputs to flash_attention raise errors that name the tensor or setting and what was expected
(all raised before any kernel is traced)."""

import jax.numpy as jnp
import pytest

from jaxspeech.kernels.flash_attention import BlockSizes, flash_attention
from jaxspeech.kernels.masks import MaskSpec

Q = jnp.zeros((2, 40, 4, 16))
KV = jnp.zeros((2, 48, 2, 16))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(q=jnp.zeros((2, 40, 64))), r"q must be \[batch, length, heads, head_dim\]"),
        (dict(k=jnp.zeros((2, 48, 3, 16)), v=jnp.zeros((2, 48, 3, 16))), r"multiple of key/value heads \(3\)"),
        (dict(v=jnp.zeros((2, 47, 2, 16))), "must have the same shape"),
        (dict(k=jnp.zeros((2, 48, 2, 8)), v=jnp.zeros((2, 48, 2, 8))), "match q"),
        (dict(q=Q.astype(jnp.bfloat16)), "dtypes differ"),
        (dict(bias=jnp.zeros((2, 3, 40, 48))), r"bias has shape \(2, 3, 40, 48\); expected \[2 or 1, 4 or 1, 40, 48\]"),
        (dict(mask=MaskSpec(kv_lengths=jnp.ones((2, 1), jnp.int32))), r"MaskSpec.kv_lengths has shape \(2, 1\)"),
        (
            dict(mask=MaskSpec(q_segment_ids=jnp.ones((2, 48), jnp.int32))),
            r"MaskSpec.q_segment_ids .* expected \(2, 40\)",
        ),
        (dict(backend="cuda"), "unknown backend 'cuda'"),
        (
            dict(
                backend="gpu",
                interpret=False,
                q=jnp.zeros((2, 40, 4, 80)),
                k=jnp.zeros((2, 48, 2, 80)),
                v=jnp.zeros((2, 48, 2, 80)),
            ),
            "head_dim must be a power of two",
        ),  # fmt: skip
        (
            dict(
                backend="tpu",
                interpret=False,
                block_sizes=BlockSizes(16, 16),
                k=jnp.zeros((2, 400, 2, 16)),
                v=jnp.zeros((2, 400, 2, 16)),
            ),
            "key block 16 must be a multiple of 128",
        ),  # fmt: skip
    ],
)
def test_bad_inputs_raise_clear_errors(kwargs, message):
    args = dict(q=Q, k=KV, v=KV, mask=None)
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        flash_attention(args.pop("q"), args.pop("k"), args.pop("v"), args.pop("mask"), **args)
