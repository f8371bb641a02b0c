"""Joint CTC/attention decoding: the LLM's next-token scores combined with CTC prefix probabilities.

A decoder that reads audio through attention can lose its place and go on writing fluent text the
audio does not hold; the CTC head cannot, because its alignment is monotonic. At every step every
token c is scored as

    (1 - w) * log p_llm(c | h) + w * (log P_ctc(h + c ...) - log P_ctc(h ...)),

where P_ctc(g ...) is the CTC probability of all label sequences that start with the prefix g
(Watanabe et al., 2017, "Hybrid CTC/attention architecture"); an end token gets the CTC
probability of the whole prefix instead. Each row offers the search its ``num_candidates`` best
tokens; tokens the wrapped step rules out (-inf logits, e.g. a lexicon's) stay out. Scoring the
whole vocabulary, not only the LLM's best few tokens, lets the audio bring back a word the LLM
finds unlikely; it costs one [T] x [T, K] product per row and step (``vocabulary_prefix_scores``).
The search adds the scores unnormalised (``normalize=False``), so a hypothesis' total is
(1 - w) log p_llm(y) + w log P_ctc(y): renormalising each step would hide a prefix whose every
continuation the audio contradicts.

The prefix state of every row (forward variables over the T CTC frames, in log space) travels in
the decoding cache, so beam search reorders it with the KV cache.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
from flax import struct

from jaxspeech.decoding.search import NEG_INF, expand_for_beams


@struct.dataclass
class PrefixState:
    """Forward variables of each row's prefix g: log r_n, log r_b f32[R, T] (paths of g ending in a
    label / in a blank at frame t), its last label i32[R] (-1: empty) and prefix score f32[R]."""

    r_n: jax.Array
    r_b: jax.Array
    last: jax.Array
    score: jax.Array


def initial_state(log_probs: jax.Array, lengths: jax.Array, blank_id: int) -> PrefixState:
    """The empty prefix: log_probs f32[R, T, K] (CTC log-softmax), lengths i32[R]."""
    rows, frames = log_probs.shape[:2]
    valid = jnp.arange(frames)[None, :] < lengths[:, None]
    r_b = jnp.cumsum(jnp.where(valid, log_probs[:, :, blank_id], 0.0), axis=1)
    return PrefixState(
        r_n=jnp.full((rows, frames), NEG_INF, jnp.float32),
        r_b=r_b,
        last=jnp.full((rows,), -1, jnp.int32),
        score=jnp.zeros((rows,), jnp.float32),
    )


def _candidate_starts(
    state: PrefixState, labels: jax.Array, log_probs: jax.Array, lengths: jax.Array, blank_id: int
) -> tuple[jax.Array, jax.Array]:
    """Prefix g (state, R rows) + candidate labels i32[R, N] -> (log of the paths of g + c whose
    label c starts at frame t, f32[R, T, N]; log p_t(c) f32[R, T, N], NEG_INF where c cannot be
    emitted)."""
    frames = log_probs.shape[1]
    emit = jnp.take_along_axis(log_probs, jnp.clip(labels, 0, log_probs.shape[2] - 1)[:, None, :], axis=2)
    emittable = (labels >= 0) & (labels < log_probs.shape[2]) & (labels != blank_id)  # CTC never emits a blank
    emit = jnp.where(emittable, 0.0, NEG_INF)[:, None, :] + emit  # [R, T, N]
    # Paths of g that may be followed by c at frame t: all of them, or only those ending in a blank
    # when c repeats g's last label (a repeat needs a blank in between).
    before = jnp.logaddexp(state.r_n, state.r_b)  # [R, T]
    repeat = labels == state.last[:, None]
    reach = jnp.where(repeat[:, None, :], state.r_b[:, :, None], before[:, :, None])  # [R, T, N]
    # phi at frame t uses the forward variables of frame t - 1; before frame 0 only the empty prefix exists.
    before_first = jnp.where(state.last < 0, 0.0, NEG_INF)[:, None, None]  # only the empty prefix ends "before 0"
    before_first = jnp.broadcast_to(before_first, (labels.shape[0], 1, labels.shape[1]))
    phi = jnp.concatenate([before_first, reach[:, :-1]], axis=1)  # [R, T, N]
    valid = (jnp.arange(frames)[None, :] < lengths[:, None])[:, :, None]
    return jnp.where(valid, phi + emit, NEG_INF), emit


def prefix_scores(
    state: PrefixState, labels: jax.Array, log_probs: jax.Array, lengths: jax.Array, blank_id: int
) -> jax.Array:
    """log P_ctc(g + c ...) f32[R, N] for candidate labels i32[R, N] of each row's prefix g: the
    sum over the frame where c starts, so no recursion over frames is needed."""
    start, _ = _candidate_starts(state, labels, log_probs, lengths, blank_id)
    return jnp.maximum(jax.nn.logsumexp(start, axis=1), NEG_INF)


@struct.dataclass
class ScaledPosteriors:
    """The CTC posteriors of B utterances, each label scaled by its own peak over the valid frames,
    so that a sum over frames can be a matmul: scaled f32[B, T, K] = p_t(c) / peak(c) (0 past the
    utterance's end), log_peak f32[B, K]."""

    scaled: jax.Array
    log_peak: jax.Array


def scale_posteriors(log_probs: jax.Array, lengths: jax.Array) -> ScaledPosteriors:
    """log_probs f32[B, T, K] (CTC log-softmax), lengths i32[B] -> ``ScaledPosteriors``."""
    valid = (jnp.arange(log_probs.shape[1])[None, :] < lengths[:, None])[:, :, None]
    masked = jnp.where(valid, log_probs, NEG_INF)
    log_peak = jnp.max(masked, axis=1)  # [B, K]
    return ScaledPosteriors(scaled=jnp.where(valid, jnp.exp(masked - log_peak[:, None, :]), 0.0), log_peak=log_peak)


def vocabulary_prefix_scores(
    state: PrefixState, posteriors: ScaledPosteriors, log_probs: jax.Array, lengths: jax.Array, blank_id: int
) -> jax.Array:
    """log P_ctc(g + c ...) f32[R, K] for every label c of the CTC vocabulary (NEG_INF for the blank).

    The same sum over start frames as ``prefix_scores``, as one [T] x [T, K] product per row: the R
    rows are B utterances times R / B beams that share ``posteriors`` (B rows); ``log_probs`` and
    ``lengths`` are per row (R). The last label of g repeats only after a blank, so its score comes
    from ``prefix_scores``. A score below about 87 nats under the best frame's underflows to NEG_INF."""
    rows, frames = state.r_n.shape
    batch, _, labels = posteriors.scaled.shape
    valid = jnp.arange(frames)[None, :] < lengths[:, None]
    before = jnp.logaddexp(state.r_n, state.r_b)  # [R, T]: paths of g up to frame t
    before_first = jnp.where(state.last < 0, 0.0, NEG_INF)[:, None]  # only the empty prefix ends "before 0"
    phi = jnp.where(valid, jnp.concatenate([before_first, before[:, :-1]], axis=1), NEG_INF)
    log_top = jnp.max(phi, axis=1, keepdims=True)
    weights = jnp.exp(phi - log_top).reshape(batch, rows // batch, frames)
    total = jnp.einsum("bkt,btc->bkc", weights, posteriors.scaled).reshape(rows, labels)
    log_peak = jnp.repeat(posteriors.log_peak, rows // batch, axis=0)
    scores = jnp.maximum(jnp.log(total) + log_top + log_peak, NEG_INF).at[:, blank_id].set(NEG_INF)
    last, row_index = jnp.maximum(state.last, 0), jnp.arange(rows)
    repeat = prefix_scores(state, last[:, None], log_probs, lengths, blank_id)[:, 0]
    return scores.at[row_index, last].set(jnp.where(state.last >= 0, repeat, scores[row_index, last]))


def _linear_recurrence(log_a: jax.Array, log_s: jax.Array) -> jax.Array:
    """log x f32[R, T] of x_t = x_{t-1} a_t + s_t (x_{-1} = 0) from log a, log s f32[R, T]: an
    associative scan (log T levels of whole-array work, not T dependent steps)."""

    def compose(first, second):  # x -> (x a1 + s1) a2 + s2 = x (a1 a2) + (s1 a2 + s2)
        return first[0] + second[0], jnp.logaddexp(first[1] + second[0], second[1])

    return jax.lax.associative_scan(compose, (log_a, log_s), axis=1)[1]


def extend_prefix(
    state: PrefixState, labels: jax.Array, log_probs: jax.Array, lengths: jax.Array, blank_id: int
) -> PrefixState:
    """The prefix state of g + c for one label per row, labels i32[R]: the forward recursion over
    the T frames, r_n(t) = r_n(t-1) p_t(c) + start(t) and r_b(t) = (r_n(t-1) + r_b(t-1)) p_t(blank)
    (frames past ``lengths`` keep the last values), each a first-order linear recurrence."""
    start, emit = _candidate_starts(state, labels[:, None], log_probs, lengths, blank_id)
    start, emit = start[:, :, 0], emit[:, :, 0]  # [R, T]
    valid = jnp.arange(log_probs.shape[1])[None, :] < lengths[:, None]
    r_n = _linear_recurrence(jnp.where(valid, emit, 0.0), jnp.where(valid, start, NEG_INF))
    blank = log_probs[:, :, blank_id]
    previous_n = jnp.concatenate([jnp.full_like(r_n[:, :1], NEG_INF), r_n[:, :-1]], axis=1)
    r_b = _linear_recurrence(jnp.where(valid, blank, 0.0), jnp.where(valid, previous_n + blank, NEG_INF))
    score = jnp.maximum(jax.nn.logsumexp(start, axis=1), NEG_INF)
    return PrefixState(r_n=r_n, r_b=r_b, last=labels, score=score)


def full_score(state: PrefixState, lengths: jax.Array) -> jax.Array:
    """log P_ctc(g) f32[R]: the CTC probability of exactly the prefix g (its end-token score)."""
    last = jnp.clip(lengths - 1, 0)[:, None]
    total = jnp.logaddexp(jnp.take_along_axis(state.r_n, last, axis=1), jnp.take_along_axis(state.r_b, last, axis=1))
    return jnp.maximum(total[:, 0], NEG_INF)


@struct.dataclass
class JointCache:
    """The wrapped step's cache, each row's CTC prefix state and the candidates its last step
    offered (labels i32[R, N]). A candidate's forward variables are computed only once the search
    picks it (``_advance``), so beam search reorders [R, T] prefix states, not [R, N, T] ones."""

    inner: Any
    prefix: PrefixState
    labels: jax.Array


def _rescore(logits, prefix, posteriors, log_probs, lengths, weight, num_candidates, eos_ids, blank_id):
    """LLM logits f32[R, V] -> (joint scores f32[R, V], -inf outside the candidates; the candidates
    i32[R, N]: each row's N best joint scores, over every token the CTC head or an end token can give)."""
    llm_logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    vocab = logits.shape[-1]
    scores = vocabulary_prefix_scores(prefix, posteriors, log_probs, lengths, blank_id)[:, :vocab]
    scores = jnp.pad(scores, ((0, 0), (0, vocab - scores.shape[1])), constant_values=NEG_INF)
    ends = jnp.isin(jnp.arange(vocab), jnp.asarray(list(eos_ids) or [-1], jnp.int32))
    scores = jnp.where(ends[None, :], full_score(prefix, lengths)[:, None], scores)
    joint = (1.0 - weight) * llm_logp + weight * (scores - prefix.score[:, None])
    joint = jnp.where(jnp.isneginf(llm_logp), -jnp.inf, joint)  # what the step rules out stays out (also at w = 1)
    best, labels = jax.lax.top_k(joint, num_candidates)
    rows = jnp.arange(logits.shape[0])[:, None]
    out = jnp.full(logits.shape, -jnp.inf, jnp.float32).at[rows, labels].set(best)
    return out, labels


def _advance(cache: JointCache, tokens: jax.Array, log_probs, lengths, blank_id) -> PrefixState:
    """The prefix state after appending tokens i32[R] (kept where a token was no candidate: ended rows)."""
    found = (cache.labels == tokens[:, None]).any(axis=1)
    new, old = extend_prefix(cache.prefix, tokens, log_probs, lengths, blank_id), cache.prefix
    keep = lambda a, b: jnp.where(found.reshape(-1, *([1] * (b.ndim - 1))), a, b)
    return jax.tree.map(keep, new, old)


def joint_ctc(
    step_fn: Callable,
    first_logits: jax.Array,
    cache: Any,
    ctc_logits: jax.Array,
    ctc_lengths: jax.Array,
    *,
    weight: float,
    num_candidates: int,
    eos_ids: Sequence[int],
    blank_id: int,
    num_beams: int = 1,
    blank_penalty: float = 0.0,
) -> tuple[Callable, jax.Array, JointCache]:
    """Wraps a search's (step_fn, first_logits, cache) with CTC prefix rescoring.

    ctc_logits f32[B, T, K] and ctc_lengths i32[B] are the CTC head's output for the B rows of
    ``first_logits``; with ``num_beams`` > 1 the returned step function expects B * num_beams rows
    (the beam search expands the cache itself). ``blank_penalty`` is subtracted from the blank
    logit before the softmax (icefall's blank penalty: a weaker blank makes the prefix scores
    favour emitting labels)."""
    ctc_logits = ctc_logits.astype(jnp.float32)
    if blank_penalty:
        ctc_logits = ctc_logits.at[..., blank_id].add(-blank_penalty)
    log_probs = jax.nn.log_softmax(ctc_logits, axis=-1)
    args = (weight, num_candidates, tuple(eos_ids), blank_id)
    posteriors = scale_posteriors(log_probs, ctc_lengths)
    prefix = initial_state(log_probs, ctc_lengths, blank_id)
    first, candidates = _rescore(first_logits, prefix, posteriors, log_probs, ctc_lengths, *args)
    step_probs, step_lengths = (
        expand_for_beams((log_probs, ctc_lengths), num_beams) if num_beams > 1 else (log_probs, ctc_lengths)
    )

    def step(tokens, joint_cache: JointCache):
        prefix = _advance(joint_cache, tokens, step_probs, step_lengths, blank_id)
        logits, inner = step_fn(tokens, joint_cache.inner)
        scores, candidates = _rescore(logits, prefix, posteriors, step_probs, step_lengths, *args)
        return scores, JointCache(inner, prefix, candidates)

    return step, first, JointCache(cache, prefix, candidates)
