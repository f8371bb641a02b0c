"""Lexicon-constrained decoding: the search may only write words of a given word list.

A small model trained from scratch misspells the words it has seen rarely ("budapest" ->
"budap", "we sort" -> "west"): most of its word errors are strings that are no word at all. A
lexicon turns every hypothesis into a sequence of known words, so the acoustic and language scores
choose between real words instead of spelling letters.

The word list becomes a token automaton: a trie over each word's tokens (its tokenisation when it
stands alone, which for a tokenizer that splits on whitespace is its tokenisation inside any
sentence). ``next_state`` i32[S, V] holds, for state s and token t, the state after t, or -1 when
t is not allowed: a token continues the current word's trie path; after a complete word it may also
start a new word (a token that could do both continues the word); an end token is allowed after a
complete word only. State 0 is the start: no word written yet.

``constrain`` wraps a search's step function (``decoding/search.py``): every row's state travels in
the cache, and the logits of tokens its state does not allow become -inf.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

START = 0


@struct.dataclass
class TokenAutomaton:
    """next_state i32[S, V]: the state after token t from state s, or -1 where t is not allowed."""

    next_state: jax.Array

    @property
    def num_states(self) -> int:
        return self.next_state.shape[0]


def word_automaton(words: Iterable[Sequence[int]], vocab_size: int, end_ids: Sequence[int]) -> TokenAutomaton:
    """The automaton of all sequences of the given words (each a non-empty token sequence), then an end token."""
    if any(not 0 <= t < vocab_size for t in end_ids):
        raise ValueError(f"end token ids {list(end_ids)} must lie in the vocabulary (size {vocab_size})")
    children: list[dict[int, int]] = [{}]
    complete = [False]
    for tokens in words:
        if not tokens:
            raise ValueError("a lexicon word has no tokens")
        state = START
        for token in tokens:
            if not 0 <= token < vocab_size:
                raise ValueError(f"lexicon token id {token} is outside the vocabulary (size {vocab_size})")
            if token in end_ids:
                raise ValueError(f"lexicon word {list(tokens)} contains the end token {token}")
            if token not in children[state]:
                children[state][token] = len(children)
                children.append({})
                complete.append(False)
            state = children[state][token]
        complete[state] = True
    if len(children) == 1:
        raise ValueError("the lexicon is empty")
    table = np.full((len(children), vocab_size), -1, np.int32)
    starts = children[START]
    for state, (own, done) in enumerate(zip(children, complete)):
        if done:  # after a whole word: a new word may start, or the sequence may end
            table[state, list(starts)] = list(starts.values())
            table[state, list(end_ids)] = state
        if own:
            table[state, list(own)] = list(own.values())
    return TokenAutomaton(next_state=jnp.asarray(table))


def advance(automaton: TokenAutomaton, states: jax.Array, tokens: jax.Array) -> jax.Array:
    """states i32[R] after tokens i32[R]; a token the state does not allow (a finished row's padding) keeps it."""
    following = automaton.next_state[states, tokens]
    return jnp.where(following >= 0, following, states)


def mask(automaton: TokenAutomaton, states: jax.Array, logits: jax.Array) -> jax.Array:
    """logits f32[R, V] with -inf where the row's state does not allow the token."""
    return jnp.where(automaton.next_state[states] >= 0, logits, -jnp.inf)


@struct.dataclass
class ConstrainedCache:
    """The wrapped step's cache plus each row's automaton state i32[R]."""

    inner: Any
    states: jax.Array


def constrain(
    step_fn: Callable, first_logits: jax.Array, cache: Any, automaton: TokenAutomaton
) -> tuple[Callable, jax.Array, ConstrainedCache]:
    """Wraps a search's (step_fn, first_logits f32[B, V], cache) so that it writes only what
    ``automaton`` allows; beam search expands and reorders the states with the rest of the cache."""
    if first_logits.shape[-1] != automaton.next_state.shape[1]:
        raise ValueError(
            f"the lexicon covers {automaton.next_state.shape[1]} token ids, the model has {first_logits.shape[-1]}"
        )
    states = jnp.full((first_logits.shape[0],), START, jnp.int32)

    def step(tokens, constrained: ConstrainedCache):
        states = advance(automaton, constrained.states, tokens)
        logits, inner = step_fn(tokens, constrained.inner)
        return mask(automaton, states, logits), ConstrainedCache(inner, states)

    return step, mask(automaton, states, first_logits), ConstrainedCache(cache, states)
