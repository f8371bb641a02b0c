"""The word automaton against brute-force word concatenation; constrained greedy and beam search."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxspeech.decoding.ctc_prefix import joint_ctc
from jaxspeech.decoding.lexicon import START, advance, constrain, word_automaton
from jaxspeech.decoding.search import beam_search, greedy_search

VOCAB, EOS = 7, 6
# Token ids 1-3 start words (like sentencepiece's "▁" pieces), 4-5 continue them.
WORDS = [(1,), (1, 4), (1, 4, 5), (2, 5), (3,)]


def _accepted(automaton, tokens):
    table, state = np.asarray(automaton.next_state), START
    for token in tokens:
        following = table[state, token]
        if following < 0:
            return False
        state = following
    return True


def _sentences(max_tokens):
    """Every token sequence of 1..max_tokens tokens that is a concatenation of WORDS."""
    found = set()
    for count in range(1, max_tokens + 1):
        for words in itertools.product(WORDS, repeat=count):
            tokens = sum(words, ())
            if len(tokens) <= max_tokens:
                found.add(tokens)
    return found


def test_automaton_accepts_exactly_the_word_sequences_then_an_end_token():
    automaton = word_automaton(WORDS, VOCAB, (EOS,))
    sentences = _sentences(4)
    for length in range(1, 5):
        for tokens in itertools.product(range(VOCAB), repeat=length):
            if EOS in tokens[:-1]:
                continue
            if tokens[-1] == EOS:
                assert _accepted(automaton, tokens) == (tokens[:-1] in sentences), tokens
            else:  # an open sequence is accepted iff it is a prefix of a word sequence
                prefix = any(s[:length] == tokens for s in _sentences(length + 2))
                assert _accepted(automaton, tokens) == prefix, tokens
    assert automaton.num_states == 1 + 6  # the root and one state per trie node: 1, 1-4, 1-4-5, 2, 2-5, 3


def test_advance_keeps_the_state_on_a_token_it_does_not_allow():
    automaton = word_automaton(WORDS, VOCAB, (EOS,))
    states = advance(automaton, jnp.array([START, START]), jnp.array([1, 4]))  # 4 cannot start a sentence
    assert int(states[0]) != START and int(states[1]) == START


@pytest.mark.parametrize(
    "words, message",
    [
        ([], "empty"),
        ([()], "no tokens"),
        ([(1, 9)], "outside the vocabulary"),
        ([(1, EOS)], "end token"),
    ],
)
def test_bad_lexicons_are_refused(words, message):
    with pytest.raises(ValueError, match=message):
        word_automaton(words, VOCAB, (EOS,))


def _bigram_llm(table):
    """A language model whose logits depend on the token just fed: table f32[V, V] (cache: unused)."""

    def step(tokens, cache):
        return table[tokens], cache

    return step


def test_constrained_greedy_takes_the_best_allowed_token_each_step():
    first = jnp.array([0.0, 1.0, 0.0, 0.0, 5.0, 0.0, 0.0])  # prefers 4, which cannot start a word
    table = jnp.zeros((VOCAB, VOCAB)).at[1, EOS].set(2.0).at[1, 5].set(4.0)  # after 1: 5 (not allowed) > end
    step, first_masked, cache = constrain(
        _bigram_llm(table), first[None], jnp.zeros((1,)), word_automaton(WORDS, VOCAB, (EOS,))
    )
    out = greedy_search(step, first_masked, cache, max_new_tokens=4, eos_ids=(EOS,), pad_id=0)
    assert np.asarray(out.tokens)[0, : int(out.lengths[0])].tolist() == [1, EOS]


def _constrained_score(tokens, first, table, automaton):
    """Sum over the steps of the log-softmax over the tokens the automaton allows there."""
    state, score, logits = START, 0.0, first
    for token in tokens:
        allowed = automaton.next_state[state] >= 0
        score += float(jax.nn.log_softmax(jnp.where(allowed, logits, -jnp.inf))[token])
        state, logits = int(automaton.next_state[state, token]), table[token]
    return score


def test_constrained_beam_search_finds_the_best_lexicon_sentence():
    automaton = word_automaton(WORDS, VOCAB, (EOS,))
    rng = np.random.default_rng(0)
    for _ in range(5):
        table = jnp.asarray(rng.normal(size=(VOCAB, VOCAB)) * 3, jnp.float32)
        first = jnp.asarray(rng.normal(size=(VOCAB,)) * 3, jnp.float32)
        step, first_masked, cache = constrain(_bigram_llm(table), first[None], jnp.zeros((1,)), automaton)
        out = beam_search(
            step, first_masked, cache, num_beams=32, max_new_tokens=4, eos_ids=(EOS,), pad_id=0, length_penalty=0.0
        )
        # Finished sentences, and sequences still open after the 4 steps (the search scores those too).
        candidates = [s + (EOS,) for s in _sentences(3)] + list({s[:4] for s in _sentences(6) if len(s) >= 4})
        scored = {c: _constrained_score(c, first, table, automaton) for c in candidates}
        best = max(scored, key=scored.get)
        assert np.asarray(out.tokens)[0, : int(out.lengths[0])].tolist() == list(best)
        np.testing.assert_allclose(float(out.scores[0]), scored[best], rtol=1e-5)


def test_joint_ctc_keeps_tokens_the_lexicon_rules_out_even_at_full_ctc_weight():
    automaton = word_automaton(WORDS, VOCAB, (EOS,))
    ctc_logits = jnp.asarray(np.eye(VOCAB - 1)[[[0, 4, 0]]] * 8.0, jnp.float32)  # CTC says 4: no word starts so
    step, first, cache = constrain(
        _bigram_llm(jnp.zeros((VOCAB, VOCAB))), jnp.zeros((1, VOCAB)), jnp.zeros((1,)), automaton
    )
    _, joint_first, _ = joint_ctc(
        step, first, cache, ctc_logits, jnp.array([3]), weight=1.0, num_candidates=VOCAB, eos_ids=(EOS,), blank_id=0
    )
    assert not bool(jnp.isnan(joint_first).any())
    allowed = np.flatnonzero(np.isfinite(np.asarray(joint_first[0]))).tolist()
    assert allowed == [1, 2, 3]
