"""Each model gives the same results with ``attn_impl="pallas"`` (flash kernels, interpret mode
on CPU) as with ``attn_impl="xla"``: the LLM decoder (packed segments + prefix-LM spans), the
Whisper encoder (key lengths) and the Conformer (relative-position bias, key lengths, chunked
attention). Sequences span several blocks. Outputs run by default; parameter gradients through
the decoder and the Conformer are ``slow`` (each compiles two training-sized programs)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn

from jaxspeech.encoders.conformer import ConformerConfig, ConformerEncoder
from jaxspeech.encoders.whisper import WhisperEncoder, WhisperEncoderConfig
from jaxspeech.llm.config import LLMConfig
from jaxspeech.llm.decoder import DecoderLM
from jaxspeech.testing.flash_cases import relative_error, spans

VALUE_TOL, GRAD_TOL = 1e-5, 1e-4


def _assert_grads_close(actual, expected, tol):
    """Each leaf within ``tol`` of the whole gradient's norm (a per-leaf relative error would be
    meaningless for leaves whose exact gradient is 0, e.g. a key-projection bias under softmax)."""
    assert jax.tree.structure(actual) == jax.tree.structure(expected)
    scale = np.sqrt(sum(np.sum(np.square(np.asarray(e, np.float64))) for e in jax.tree.leaves(expected)))
    for (path, a), e in zip(jax.tree_util.tree_leaves_with_path(actual), jax.tree.leaves(expected)):
        error = np.linalg.norm(np.asarray(a, np.float64) - np.asarray(e, np.float64)) / scale
        assert error <= tol, (jax.tree_util.keystr(path), error)


def _check_outputs(apply, params):
    outputs = {impl: jax.jit(lambda p, impl=impl: apply(p, impl))(params) for impl in ("xla", "pallas")}
    assert relative_error(outputs["pallas"], outputs["xla"]) <= VALUE_TOL


def _check_gradients(apply, params):
    """d sum(output * w) / d params agree between the two implementations."""
    grads = {}
    for impl in ("xla", "pallas"):

        def loss(p, impl=impl):
            out = apply(p, impl)
            return jnp.sum(out * jnp.cos(jnp.arange(out.size, dtype=jnp.float32)).reshape(out.shape))

        grads[impl] = jax.jit(jax.grad(loss))(params)
    _assert_grads_close(grads["pallas"], grads["xla"], GRAD_TOL)


def _decoder():
    """(apply(params, impl) -> logits, params) for a tiny decoder on packed, prefix-LM rows."""
    config = LLMConfig(vocab_size=97, hidden_size=32, intermediate_size=48, num_layers=2, num_heads=4, num_kv_heads=2)
    length = 150  # > 2 query blocks and > 2 key blocks of the default GPU block sizes
    tokens = jax.random.randint(jax.random.key(1), (2, length), 0, config.vocab_size)
    segment_ids = jnp.asarray(
        np.stack([np.r_[np.ones(90), np.full(60, 2)], np.r_[np.ones(131), np.zeros(19)]]), jnp.int32
    )
    bidir_ids = spans([[(4, 70, 1)], [(10, 40, 1)]], length)
    params = nn.unbox(jax.jit(DecoderLM(config).init)(jax.random.key(0), tokens))

    def apply(p, impl):
        logits, _ = DecoderLM(config.replace(attn_impl=impl)).apply(
            p, tokens, segment_ids=segment_ids, bidir_ids=bidir_ids
        )
        return logits

    return apply, params


def test_decoder_pallas_equals_xla():
    _check_outputs(*_decoder())


@pytest.mark.slow
def test_decoder_gradients_pallas_equal_xla():
    _check_gradients(*_decoder())


def test_whisper_encoder_pallas_equals_xla():
    config = WhisperEncoderConfig(
        n_mels=16, d_model=32, num_layers=2, num_heads=4, ffn_dim=64, max_source_positions=100
    )
    features = jax.random.normal(jax.random.key(2), (2, 200, 16))
    lengths = jnp.array([200, 131])
    params = nn.unbox(jax.jit(WhisperEncoder(config).init)(jax.random.key(0), features, lengths))
    _check_outputs(
        lambda p, impl: WhisperEncoder(config.replace(attn_impl=impl)).apply(p, features, lengths).hidden, params
    )


def _conformer():
    """(apply(variables, impl) -> hidden, variables) for a tiny chunked rel-pos Conformer."""
    config = ConformerConfig(
        input_dim=16, d_model=32, num_layers=2, num_heads=4, ffn_dim=64, conv_kernel_size=5, subsampling_channels=8,
        dropout_rate=0.0, ffn_dropout_rate=0.0, chunk_size=24, left_chunks=2,
    )  # fmt: skip
    features = jax.random.normal(jax.random.key(3), (2, 1040, 16))  # 130 frames after 8x subsampling
    lengths = jnp.array([1040, 700])
    variables = nn.unbox(jax.jit(ConformerEncoder(config).init)(jax.random.key(0), features, lengths))

    def apply(p, impl):
        hidden, _ = ConformerEncoder(config.replace(attn_impl=impl)).apply(p, features, lengths)
        return hidden

    return apply, variables


def test_conformer_pallas_equals_xla():
    _check_outputs(*_conformer())


@pytest.mark.slow
def test_conformer_gradients_pallas_equal_xla():
    _check_gradients(*_conformer())
