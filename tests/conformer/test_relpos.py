"""Relative positions: the sinusoid table against Parakeet's, rel_shift against explicit indexing,
and chunked (streaming) attention masks checked through gradients."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxspeech.encoders.relpos import RelPositionAttention, rel_shift, relative_sinusoids
from jaxspeech.kernels.masks import MaskSpec
from jaxspeech.testing import conformer as tiny


@pytest.mark.parity
def test_relative_sinusoids_match_parakeet():
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    from transformers.models.parakeet.modeling_parakeet import ParakeetEncoderRelPositionalEncoding

    encoding = ParakeetEncoderRelPositionalEncoding(transformers.ParakeetEncoderConfig(hidden_size=32))
    ref = encoding(torch.zeros(1, 7, 32))[0].numpy()
    ours = relative_sinusoids(7, 32)
    assert ours.shape == ref.shape == (13, 32)
    np.testing.assert_allclose(ours, ref, atol=1e-6, rtol=0)


@pytest.mark.parametrize("length", [1, 2, 5])
def test_rel_shift_picks_each_distance(length):
    scores = np.random.RandomState(length).randn(2, 3, length, 2 * length - 1).astype(np.float32)
    # Column p of the unshifted scores is distance length-1-p; out[i, j] wants distance i - j.
    expected = np.empty((2, 3, length, length), np.float32)
    for i in range(length):
        for j in range(length):
            expected[..., i, j] = scores[..., i, length - 1 - (i - j)]
    np.testing.assert_array_equal(rel_shift(jnp.asarray(scores)), expected)


def _dependence(mask: MaskSpec, length: int) -> np.ndarray:
    """bool[T, T]: does output frame i of a random RelPositionAttention change with input frame j?"""
    module = RelPositionAttention(num_heads=2, head_dim=8)
    x = jnp.asarray(np.random.RandomState(0).randn(1, length, 16), jnp.float32)
    pos_emb = jnp.asarray(relative_sinusoids(length, 16))
    variables = tiny.random_variables(module, x, pos_emb, mask=mask)
    jacobian = jax.jit(jax.jacrev(lambda x: module.apply(variables, x, pos_emb, mask=mask)))(x)  # [1, T, E, 1, T, E]
    return np.asarray(jnp.any(jacobian[0, :, :, 0] != 0, axis=(1, 3)))


@pytest.mark.parametrize("chunk_size,left_chunks", [(3, 1), (4, 0), (2, None)])
def test_chunked_attention_sees_own_and_left_chunks_only(chunk_size, left_chunks):
    length, valid = 11, 10  # the last frame is padding: no valid frame may depend on it
    mask = MaskSpec(kv_lengths=jnp.array([valid]), chunk_size=chunk_size, chunk_left=left_chunks)
    chunk = np.arange(length) // chunk_size
    behind = chunk[:, None] - chunk[None, :]  # how many chunks key j lies behind query i
    expected = (behind >= 0) & (np.arange(length)[None, :] < valid)
    if left_chunks is not None:
        expected &= behind <= left_chunks
    np.testing.assert_array_equal(_dependence(mask, length)[:valid], expected[:valid])


def test_unchunked_attention_sees_every_valid_frame():
    length, valid = 11, 10
    expected = np.broadcast_to(np.arange(length)[None, :] < valid, (valid, length))
    np.testing.assert_array_equal(_dependence(MaskSpec(kv_lengths=jnp.array([valid])), length)[:valid], expected)
