"""CTC targets of the speech task: left-aligned loss-masked tokens and the alignability check."""

import jax.numpy as jnp
import numpy as np
import optax

from jaxspeech.tasks.speech_llm import ctc_min_frames, ctc_targets


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
