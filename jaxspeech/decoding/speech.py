"""Generation from audio prompts with a ``SpeechLLM`` (all three fusion modes).

A prompt batch holds tokens i32[B, T] with the audio placeholder spans already in place (as
``jaxspeech.data.prompts.encode_example`` builds them, without a target), segment_ids i32[B, T]
(0 = padding, on either side) and the clips' features f32[B, C, Tf, F] with feature_lengths
i32[B, C]. ``SpeechLLM.prefill`` runs the audio encoder once, splices the inline audio and fills a
KV cache of T + max_new_tokens slots; the cross-attention memory (cross_attention / hybrid) is
projected once in the prefill and read by every step as a loop constant (beam search expands it to
the beams once instead of gathering it after every reordering). The shared ``run_search`` (greedy,
sample, beam) then drives ``SpeechLLM.extend`` one token at a time, the LLM layers unrolled; with
``ctc_weight`` > 0 the CTC head's prefix probabilities rescore every step (``ctc_prefix.py``), and
with a ``lexicon`` the output holds only its words (``lexicon.py``).

The placeholder token is never generated (for fusions with inline audio): a generated placeholder
would be spliced as audio if the output were fed back as a prompt.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from jaxspeech.decoding.ctc_prefix import joint_ctc
from jaxspeech.decoding.generate import GenerationConfig, last_real_index, run_search
from jaxspeech.decoding.lexicon import TokenAutomaton, constrain
from jaxspeech.decoding.search import DecodeOutput, expand_for_beams
from jaxspeech.layers.lora import LoraConfig, lora_only, merge_lora
from jaxspeech.llm.kv_cache import init_cache
from jaxspeech.llm.layout import unrolled
from jaxspeech.models.speech_llm import SpeechLLM, SpeechLLMConfig, check_placeholders, is_concrete


def decoding_params(
    config: SpeechLLMConfig, params: dict, lora: LoraConfig | None = None
) -> tuple[SpeechLLMConfig, dict]:
    """(config, params) ready for decoding: LoRA adapters merged into their kernels (so a step costs
    what the base model costs), the LLM's layers unrolled (``llm/layout.py``: faster per token)
    and not rematerialised.

    ``params`` are unboxed ``{"params": {...}}``; adapters present without a ``lora`` config are an
    error rather than silently ignored."""
    if lora is not None:
        params = merge_lora(params, lora)
    else:
        adapters = traverse_util.flatten_dict(lora_only(params.get("params", {})), sep="/")
        if adapters:
            raise ValueError(
                f"params hold LoRA adapters (e.g. {next(iter(adapters))!r}) but no LoraConfig was given: "
                "pass lora= (or merge them with jaxspeech.layers.lora.merge_lora)"
            )
    llm_config, llm_params = unrolled(config.llm, {"params": params["params"]["llm"]})
    llm_config = llm_config.replace(remat_policy="none")  # rematerialisation only matters for gradients
    return config.replace(llm=llm_config), {**params, "params": {**params["params"], "llm": llm_params["params"]}}


def check_audio_prompts(config: SpeechLLMConfig, tokens, segment_ids, features, feature_lengths) -> None:
    """Host-side checks of a prompt batch (shapes; placeholder counts when the arrays are concrete)."""
    if tokens.ndim != 2 or segment_ids.shape != tokens.shape:
        raise ValueError(f"tokens {tuple(tokens.shape)} and segment_ids {tuple(segment_ids.shape)} must both be [B, T]")
    if features.ndim != 4 or feature_lengths.shape != features.shape[:2]:
        raise ValueError(
            f"features {tuple(features.shape)} must be [B, C, Tf, F] and feature_lengths "
            f"{tuple(feature_lengths.shape)} [B, C]"
        )
    if features.shape[0] != tokens.shape[0]:
        raise ValueError(f"features hold {features.shape[0]} rows but tokens hold {tokens.shape[0]}")
    if not is_concrete(segment_ids, feature_lengths, tokens):
        return
    segment_ids, feature_lengths = np.asarray(segment_ids), np.asarray(feature_lengths)
    empty = np.nonzero((segment_ids != 0).sum(axis=1) == 0)[0]
    if empty.size:
        raise ValueError(f"prompt row {int(empty[0])} has no tokens (segment_ids all 0): every row needs a prompt")
    too_long = np.argwhere(feature_lengths > features.shape[2])
    if too_long.size:
        b, c = (int(i) for i in too_long[0])
        raise ValueError(
            f"feature_lengths[{b}, {c}] = {int(feature_lengths[b, c])} exceeds the {features.shape[2]} "
            "feature frames of the batch"
        )
    if config.fusion == "cross_attention":
        return
    inline = [[config.audio_token_count(int(n)) if n > 0 else 0 for n in clips] for clips in feature_lengths]
    real_tokens = np.where(segment_ids != 0, np.asarray(tokens), -1)  # placeholders in padding do not count
    check_placeholders(real_tokens, np.asarray(inline), config.placeholder_id)


def neutral_padding(config: SpeechLLMConfig, tokens: jax.Array, segment_ids: jax.Array) -> jax.Array:
    """tokens i32[B, T] with padding slots set to an id other than the placeholder: padding is masked
    everywhere, but a placeholder there would still take a turn in the audio splice."""
    filler = 1 if config.placeholder_id == 0 else 0
    return jnp.where(segment_ids != 0, tokens, filler).astype(jnp.int32)


def trim_padding_columns(tokens, segment_ids, multiple: int = 16):
    """(tokens, segment_ids) without the leading and trailing columns that are padding in every row,
    the width rounded up to a ``multiple`` (so that the batches of one duration bucket share a
    compiled program): a prompt batch padded to its bucket's training width would otherwise give
    the KV cache slots that every row masks at every step. Traced arrays are returned unchanged."""
    if not is_concrete(tokens, segment_ids):
        return tokens, segment_ids
    used = np.nonzero(np.asarray(segment_ids).any(axis=0))[0]
    if used.size == 0:
        return tokens, segment_ids
    width = min(tokens.shape[1], -(-(int(used[-1]) + 1 - int(used[0])) // multiple) * multiple)
    start = min(int(used[0]), tokens.shape[1] - width)
    return tokens[:, start : start + width], segment_ids[:, start : start + width]


def generate_from_audio(
    config: SpeechLLMConfig,
    params: dict,
    tokens: jax.Array,
    segment_ids: jax.Array,
    features: jax.Array,
    feature_lengths: jax.Array,
    gen: GenerationConfig,
    rng: jax.Array | None = None,
    lora: LoraConfig | None = None,
    lexicon: TokenAutomaton | None = None,
    active: jax.Array | None = None,
) -> DecodeOutput:
    """Prompts tokens i32[B, T] (placeholder spans in place; segment_ids i32[B, T], 0 = padding on
    either side) with audio features f32[B, C, Tf, F] and feature_lengths i32[B, C] -> new tokens.

    ``params`` may be in the scanned or unrolled layout, with LoRA adapters when ``lora`` is given
    (merged before decoding). Returns ``DecodeOutput`` (tokens i32[B, max_new_tokens], lengths,
    scores). ``lexicon`` restricts the output to its words (``decoding/lexicon.py``). Rows with
    ``active`` bool[B] False (padding rows of a batch; they still need a prompt) output nothing and
    never keep the search running; given as concrete values, they are dropped before decoding
    (``decoded_rows``: a short batch runs as one of the next power of two rows). Columns that are
    padding in every row are dropped too (``trim_padding_columns``). Jit-compiled once per (config,
    gen, lora, shapes).
    """
    check_audio_prompts(config, tokens, segment_ids, features, feature_lengths)
    if gen.ctc_weight and not config.ctc_vocab_size:
        raise ValueError("ctc_weight > 0 needs a model with a CTC head (ctc_vocab_size > 0)")
    if gen.ctc_weight and features.shape[1] != 1:
        raise ValueError(f"joint CTC decoding reads one audio clip per row; this batch has {features.shape[1]}")
    rows = decoded_rows(active) if active is not None and is_concrete(active) else None
    if rows is not None:  # padding rows dropped: a short batch decodes as a smaller one
        take = lambda x: np.asarray(x)[rows]
        inputs = (take(tokens), take(segment_ids), take(features), take(feature_lengths))
        out = generate_from_audio(config, params, *inputs, gen, rng, lora, lexicon, take(active))
        return spread_rows(out, rows[: int(np.sum(active))], tokens.shape[0], gen.pad_id)
    tokens, segment_ids = trim_padding_columns(tokens, segment_ids)
    return _generate_from_audio(
        config, params, tokens, segment_ids, features, feature_lengths, gen, rng, lora, lexicon, active
    )


def decoded_rows(active) -> np.ndarray | None:
    """The rows of a batch worth decoding, given ``active`` bool[B]: every active row, then inactive
    ones up to the next power of two, as indices i32[R]; None unless that at least halves the batch
    (each new R compiles a program of its own, which only dropping many rows pays for)."""
    active = np.asarray(active, bool)
    real, idle = np.nonzero(active)[0], np.nonzero(~active)[0]
    size = 1 << max(len(real) - 1, 0).bit_length()
    if 2 * size > len(active):
        return None
    return np.concatenate([real, idle[: size - len(real)]])


def spread_rows(out: DecodeOutput, real_rows: np.ndarray, batch: int, pad_id: int) -> DecodeOutput:
    """The outputs of the decoded rows (the first ``len(real_rows)`` of ``out``) put back at
    ``real_rows`` of a batch of ``batch`` rows; the others empty (no tokens, score 0), as padding
    rows come out of the search."""
    tokens, lengths, scores = jax.device_get((out.tokens, out.lengths, out.scores))
    n = len(real_rows)
    full_tokens = np.full((batch, tokens.shape[1]), pad_id, tokens.dtype)
    full_lengths, full_scores = np.zeros(batch, lengths.dtype), np.zeros(batch, scores.dtype)
    full_tokens[real_rows], full_lengths[real_rows], full_scores[real_rows] = tokens[:n], lengths[:n], scores[:n]
    return DecodeOutput(
        tokens=jnp.asarray(full_tokens), lengths=jnp.asarray(full_lengths), scores=jnp.asarray(full_scores)
    )


def _no_placeholder(config: SpeechLLMConfig):
    if config.fusion == "cross_attention":  # no inline audio: the placeholder id is an ordinary token
        return None
    return lambda logits, step: logits.at[:, config.placeholder_id].set(-jnp.inf)


@functools.partial(jax.jit, static_argnames=("config", "gen", "lora"))
def _generate_from_audio(
    config, params, tokens, segment_ids, features, feature_lengths, gen, rng, lora, lexicon, active
):
    config, params = decoding_params(config, params, lora)
    model = SpeechLLM(config)
    tokens = neutral_padding(config, tokens, segment_ids)
    cache = init_cache(config.llm, tokens.shape[0], tokens.shape[1] + gen.max_new_tokens)
    hidden, state = model.apply(params, tokens, features, feature_lengths, segment_ids, cache, method=SpeechLLM.prefill)
    last = jnp.take_along_axis(hidden, last_real_index(segment_ids)[:, None, None], axis=1)
    first_logits = model.apply(params, last, method=SpeechLLM.logits)[:, 0]
    # The memory is the same at every step and for every beam of a row: it stays outside the search
    # state, which beam search re-gathers after every reordering.
    memory = state["memory"]
    if gen.method == "beam":
        memory = expand_for_beams(memory, gen.num_beams)

    def step(new_tokens, llm_cache):
        logits, new_state = model.apply(
            params, new_tokens[:, None], {"llm": llm_cache, "memory": memory}, method=SpeechLLM.extend
        )
        return logits[:, 0], new_state["llm"]

    cache = state["llm"]
    if lexicon is not None:  # before the CTC rescoring, so that its candidates are lexicon tokens
        step, first_logits, cache = constrain(step, first_logits, cache, lexicon)
    if gen.ctc_weight:
        ctc_logits, ctc_lengths = model.apply(params, features, feature_lengths, method=SpeechLLM.ctc_from_features)
        step, first_logits, cache = joint_ctc(
            step,
            first_logits,
            cache,
            ctc_logits,
            ctc_lengths,
            weight=gen.ctc_weight,
            num_candidates=gen.ctc_candidates,
            eos_ids=gen.eos_ids,
            blank_id=config.ctc_blank_id,
            blank_penalty=gen.ctc_blank_penalty,
            num_beams=gen.num_beams if gen.method == "beam" else 1,
        )
    # Joint scores are added as they are: their sum over the steps is the hypothesis' joint score.
    return run_search(
        step,
        first_logits,
        cache,
        gen,
        rng,
        logits_processor=_no_placeholder(config),
        normalize=not gen.ctc_weight,
        active=active,
    )
