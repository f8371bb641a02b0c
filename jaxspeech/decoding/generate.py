"""Text generation with a ``DecoderLM``: prefill a padded prompt batch, then search with the KV cache.

Prompts may be left- or right-padded (``segment_ids`` 0 on padding): every row's rotary positions
count only its real tokens and padding slots are masked, so a batch yields the same tokens as each
prompt alone.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Literal, Sequence

import jax
import jax.numpy as jnp

from jaxspeech.decoding.search import DecodeOutput, LogitsProcessor, beam_search, greedy_search, sample
from jaxspeech.llm.config import LLMConfig
from jaxspeech.llm.decoder import DecoderLM
from jaxspeech.llm.kv_cache import KVCache, init_cache
from jaxspeech.llm.layout import unrolled


@dataclasses.dataclass(frozen=True)
class GenerationConfig:
    """``method``: greedy | sample | beam. ``eos_ids`` end a row (suppressed for the first
    ``min_new_tokens`` steps); ``pad_id`` fills after the end. ``ctc_weight`` > 0 (models with a
    CTC head only) adds CTC prefix probabilities to every token's score at every step, and each
    row offers the search its ``ctc_candidates`` best joint tokens (``decoding/ctc_prefix.py``);
    ``ctc_blank_penalty`` is subtracted from the CTC head's blank logit before its softmax (> 0:
    fewer deleted labels from an over-confident blank)."""

    max_new_tokens: int = 32
    min_new_tokens: int = 0
    method: Literal["greedy", "sample", "beam"] = "greedy"
    eos_ids: tuple[int, ...] = ()
    pad_id: int = 0
    num_beams: int = 4
    length_penalty: float = 1.0
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    ctc_weight: float = 0.0
    ctc_candidates: int = 8
    ctc_blank_penalty: float = 0.0

    def __post_init__(self):
        if self.method not in ("greedy", "sample", "beam"):
            raise ValueError(f"generation method must be greedy, sample or beam, got {self.method!r}")
        if not 0.0 <= self.ctc_weight <= 1.0 or self.ctc_candidates < 1:
            raise ValueError(
                f"ctc_weight must be in [0, 1] and ctc_candidates >= 1, got {self.ctc_weight}, {self.ctc_candidates}"
            )
        if not math.isfinite(self.ctc_blank_penalty):
            raise ValueError(f"ctc_blank_penalty must be a finite number, got {self.ctc_blank_penalty}")
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")


def last_real_index(segment_ids: jax.Array) -> jax.Array:
    """i32[B]: index of each row's last non-padding position."""
    positions = jnp.arange(segment_ids.shape[1], dtype=jnp.int32)[None, :]
    return jnp.max(jnp.where(segment_ids != 0, positions, -1), axis=1)


def suppress_eos_before(
    min_new_tokens: int, eos_ids: tuple[int, ...], then: LogitsProcessor | None = None
) -> LogitsProcessor | None:
    """A processor that masks the end tokens during the first ``min_new_tokens`` steps, then applies ``then``."""
    if min_new_tokens <= 0 or not eos_ids:
        return then
    eos = jnp.asarray(eos_ids, jnp.int32)

    def processor(logits, step):
        logits = logits if then is None else then(logits, step)
        return jnp.where(step < min_new_tokens, logits.at[:, eos].set(-jnp.inf), logits)

    return processor


def run_search(
    step_fn,
    first_logits,
    cache,
    gen: GenerationConfig,
    rng: jax.Array | None = None,
    logits_processor=None,
    normalize: bool = True,
    active: jax.Array | None = None,
) -> DecodeOutput:
    """Dispatches to the search named by ``gen.method`` (shared by every model with a step function);
    ``normalize=False``: the step returns log-scores that greedy and beam search add unnormalised;
    ``active`` bool[B] False marks padding rows (``decoding/search.py``)."""
    logits_processor = suppress_eos_before(gen.min_new_tokens, gen.eos_ids, logits_processor)
    common = dict(
        max_new_tokens=gen.max_new_tokens,
        eos_ids=gen.eos_ids,
        pad_id=gen.pad_id,
        logits_processor=logits_processor,
        active=active,
    )
    if gen.method == "greedy":
        return greedy_search(step_fn, first_logits, cache, normalize=normalize, **common)
    if gen.method == "sample":
        rng = jax.random.key(0) if rng is None else rng
        return sample(
            step_fn, first_logits, cache, rng, temperature=gen.temperature, top_k=gen.top_k, top_p=gen.top_p, **common
        )
    return beam_search(
        step_fn,
        first_logits,
        cache,
        num_beams=gen.num_beams,
        length_penalty=gen.length_penalty,
        normalize=normalize,
        **common,
    )


def prefill(
    config: LLMConfig, params, tokens: jax.Array, segment_ids: jax.Array, max_length: int
) -> tuple[jax.Array, KVCache]:
    """Runs the prompt through the model: (logits of each row's next token f32[B, V], cache)."""
    model = DecoderLM(config)
    cache = init_cache(config, tokens.shape[0], max_length)
    embeds = model.apply(params, tokens, method=DecoderLM.embed)
    hidden, cache = model.apply(params, embeds, segment_ids=segment_ids, cache=cache, method=DecoderLM.hidden_states)
    last = jnp.take_along_axis(hidden, last_real_index(segment_ids)[:, None, None], axis=1)
    return model.apply(params, last, method=DecoderLM.logits)[:, 0], cache


def make_step_fn(config: LLMConfig, params):
    """(tokens i32[B], cache) -> (logits f32[B, V], cache): one decoding step of the LLM."""
    model = DecoderLM(config)

    def step(tokens, cache):
        logits, cache = model.apply(params, tokens[:, None], cache=cache)
        return logits[:, 0], cache

    return step


def generate(
    config: LLMConfig,
    params,
    tokens: jax.Array,
    segment_ids: jax.Array,
    gen: GenerationConfig,
    rng: jax.Array | None = None,
) -> DecodeOutput:
    """tokens i32[B, T] with segment_ids i32[B, T] (0 = padding, either side) -> new tokens i32[B, N].

    Scanned params are unrolled first (decoding runs faster unrolled; load with
    ``scan_layers=False`` to skip that copy when generating repeatedly).
    """
    if gen.ctc_weight:
        raise ValueError("ctc_weight > 0 needs a model with a CTC head; a text-only LLM has none")
    config, params = unrolled(config, params)
    return _generate(config, params, tokens, segment_ids, gen, rng)


@functools.partial(jax.jit, static_argnames=("config", "gen"))
def _generate(
    config: LLMConfig,
    params,
    tokens: jax.Array,
    segment_ids: jax.Array,
    gen: GenerationConfig,
    rng: jax.Array | None = None,
) -> DecodeOutput:
    first_logits, cache = prefill(config, params, tokens, segment_ids, tokens.shape[1] + gen.max_new_tokens)
    return run_search(make_step_fn(config, params), first_logits, cache, gen, rng)


def pad_prompts(prompts: Sequence[Sequence[int]], pad_id: int = 0, side: str = "left") -> tuple[jax.Array, jax.Array]:
    """Token lists -> (tokens i32[B, T], segment_ids i32[B, T]) padded on ``side``."""
    if not prompts or any(len(p) == 0 for p in prompts):
        raise ValueError("every prompt needs at least one token")
    width = max(len(p) for p in prompts)
    rows, segs = [], []
    for p in prompts:
        pad = [pad_id] * (width - len(p))
        rows.append(pad + list(p) if side == "left" else list(p) + pad)
        segs.append([0] * len(pad) + [1] * len(p) if side == "left" else [1] * len(p) + [0] * len(pad))
    return jnp.asarray(rows, jnp.int32), jnp.asarray(segs, jnp.int32)
