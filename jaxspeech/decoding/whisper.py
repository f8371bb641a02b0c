"""Whisper generation: token suppression and the jitted encode -> prefill -> search program.

``make_generate_fn`` builds ``fn(params, features, lengths) -> DecodeOutput`` for a checkpoint's
``WhisperGenerationConfig`` (its task prompt and suppression lists), with greedy or beam search
from ``jaxspeech.decoding.search`` driving ``WhisperSeq2Seq.extend``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jaxspeech.decoding.search import beam_search, greedy_search
from jaxspeech.models.whisper_seq2seq import (
    WhisperConfig,
    WhisperGenerationConfig,
    WhisperSeq2Seq,
    init_cache,
    unrolled,
)


def suppression_processor(generation: WhisperGenerationConfig, vocab_size: int):
    """A ``LogitsProcessor`` ``(logits f32[B, V], step i32[]) -> f32[B, V]`` setting suppressed tokens
    to -inf: ``suppress_tokens`` at every step, ``begin_suppress_tokens`` at step 0 (the first
    generated token), as HF's ``SuppressTokens(AtBegin)LogitsProcessor``."""

    def token_mask(ids):
        mask = np.zeros((vocab_size,), bool)
        # Ids past the vocabulary are ignored, as in HF (its generation configs list a few).
        mask[[i for i in ids if 0 <= i < vocab_size]] = True
        return jnp.asarray(mask)

    always = token_mask(generation.suppress_tokens)
    at_begin = token_mask(generation.begin_suppress_tokens)

    def process(logits: jax.Array, step: jax.Array) -> jax.Array:
        suppressed = always | (at_begin & (step == 0))
        return jnp.where(suppressed[None, :], -jnp.inf, logits)

    return process


def make_generate_fn(
    config: WhisperConfig,
    generation: WhisperGenerationConfig,
    *,
    language: str | None = "en",
    task: str = "transcribe",
    num_beams: int = 1,
    max_new_tokens: int = 224,
    length_penalty: float = 1.0,
):
    """A jitted ``fn(params, features f32[B, T, n_mels], lengths i32[B] | None, active bool[B] | None)
    -> DecodeOutput``.

    Encodes, prefills the task prompt (``generation.prompt(language, task)``), then runs greedy
    (``num_beams == 1``) or beam search from ``jaxspeech.decoding.search`` with Whisper's token
    suppression. The cross-attention keys and values are projected once per utterance and read by
    every step as a loop constant, shared by an utterance's beams (``CrossKV``); only the
    self-attention cache follows the beams. Rows with ``active`` False (padding that fills a batch)
    output nothing and never keep the loop running. ``max_new_tokens`` is capped so prompt + output
    fit the decoder's positions (as HF). The output tokens exclude the prompt; ``lengths`` include
    the end token when one was emitted. Decoder layers run unrolled (scanned params are unstacked
    once per call), without rematerialisation.
    """
    prompt = generation.prompt(language, task)
    max_new = min(max_new_tokens, config.decoder.max_target_positions - len(prompt))
    if max_new < 1:
        raise ValueError(
            f"no room to generate: prompt of {len(prompt)} tokens, {config.decoder.max_target_positions} positions"
        )
    processor = suppression_processor(generation, config.decoder.vocab_size)
    search_options = dict(
        max_new_tokens=max_new,
        eos_ids=(generation.eos_token_id,),
        pad_id=generation.pad_token_id,
        logits_processor=processor,
    )

    def generate(params, features: jax.Array, lengths: jax.Array | None, active: jax.Array | None = None):
        decoding_config, params = unrolled(config.with_options(remat_policy="none"), params)
        model = WhisperSeq2Seq(decoding_config)
        batch = features.shape[0]
        encoded = model.apply(params, features, lengths, method="encode")
        cache = init_cache(decoding_config, batch, len(prompt) + max_new)
        prompt_tokens = jnp.broadcast_to(jnp.asarray(prompt, jnp.int32)[None], (batch, len(prompt)))
        logits, cache, cross = model.apply(
            params, encoded.hidden, encoded.lengths, prompt_tokens, cache, method="prefill"
        )
        step_fn = lambda tokens, state: model.apply(params, tokens, state, cross, method="extend")
        if num_beams == 1:
            return greedy_search(step_fn, logits[:, -1], cache, active=active, **search_options)
        return beam_search(
            step_fn,
            logits[:, -1],
            cache,
            num_beams=num_beams,
            length_penalty=length_penalty,
            active=active,
            **search_options,
        )

    return jax.jit(generate)
