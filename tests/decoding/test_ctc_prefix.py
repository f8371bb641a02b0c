"""CTC prefix scores against brute-force path enumeration; joint decoding with a synthetic LLM."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxspeech.decoding.ctc_prefix import (
    extend_prefix,
    full_score,
    initial_state,
    joint_ctc,
    prefix_scores,
    scale_posteriors,
    vocabulary_prefix_scores,
)
from jaxspeech.decoding.search import beam_search, expand_for_beams, greedy_search

BLANK, K = 0, 3


def _collapse(path):
    out, previous = [], BLANK
    for label in path:
        if label != BLANK and label != previous:
            out.append(label)
        previous = label
    return out


def _brute_force(log_probs, length):
    """{collapsed label tuple: probability} over every path of ``length`` frames."""
    totals = {}
    for path in itertools.product(range(K), repeat=length):
        p = float(np.exp(sum(log_probs[t, label] for t, label in enumerate(path))))
        key = tuple(_collapse(path))
        totals[key] = totals.get(key, 0.0) + p
    return totals


def _prefix_probability(totals, prefix):
    return sum(p for seq, p in totals.items() if seq[: len(prefix)] == tuple(prefix))


def test_prefix_and_full_scores_equal_path_sums():
    rng = np.random.default_rng(0)
    log_probs = jax.nn.log_softmax(jnp.asarray(rng.normal(size=(2, 5, K)) * 2, jnp.float32), axis=-1)
    lengths = jnp.array([5, 4])
    totals = [_brute_force(np.asarray(log_probs[r]), int(lengths[r])) for r in range(2)]
    state = initial_state(log_probs, lengths, BLANK)
    prefixes = [[], []]
    for chosen in ([1, 2], [1, 1], [2, 1]):  # the second step repeats label 1 in row 0 of the second pass
        labels = jnp.array([[1, 2], [1, 2]])
        scores = prefix_scores(state, labels, log_probs, lengths, BLANK)
        for r in range(2):
            for n in range(2):
                expected = _prefix_probability(totals[r], prefixes[r] + [int(labels[r, n])])
                np.testing.assert_allclose(float(jnp.exp(scores[r, n])), expected, rtol=1e-4, atol=1e-12)
        state = extend_prefix(state, jnp.array(chosen), log_probs, lengths, BLANK)
        prefixes = [prefixes[r] + [chosen[r]] for r in range(2)]
        assert state.last.tolist() == chosen
        for r in range(2):
            np.testing.assert_allclose(
                float(jnp.exp(state.score[r])), _prefix_probability(totals[r], prefixes[r]), rtol=1e-4, atol=1e-12
            )
            np.testing.assert_allclose(
                float(jnp.exp(full_score(state, lengths)[r])),
                totals[r].get(tuple(prefixes[r]), 0.0),
                rtol=1e-4,
                atol=1e-12,
            )


def _uniform_llm(vocab):
    """A language model with no opinion: every step gives equal logits (cache: a step counter)."""

    def step(tokens, cache):
        return jnp.zeros((tokens.shape[0], vocab)), cache + 1

    return step


@pytest.mark.parametrize("search", ["greedy", "beam"])
def test_ctc_alone_decodes_a_peaky_ctc_path(search):
    vocab, eos = 6, 5
    paths = np.array([[0, 3, 3, 0, 3, 1, 0, 0], [2, 2, 4, 4, 0, 0, 0, 0]])
    ctc_logits = jnp.asarray(np.eye(5)[paths] * 8.0, jnp.float32)  # CTC vocabulary: 0..4, blank 0
    lengths = jnp.array([8, 4])
    beams = 3 if search == "beam" else 1
    step, first, cache = joint_ctc(
        _uniform_llm(vocab),
        jnp.zeros((2, vocab)),
        jnp.zeros((2,)),
        ctc_logits,
        lengths,
        weight=1.0,
        num_candidates=vocab,
        eos_ids=(eos,),
        blank_id=0,
        num_beams=beams,
    )
    common = dict(max_new_tokens=6, eos_ids=(eos,), pad_id=0)
    if search == "greedy":
        out = greedy_search(step, first, cache, **common)
    else:
        out = beam_search(step, first, cache, num_beams=beams, **common)
    tokens = np.asarray(out.tokens)
    assert tokens[0, : int(out.lengths[0])].tolist() == [3, 3, 1, eos]
    assert tokens[1, : int(out.lengths[1])].tolist() == [2, 4, eos]


def test_vocabulary_scores_equal_prefix_scores_of_every_label_for_every_beam():
    batch, beams, frames, labels = 2, 3, 9, 6
    log_probs = jax.nn.log_softmax(jax.random.normal(jax.random.key(0), (batch, frames, labels)) * 3.0, axis=-1)
    lengths = jnp.array([9, 6])
    posteriors = scale_posteriors(log_probs, lengths)
    row_probs, row_lengths = expand_for_beams((log_probs, lengths), beams)
    state = initial_state(row_probs, row_lengths, BLANK)
    every_label = jnp.tile(jnp.arange(labels)[None], (batch * beams, 1))
    for chosen in ([1, 2, 3, 1, 2, 3], [1, 1, 2, 3, 3, 4], [4, 1, 2, 2, 5, 5]):  # repeats and new labels per beam
        state = extend_prefix(state, jnp.array(chosen), row_probs, row_lengths, BLANK)
        scores = vocabulary_prefix_scores(state, posteriors, row_probs, row_lengths, BLANK)
        expected = prefix_scores(state, every_label, row_probs, row_lengths, BLANK).at[:, BLANK].set(-1e30)
        np.testing.assert_allclose(np.asarray(scores), np.asarray(expected), rtol=1e-5)


def test_the_ctc_can_choose_a_token_the_llm_ranks_last_and_candidates_bound_the_choice():
    vocab = 6
    llm_logits = jnp.array([[0.0, 1.0, 3.0, -2.0, 0.0, 0.0]])  # the LLM ranks token 3 last
    ctc_logits = jnp.asarray(np.eye(5)[[[0, 3, 0]]] * 8.0, jnp.float32)  # CTC says 3
    for weight, expected in ((0.01, 2), (0.9, 3)):
        _, first, _ = joint_ctc(
            _uniform_llm(vocab),
            llm_logits,
            jnp.zeros((1,)),
            ctc_logits,
            jnp.array([3]),
            weight=weight,
            num_candidates=2,
            eos_ids=(5,),
            blank_id=0,
        )
        assert int(jnp.argmax(first[0])) == expected
        assert int(jnp.isfinite(first[0]).sum()) == 2  # only the two best joint scores stay possible


def test_blank_penalty_turns_a_blank_leaning_frame_into_a_label():
    vocab, eos = 6, 5
    ctc_logits = np.zeros((1, 3, 5), np.float32)
    ctc_logits[0, 0, 3] = ctc_logits[0, 2, 0] = 8.0  # label 3, then blank: certain
    ctc_logits[0, 1, [0, 4]] = [2.0, 1.5]  # the middle frame leans to blank over label 4
    decoded = {}
    for penalty in (0.0, 1.0):
        step, first, cache = joint_ctc(
            _uniform_llm(vocab),
            jnp.zeros((1, vocab)),
            jnp.zeros((1,)),
            jnp.asarray(ctc_logits),
            jnp.array([3]),
            weight=1.0,
            num_candidates=vocab,
            eos_ids=(eos,),
            blank_id=0,
            blank_penalty=penalty,
        )
        out = greedy_search(step, first, cache, max_new_tokens=4, eos_ids=(eos,), pad_id=0)
        decoded[penalty] = np.asarray(out.tokens)[0, : int(out.lengths[0])].tolist()
    assert decoded == {0.0: [3, eos], 1.0: [3, 4, eos]}
