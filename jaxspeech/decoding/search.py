"""Model-agnostic search loops (run inside ``jax.jit`` with ``lax.while_loop``).

A model plugs in through a step function ``step_fn(tokens i32[B], cache) -> (logits f32[B, V], cache)``
that feeds the token just chosen and returns the logits of the next one, plus the logits of the first
new token (from the prefill). Cache convention: every array leaf with ``ndim >= 1`` has the batch on
axis 0 (beam search expands and reorders along it); scalar leaves are shared by the batch.

A ``logits_processor(logits f32[B, V], step i32[]) -> f32[B, V]`` may edit the logits of generation
step ``step`` (0 = first new token), e.g. to suppress tokens. Greedy and beam search log-softmax the
logits unless ``normalize=False``: then the step returns log-domain scores that the search adds as
they are (joint CTC/attention scores, whose sum over the steps is the hypothesis' joint score).
After a row emits an end token it emits ``pad_id``; ``lengths`` count the generated tokens
including the end token. A row whose every continuation is impossible (all scores <= NEG_INF / 2,
as for the padding rows of a batch under joint CTC scoring) stops there instead of running on to
``max_new_tokens`` and keeping the whole batch busy. Rows marked inactive (``active`` bool[B] False:
the padding rows that fill a batch to its compiled size) are finished before the first step: they
output only ``pad_id`` with length 0 and never keep the loop running.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
from flax import struct

# Scores at or below NEG_INF / 2 mean "impossible" (finite, so that sums of them stay comparable).
NEG_INF = -1e30

StepFn = Callable[[jax.Array, Any], tuple[jax.Array, Any]]
LogitsProcessor = Callable[[jax.Array, jax.Array], jax.Array]


@struct.dataclass
class DecodeOutput:
    """tokens i32[B, N] (pad after the end token), lengths i32[B], scores f32[B] (sum of log-probs,
    length-normalised for beam search)."""

    tokens: jax.Array
    lengths: jax.Array
    scores: jax.Array


def _is_end(tokens: jax.Array, eos_ids: Sequence[int]) -> jax.Array:
    return jnp.isin(tokens, jnp.asarray(list(eos_ids) or [-1], jnp.int32))


def _impossible(score: jax.Array) -> jax.Array:
    """bool, same shape: the score means "impossible" (<= NEG_INF / 2, -inf or NaN)."""
    return ~(score > NEG_INF / 2)


def _process(
    logits: jax.Array, step: jax.Array, processor: LogitsProcessor | None, normalize: bool = True
) -> jax.Array:
    """logits f32[B, V] -> log-scores f32[B, V]: processed, then log-softmaxed if ``normalize``."""
    logits = logits.astype(jnp.float32)
    logits = logits if processor is None else processor(logits, step)
    return jax.nn.log_softmax(logits, axis=-1) if normalize else logits


def _active_rows(active: jax.Array | None, batch: int) -> jax.Array:
    return jnp.ones((batch,), bool) if active is None else jnp.asarray(active, bool)


def _token_loop(
    choose,
    step_fn,
    first_logits,
    cache,
    max_new_tokens,
    eos_ids,
    pad_id,
    processor,
    normalize: bool = True,
    active: jax.Array | None = None,
) -> DecodeOutput:
    """Shared loop of greedy and sampling: ``choose(logits, step) -> tokens i32[B]``."""
    batch = first_logits.shape[0]
    active = _active_rows(active, batch)

    def pick(logits, step, finished):
        logits = _process(logits, step, processor, normalize)
        token = choose(logits, step).astype(jnp.int32)
        logprob = jnp.take_along_axis(logits, token[:, None], axis=1)[:, 0]
        token = jnp.where(finished, pad_id, token)
        return token, jnp.where(finished, 0.0, logprob)

    token, logprob = pick(first_logits, jnp.int32(0), ~active)
    out = jnp.full((batch, max_new_tokens), pad_id, jnp.int32).at[:, 0].set(token)
    state = dict(
        step=jnp.int32(1),
        token=token,
        cache=cache,
        out=out,
        score=logprob,
        lengths=active.astype(jnp.int32),
        finished=~active | _is_end(token, eos_ids) | _impossible(logprob),
    )

    def cond(s):
        return (s["step"] < max_new_tokens) & ~jnp.all(s["finished"])

    def body(s):
        logits, cache = step_fn(s["token"], s["cache"])
        token, logprob = pick(logits, s["step"], s["finished"])
        return dict(
            step=s["step"] + 1,
            token=token,
            cache=cache,
            out=jax.lax.dynamic_update_slice(s["out"], token[:, None], (0, s["step"])),
            score=s["score"] + logprob,
            lengths=s["lengths"] + (~s["finished"]).astype(jnp.int32),
            finished=s["finished"] | _is_end(token, eos_ids) | _impossible(logprob),
        )

    final = jax.lax.while_loop(cond, body, state)
    return DecodeOutput(tokens=final["out"], lengths=final["lengths"], scores=final["score"])


def greedy_search(
    step_fn: StepFn,
    first_logits: jax.Array,
    cache: Any,
    *,
    max_new_tokens: int,
    eos_ids: Sequence[int],
    pad_id: int,
    logits_processor: LogitsProcessor | None = None,
    normalize: bool = True,
    active: jax.Array | None = None,
) -> DecodeOutput:
    """Arg-max decoding of up to ``max_new_tokens`` tokens for every (active) row."""
    return _token_loop(
        lambda logits, step: jnp.argmax(logits, axis=-1),
        step_fn,
        first_logits,
        cache,
        max_new_tokens,
        eos_ids,
        pad_id,
        logits_processor,
        normalize,
        active,
    )


def filter_logits(logits: jax.Array, *, temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0) -> jax.Array:
    """Temperature, then top-k, then nucleus (top-p) filtering: f32[B, V] -> f32[B, V] (-inf = removed)."""
    logits = logits / jnp.float32(max(temperature, 1e-6))
    if top_k and top_k < logits.shape[-1]:
        kth = jax.lax.top_k(logits, top_k)[0][:, -1:]
        logits = jnp.where(logits < kth, -jnp.inf, logits)
    if top_p < 1.0:
        sorted_logits = jnp.sort(logits, axis=-1)[:, ::-1]
        probs = jax.nn.softmax(sorted_logits, axis=-1)
        before = jnp.cumsum(probs, axis=-1) - probs  # probability mass strictly above each token
        keep = before < top_p  # the first token is always kept
        threshold = jnp.min(jnp.where(keep, sorted_logits, jnp.inf), axis=-1, keepdims=True)
        logits = jnp.where(logits < threshold, -jnp.inf, logits)
    return logits


def sample(
    step_fn: StepFn,
    first_logits: jax.Array,
    cache: Any,
    rng: jax.Array,
    *,
    max_new_tokens: int,
    eos_ids: Sequence[int],
    pad_id: int,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    logits_processor: LogitsProcessor | None = None,
    active: jax.Array | None = None,
) -> DecodeOutput:
    """Ancestral sampling with temperature / top-k / top-p; step ``t`` uses ``fold_in(rng, t)``."""

    def choose(logprobs, step):
        filtered = filter_logits(logprobs, temperature=temperature, top_k=top_k, top_p=top_p)
        return jax.random.categorical(jax.random.fold_in(rng, step), filtered, axis=-1)

    return _token_loop(
        choose, step_fn, first_logits, cache, max_new_tokens, eos_ids, pad_id, logits_processor, active=active
    )


def expand_for_beams(tree: Any, num_beams: int) -> Any:
    """Repeats every batched leaf ``num_beams`` times along axis 0 (row b -> rows b*K .. b*K+K-1)."""
    return jax.tree.map(lambda x: jnp.repeat(x, num_beams, axis=0) if x.ndim else x, tree)


# Window widths (slots) of the phases of a beam search (``phase_widths``): a step reorders a
# window of its phase's width, so early steps, when few slots differ between beams, move little.
RECENT_WINDOWS = (16, 48, 128, 512)


def phase_widths(max_steps: int) -> tuple[int, ...]:
    """The phases of a search of ``max_steps`` steps, by the width of the cache window they reorder:
    the phase of width ``w`` runs the steps t < w not run before it (step t has t recent slots).
    The last phase's width is ``max_steps``. Each phase is its own loop, its width static."""
    return tuple(w for w in RECENT_WINDOWS if w < max_steps) + (max_steps,)


def _reorders_itself(x: Any) -> bool:
    return hasattr(x, "reorder_rows")


def reorder_rows(tree: Any, rows: jax.Array, recent: jax.Array | None = None, width: int | None = None) -> Any:
    """Gathers rows i32[R] (valid row indices) along axis 0 of every batched leaf. A cache that
    defines ``reorder_rows(rows, recent, width)`` (a KV cache) does it itself, given that only its
    slots written in the last ``recent`` i32[] steps (at most the static ``width``) differ between
    rows that started alike (the beams of one prompt)."""

    def reorder(x):
        if _reorders_itself(x) and recent is not None:
            return x.reorder_rows(rows, recent, width)
        # mode="clip": a plain gather; the default ("fill") adds a bounds test, a second pass.
        return jnp.take(x, rows, axis=0, mode="clip") if x.ndim else x

    return jax.tree.map(reorder, tree, is_leaf=_reorders_itself)


def beam_search(
    step_fn: StepFn,
    first_logits: jax.Array,
    cache: Any,
    *,
    num_beams: int,
    max_new_tokens: int,
    eos_ids: Sequence[int],
    pad_id: int,
    length_penalty: float = 1.0,
    logits_processor: LogitsProcessor | None = None,
    normalize: bool = True,
    active: jax.Array | None = None,
) -> DecodeOutput:
    """Beam search; ``cache`` and ``first_logits`` come from a prefill with batch B (not B*K).

    A hypothesis ending in an end token scores ``sum log p / length ** length_penalty``; hypotheses
    still open at ``max_new_tokens`` are scored the same way. A row closes once it has ``num_beams``
    finished hypotheses that its best open beam, normalised at its present length, does not beat
    (transformers' ``early_stopping=False`` rule), or no open beam with a finite score; a closed row
    takes no more finished hypotheses, and the search stops when every row is closed. Returns the
    best hypothesis per row. The steps run in phases (``phase_widths``), each its own loop, so that a
    KV cache reorders a window of slots of static width: its update stays in place.
    """
    batch, vocab = first_logits.shape
    k = num_beams
    neg_inf = jnp.float32(NEG_INF)
    active = _active_rows(active, batch)

    def normalised(score, length):
        return score / jnp.power(length.astype(jnp.float32), length_penalty)

    cache = expand_for_beams(cache, k)
    state = dict(
        step=jnp.int32(0),
        logits=expand_for_beams(first_logits, k),
        cache=cache,
        seqs=jnp.full((batch, k, max_new_tokens), pad_id, jnp.int32),
        # Only beam 0 of an active row starts.
        scores=jnp.where(active[:, None], jnp.array([0.0] + [NEG_INF] * (k - 1), jnp.float32), neg_inf),
        done_seqs=jnp.full((batch, k, max_new_tokens), pad_id, jnp.int32),
        done_scores=jnp.full((batch, k), neg_inf),
        done_lengths=jnp.ones((batch, k), jnp.int32),
        open_rows=active,
    )

    def body(s, width):
        step = s["step"]
        logprobs = _process(s["logits"], step, logits_processor, normalize)
        total = (s["scores"][:, :, None] + logprobs.reshape(batch, k, vocab)).reshape(batch, k * vocab)
        cand_scores, cand_ids = jax.lax.top_k(total, 2 * k)
        cand_beam, cand_token = cand_ids // vocab, (cand_ids % vocab).astype(jnp.int32)
        cand_seqs = jnp.take_along_axis(s["seqs"], cand_beam[:, :, None], axis=1)
        cand_seqs = jax.lax.dynamic_update_slice(cand_seqs, cand_token[:, :, None], (0, 0, step))
        ends = _is_end(cand_token, eos_ids)
        last_step = step == max_new_tokens - 1
        length = jnp.broadcast_to(step + 1, cand_scores.shape)
        # Finished: candidates ending here (or every candidate at the last step) join the done pool,
        # if they rank among the best k: an end ranked below them is a backup that never finishes.
        among_best = (jnp.arange(2 * k) < k)[None, :]
        finishing = (ends | last_step) & among_best & ~_impossible(cand_scores) & s["open_rows"][:, None]
        fin_scores = jnp.where(finishing, normalised(cand_scores, length), neg_inf)
        pool_scores = jnp.concatenate([s["done_scores"], fin_scores], axis=1)
        pool_seqs = jnp.concatenate([s["done_seqs"], cand_seqs], axis=1)
        pool_lengths = jnp.concatenate([s["done_lengths"], length], axis=1)
        done_scores, done_idx = jax.lax.top_k(pool_scores, k)
        # Open: the best k candidates that did not end.
        open_scores = jnp.where(ends, neg_inf, cand_scores)
        new_scores, open_idx = jax.lax.top_k(open_scores, k)
        # A row stays open while its best open beam (normalised at its present length) beats its worst
        # finished one; one with no live hypothesis (every continuation impossible, e.g. padding) closes.
        best_open = new_scores[:, 0]
        beats_done = normalised(best_open, step + 1) > jnp.min(done_scores, axis=1)
        open_rows = s["open_rows"] & ~_impossible(best_open) & beats_done
        parent = jnp.take_along_axis(cand_beam, open_idx, axis=1)
        tokens = jnp.take_along_axis(cand_token, open_idx, axis=1)
        rows = (jnp.arange(batch)[:, None] * k + parent).reshape(-1)
        # The cache holds the prompt (the same for every beam of a row) and the `step` tokens since.
        cache = reorder_rows(s["cache"], rows, recent=step, width=width)
        logits, cache = step_fn(tokens.reshape(-1), cache)  # after the last step: computed, not used
        return dict(
            step=step + 1,
            logits=logits,
            cache=cache,
            seqs=jnp.take_along_axis(cand_seqs, open_idx[:, :, None], axis=1),
            scores=new_scores,
            done_seqs=jnp.take_along_axis(pool_seqs, done_idx[:, :, None], axis=1),
            done_scores=done_scores,
            done_lengths=jnp.take_along_axis(pool_lengths, done_idx, axis=1),
            open_rows=open_rows,
        )

    final = state
    for width in phase_widths(max_new_tokens):
        final = jax.lax.while_loop(
            lambda s, end=width: (s["step"] < end) & jnp.any(s["open_rows"]),
            functools.partial(body, width=width),
            final,
        )
    best = jnp.argmax(final["done_scores"], axis=1)
    tokens = jnp.take_along_axis(final["done_seqs"], best[:, None, None], axis=1)[:, 0]
    lengths = jnp.where(active, jnp.take_along_axis(final["done_lengths"], best[:, None], axis=1)[:, 0], 0)
    positions = jnp.arange(max_new_tokens)[None, :]
    tokens = jnp.where(positions < lengths[:, None], tokens, pad_id)
    scores = jnp.where(active, jnp.take_along_axis(final["done_scores"], best[:, None], axis=1)[:, 0], 0.0)
    return DecodeOutput(tokens=tokens, lengths=lengths, scores=scores)
