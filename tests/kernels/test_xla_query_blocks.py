"""The "xla" attention backend over query blocks equals one reference call over all queries."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxspeech.kernels.masks import MaskSpec
from jaxspeech.kernels.reference import reference_attention
from jaxspeech.layers.attention import XLA_QUERY_BLOCK, dot_product_attention

B, T, S, H, K, D = 2, 2 * XLA_QUERY_BLOCK + 37, 300, 4, 2, 8  # three unequal-length blocks, the last one padded


def _bidir(length):
    return jnp.asarray(np.tile((np.arange(length) < 40).astype(np.int32), (B, 1)))


MASKS = {
    "none": None,
    "kv_lengths": MaskSpec(kv_lengths=jnp.array([S, 123])),
    "causal": MaskSpec(causal=True),
    "segments": MaskSpec(causal=True, q_segment_ids=jnp.asarray(np.random.RandomState(1).randint(0, 3, (B, T))),
                         kv_segment_ids=jnp.asarray(np.random.RandomState(2).randint(0, 3, (B, S)))),
    "window": MaskSpec(window_left=30, window_right=5),
    "bidirectional_prefix": MaskSpec(causal=True, q_bidir_ids=_bidir(T), kv_bidir_ids=_bidir(S)),
    "chunks": MaskSpec(chunk_size=50, chunk_left=1),
}


@pytest.mark.parametrize("mask", sorted(MASKS))
def test_query_blocks_equal_one_call(mask):
    rng = np.random.RandomState(0)
    q, k, v = (jnp.asarray(rng.randn(B, n, h, D), jnp.float32) for n, h in ((T, H), (S, K), (S, K)))
    bias = jnp.asarray(rng.randn(1, H, T, S), jnp.float32) if mask in ("causal", "segments") else None
    blocked = jax.jit(lambda q: dot_product_attention(q, k, v, MASKS[mask], bias=bias, impl="xla"))
    whole = jax.jit(lambda q: reference_attention(q, k, v, MASKS[mask], bias=bias))
    np.testing.assert_allclose(blocked(q), whole(q), rtol=1e-6, atol=1e-6)
    if mask == "causal":
        grad = lambda f: jax.grad(lambda q: jnp.sum(f(q) ** 2))(q)
        np.testing.assert_allclose(grad(blocked), grad(whole), rtol=1e-5, atol=1e-5)
