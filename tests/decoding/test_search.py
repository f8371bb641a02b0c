"""Search loops on a toy bigram model whose exact answers can be enumerated."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxspeech.decoding.search import NEG_INF, beam_search, filter_logits, greedy_search, sample

V, EOS, PAD = 5, 4, 0


def _bigram(seed):
    rng = np.random.default_rng(seed)
    start = rng.normal(size=(V,)).astype(np.float32) * 2
    table = rng.normal(size=(V, V)).astype(np.float32) * 2
    return start, table


def _step_fn(table):
    def step(tokens, cache):
        return jnp.asarray(table)[tokens], {"prev": tokens, "steps": cache["steps"] + 1}

    return step


def _setup(seed, batch=1):
    start, table = _bigram(seed)
    first = jnp.tile(jnp.asarray(start)[None], (batch, 1))
    cache = {"prev": jnp.zeros((batch,), jnp.int32), "steps": jnp.zeros((), jnp.int32)}
    return start, table, first, cache


def _log_softmax(x):
    return x - np.log(np.exp(x - x.max()).sum()) - x.max()


def _best_by_enumeration(start, table, max_len, length_penalty):
    """Exhaustive best hypothesis: ends at EOS (length incl. EOS) or is cut at max_len."""
    best, best_seq = -np.inf, None
    for length in range(1, max_len + 1):
        for seq in itertools.product(range(V), repeat=length):
            if EOS in seq[:-1] or (length < max_len and seq[-1] != EOS):
                continue
            score, logits = 0.0, start
            for tok in seq:
                score += _log_softmax(logits)[tok]
                logits = table[tok]
            norm = score / length**length_penalty
            if norm > best:
                best, best_seq = norm, seq
    return best, list(best_seq)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
@pytest.mark.parametrize("length_penalty", [0.0, 1.0])
def test_wide_beam_finds_the_exhaustive_optimum(seed, length_penalty):
    start, table, first, cache = _setup(seed)
    out = jax.jit(
        lambda f, c: beam_search(
            _step_fn(table),
            f,
            c,
            num_beams=V**3,
            max_new_tokens=4,
            eos_ids=(EOS,),
            pad_id=PAD,
            length_penalty=length_penalty,
        )
    )(first, cache)
    best, best_seq = _best_by_enumeration(start, table, 4, length_penalty)
    length = int(out.lengths[0])
    assert list(np.asarray(out.tokens[0, :length])) == best_seq
    assert (np.asarray(out.tokens[0, length:]) == PAD).all()
    np.testing.assert_allclose(float(out.scores[0]), best, rtol=1e-5)


def test_an_end_ranked_below_the_best_k_candidates_does_not_finish():
    """transformers' rule: of the 2k candidates of a step, only those among the best k may finish.
    Step 0: tokens 1 and 2 lead, the end token ranks third of four (k = 2); every token after them
    is equally likely. Summed scores (length_penalty 0): the end alone (log 0.1 = -2.30) would beat
    every two-token hypothesis (log 0.45 + log 0.2 = -2.41), but as a backup it never finishes."""
    first = jnp.log(jnp.array([[1e-6, 0.45, 0.40, 0.05, 0.10]], jnp.float32))
    table = np.zeros((V, V), np.float32)
    cache = {"prev": jnp.zeros((1,), jnp.int32), "steps": jnp.zeros((), jnp.int32)}
    out = beam_search(
        _step_fn(table), first, cache, num_beams=2, max_new_tokens=2, eos_ids=(EOS,), pad_id=PAD, length_penalty=0.0
    )
    assert int(out.lengths[0]) == 2 and int(out.tokens[0, 0]) == 1
    np.testing.assert_allclose(float(out.scores[0]), np.log(0.45) + np.log(0.2), rtol=1e-5)


def test_a_row_closes_when_its_best_open_beam_at_its_present_length_cannot_win():
    """transformers' early_stopping=False rule: once a row has k finished hypotheses, it closes when its
    best open beam, normalised by the tokens it has now, scores below the worst of them. Step 0 (k = 1,
    length_penalty 1): the end token leads (log 0.5 = -0.69) and finishes; the open beam, token 1
    (log 0.4 = -0.92 over 1 token), cannot beat it, so the search stops, although [1, end] would
    score -0.92 / 2 = -0.46: counting the beam's next token would have kept the row open."""
    first = jnp.log(jnp.array([[1e-6, 0.4, 0.05, 0.05, 0.5]], jnp.float32))
    table = np.zeros((V, V), np.float32)
    table[1] = [-30.0, -30.0, -30.0, -30.0, 0.0]  # after token 1 the end is certain
    cache = {"prev": jnp.zeros((1,), jnp.int32), "steps": jnp.zeros((), jnp.int32)}
    out = beam_search(
        _step_fn(table), first, cache, num_beams=1, max_new_tokens=4, eos_ids=(EOS,), pad_id=PAD, length_penalty=1.0
    )
    assert int(out.lengths[0]) == 1 and int(out.tokens[0, 0]) == EOS
    np.testing.assert_allclose(float(out.scores[0]), np.log(0.5), rtol=1e-5)


def test_greedy_follows_argmax_and_pads_after_eos():
    start, table, first, cache = _setup(5, batch=2)
    out = greedy_search(_step_fn(table), first, cache, max_new_tokens=6, eos_ids=(EOS,), pad_id=PAD)
    expected, tok = [], int(np.argmax(start))
    while True:
        expected.append(tok)
        if tok == EOS or len(expected) == 6:
            break
        tok = int(np.argmax(table[tok]))
    got = np.asarray(out.tokens[0])
    assert list(got[: len(expected)]) == expected
    assert (got[len(expected) :] == PAD).all()
    assert int(out.lengths[0]) == len(expected)


def test_beam_of_one_equals_greedy():
    _, table, first, cache = _setup(7, batch=3)
    greedy = greedy_search(_step_fn(table), first, cache, max_new_tokens=5, eos_ids=(EOS,), pad_id=PAD)
    beam = beam_search(
        _step_fn(table), first, cache, num_beams=1, max_new_tokens=5, eos_ids=(EOS,), pad_id=PAD, length_penalty=0.0
    )
    np.testing.assert_array_equal(np.asarray(greedy.tokens), np.asarray(beam.tokens))


def test_sampling_top_k_one_is_greedy_and_seeded():
    _, table, first, cache = _setup(3, batch=4)
    greedy = greedy_search(_step_fn(table), first, cache, max_new_tokens=5, eos_ids=(), pad_id=PAD)
    kwargs = dict(max_new_tokens=5, eos_ids=(), pad_id=PAD)
    top1 = sample(_step_fn(table), first, cache, jax.random.key(0), top_k=1, **kwargs)
    np.testing.assert_array_equal(np.asarray(greedy.tokens), np.asarray(top1.tokens))
    a = sample(_step_fn(table), first, cache, jax.random.key(1), temperature=3.0, **kwargs)
    b = sample(_step_fn(table), first, cache, jax.random.key(1), temperature=3.0, **kwargs)
    c = sample(_step_fn(table), first, cache, jax.random.key(2), temperature=3.0, **kwargs)
    np.testing.assert_array_equal(np.asarray(a.tokens), np.asarray(b.tokens))
    assert not np.array_equal(np.asarray(a.tokens), np.asarray(c.tokens))


def test_filter_logits_top_k_and_top_p():
    logits = jnp.log(jnp.array([[0.5, 0.3, 0.15, 0.05]]))
    kept = lambda x: list(np.isfinite(np.asarray(x[0])))
    assert kept(filter_logits(logits, top_k=2)) == [True, True, False, False]
    assert kept(filter_logits(logits, top_p=0.7)) == [True, True, False, False]  # 0.5 < 0.7 <= 0.8
    assert kept(filter_logits(logits, top_p=0.5)) == [True, False, False, False]
    assert kept(filter_logits(logits, top_p=0.81)) == [True, True, True, False]
    scaled = filter_logits(logits, temperature=2.0)
    np.testing.assert_allclose(np.asarray(scaled), np.asarray(logits) / 2.0, rtol=1e-6)


def test_unnormalised_scores_are_added_as_they_are():
    """Token 1 scores better than token 2 at the first step but leads only to bad continuations:
    renormalising each step hides that (label bias); adding raw log-scores does not."""
    first = jnp.array([[-30.0, -1.0, -2.0, -30.0]])  # tokens 1, 2; 3 ends
    table = jnp.full((4, 4), -30.0).at[1, 3].set(-10.0).at[2, 3].set(-0.1)

    def step(tokens, cache):
        return table[tokens], cache

    for normalize, expected in ((True, [1, 3]), (False, [2, 3])):
        out = beam_search(
            step,
            first,
            jnp.zeros((1,)),
            num_beams=2,
            max_new_tokens=3,
            eos_ids=(3,),
            pad_id=0,
            length_penalty=0.0,
            normalize=normalize,
        )
        assert np.asarray(out.tokens)[0, : int(out.lengths[0])].tolist() == expected
        greedy = greedy_search(
            step, first, jnp.zeros((1,)), max_new_tokens=3, eos_ids=(3,), pad_id=0, normalize=normalize
        )
        assert np.asarray(greedy.tokens)[0, :2].tolist() == [1, 3]  # greedy looks one step ahead either way
    np.testing.assert_allclose(float(out.scores[0]), -2.1, rtol=1e-6)


@pytest.mark.parametrize("search", ["greedy", "beam"])
def test_a_row_with_no_possible_token_does_not_keep_the_batch_running(search):
    """Row 1's every token is impossible (as for a padding row under joint CTC scoring): the loop
    ends when row 0 does, not at max_new_tokens, and row 0's answer is unchanged."""
    table = np.full((V, V), -5.0, np.float32)
    table[:, EOS] = 5.0  # every token is followed by the end token
    calls = []

    def step(tokens, dead):  # the cache: which rows have no possible token
        jax.debug.callback(lambda: calls.append(1))
        return jnp.where(dead[:, None], NEG_INF, jnp.asarray(table)[tokens]), dead

    first = jnp.array([[0.0, 3.0, 0.0, 0.0, -5.0], [NEG_INF] * V])
    common = dict(max_new_tokens=12, eos_ids=(EOS,), pad_id=PAD, normalize=False)
    if search == "greedy":
        run = lambda rows: greedy_search(step, first[:rows], jnp.arange(rows) == 1, **common)
    else:
        run = lambda rows: beam_search(step, first[:rows], jnp.arange(rows) == 1, num_beams=2, **common)
    out = run(2)
    steps_with_dead_row = len(calls)
    calls.clear()
    alone = run(1)
    assert np.asarray(out.tokens)[0].tolist() == np.asarray(alone.tokens)[0].tolist() == [1, EOS] + [PAD] * 10
    assert steps_with_dead_row == len(calls) < common["max_new_tokens"] - 1


@pytest.mark.parametrize("search", ["greedy", "beam", "sample"])
def test_inactive_rows_output_nothing_and_end_with_the_last_real_row(search):
    """Row 1 is padding (active False) whose model never ends: the loop stops when row 0 ends, row
    1 outputs only padding with length 0, and row 0's answer equals its answer alone."""
    table = np.full((V, V), -5.0, np.float32)
    table[:, EOS] = 5.0  # after the first token, every row ends...
    first = jnp.array([[0.0, 3.0, 0.0, 0.0, -5.0]] * 2)
    calls = []

    def step(tokens, never_ends):  # ...except the rows the cache marks
        jax.debug.callback(lambda: calls.append(1))
        logits = jnp.asarray(table)[tokens]
        return jnp.where(never_ends[:, None], logits.at[:, EOS].set(-9.0), logits), never_ends

    common = dict(max_new_tokens=12, eos_ids=(EOS,), pad_id=PAD)
    runs = {
        "greedy": lambda rows, active: greedy_search(
            step, first[:rows], jnp.arange(rows) == 1, active=active, **common
        ),
        "beam": lambda rows, active: beam_search(
            step, first[:rows], jnp.arange(rows) == 1, num_beams=2, active=active, **common
        ),
        "sample": lambda rows, active: sample(
            step, first[:rows], jnp.arange(rows) == 1, jax.random.key(0), temperature=0.01, active=active, **common
        ),
    }
    out = runs[search](2, jnp.array([True, False]))
    steps_with_padding = len(calls)
    calls.clear()
    alone = runs[search](1, None)
    assert np.asarray(out.tokens)[0].tolist() == np.asarray(alone.tokens)[0].tolist() == [1, EOS] + [PAD] * 10
    assert np.asarray(out.tokens)[1].tolist() == [PAD] * 12
    assert np.asarray(out.lengths).tolist() == [2, 0] and float(out.scores[1]) == 0.0
    assert steps_with_padding == len(calls) < common["max_new_tokens"] - 1
    calls.clear()
    runs[search](2, None)  # the same row, active, keeps the loop running to the end
    assert len(calls) >= common["max_new_tokens"] - 1
