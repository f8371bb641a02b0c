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
    "segments": MaskSpec(
        causal=True,
        q_segment_ids=jnp.asarray(np.random.RandomState(1).randint(0, 3, (B, T))),
        kv_segment_ids=jnp.asarray(np.random.RandomState(2).randint(0, 3, (B, S))),
    ),
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


@pytest.mark.parametrize("with_bias", [False, True])
def test_reference_equals_dense_softmax_with_a_given_scale(with_bias):
    """The scale is applied on the exponent without a bias and on the scores with one: both are softmax(q k * scale + bias) v."""
    rng = np.random.RandomState(3)
    q, k, v = (rng.randn(1, n, 2, D).astype(np.float32) for n in (7, 9, 9))
    bias = rng.randn(1, 2, 7, 9).astype(np.float32) if with_bias else np.zeros((1, 2, 7, 9), np.float32)
    scores = np.einsum("bthd,bshd->bhts", q, k) * 0.3 + bias
    weights = np.exp(scores - scores.max(-1, keepdims=True))
    expected = np.einsum("bhts,bshd->bthd", weights / weights.sum(-1, keepdims=True), v)
    out = reference_attention(*map(jnp.asarray, (q, k, v)), bias=jnp.asarray(bias) if with_bias else None, scale=0.3)
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)


def test_reference_rejects_a_non_positive_scale():
    x = jnp.ones((1, 3, 2, D))
    with pytest.raises(ValueError, match="scale must be positive"):
        reference_attention(x, x, x, scale=0.0)
