"""CTC of the speech task: left-aligned loss-masked targets, the alignability check and the head's upsampling."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxspeech.models.speech_llm import SpeechLLM
from jaxspeech.tasks.speech_llm import ctc_min_frames, ctc_targets
from jaxspeech.testing.speech_llm import VOCAB, tiny_config


def test_targets_are_loss_masked_tokens_without_eos_left_aligned():
    tokens = jnp.array([[5, 6, 7, 8, 2, 0], [9, 10, 11, 2, 0, 0]], jnp.int32)
    mask = jnp.array([[0, 0, 1, 1, 1, 0], [0, 1, 1, 1, 0, 0]], jnp.float32)
    labels, paddings = ctc_targets(tokens, mask, eos_ids=(2,))
    np.testing.assert_array_equal(labels, [[7, 8, 0, 0, 0, 0], [10, 11, 0, 0, 0, 0]])
    np.testing.assert_array_equal(paddings, [[0, 0, 1, 1, 1, 1], [0, 0, 1, 1, 1, 1]])


def test_min_frames_counts_a_blank_between_repeats():
    labels = jnp.array([[3, 3, 4, 4, 4, 0], [3, 4, 5, 0, 0, 0]], jnp.int32)
    paddings = jnp.array([[0, 0, 0, 0, 0, 1], [0, 0, 0, 1, 1, 1]], jnp.float32)
    np.testing.assert_array_equal(ctc_min_frames(labels, paddings), [5 + 3, 3])


def test_min_frames_is_where_the_ctc_loss_becomes_finite():
    rng = np.random.default_rng(0)
    labels = jnp.array([[3, 3, 4]], jnp.int32)
    label_paddings = jnp.zeros((1, 3), jnp.float32)
    need = int(ctc_min_frames(labels, label_paddings)[0])
    for frames in (need - 1, need):
        logits = jnp.asarray(rng.standard_normal((1, frames, 6)), jnp.float32)
        loss = optax.ctc_loss(logits, jnp.zeros((1, frames)), labels, label_paddings, blank_id=0)[0]
        assert (float(loss) < 1e4) == (frames >= need), (frames, float(loss))


def test_upsampled_head_gives_each_encoder_state_k_consecutive_ctc_frames():
    k, frames, width = 3, 5, 24
    model = SpeechLLM(tiny_config(ctc_vocab_size=VOCAB, ctc_upsample=k))
    hidden = jax.random.normal(jax.random.key(0), (2, frames, width))
    lengths = jnp.array([5, 2], jnp.int32)
    params = nn.unbox(model.init(jax.random.key(1), hidden, lengths, method=SpeechLLM.ctc_logits))
    logits, out_lengths = model.apply(params, hidden, lengths, method=SpeechLLM.ctc_logits)
    assert logits.shape == (2, frames * k, VOCAB)
    np.testing.assert_array_equal(out_lengths, lengths * k)
    kernel, bias = params["params"]["ctc_head"]["kernel"], params["params"]["ctc_head"]["bias"]
    for j in range(k):
        columns = slice(j * VOCAB, (j + 1) * VOCAB)
        expected = hidden @ kernel[:, columns] + bias[columns]
        np.testing.assert_allclose(logits[:, j::k], expected, rtol=1e-5, atol=1e-5)


def test_upsample_below_one_is_refused():
    with pytest.raises(ValueError, match="ctc_upsample must be >= 1"):
        tiny_config(ctc_vocab_size=VOCAB, ctc_upsample=0)
