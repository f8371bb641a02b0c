"""LLM-dormancy diagnostics: is the LLM still listening to the instruction?

"Dormancy": projected audio embeddings dwarf the text embeddings, and a frozen LLM answers every
instruction as if it were "transcribe". Three views, from cheapest to most direct:

* ``embedding_rms_ratio``: RMS of the audio embeddings entering the LLM over the RMS of the row's
  text-token embeddings (per clip, and the batch mean). A ratio far above 1 is the warning sign;
  ``norm_match=True`` on the connector pins it near 1. Jit-able, cheap enough to log every step.
* ``attention_mass``: for the positions that predict target / generated tokens, the share of
  self-attention probability on instruction tokens, audio tokens and everything else, per layer.
* ``prompt_following_probe``: the same audio under several instructions ("transcribe", "repeat in
  capitals", "answer yes or no"), each output scored against its own instruction.

Batches follow ``jaxspeech.types.Batch`` (a ``Batch`` or a dict with ``tokens``, ``segment_ids``,
``features``, ``feature_lengths``).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxspeech.data.prompts import encode_example
from jaxspeech.data.tokenizers import Tokenizer
from jaxspeech.decoding.generate import GenerationConfig, pad_prompts
from jaxspeech.decoding.search import DecodeOutput
from jaxspeech.decoding.speech import check_audio_prompts, decoding_params, generate_from_audio, neutral_padding
from jaxspeech.evals.metrics import get_normalizer, wer
from jaxspeech.layers.attention import DIAGNOSTICS
from jaxspeech.layers import lora as lora_layers
from jaxspeech.layers.lora import LoraConfig
from jaxspeech.models.speech_llm import SpeechLLM, SpeechLLMConfig

MASS_CATEGORIES = ("instruction", "audio", "other")


def _fields(batch: Any) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
    """(tokens, segment_ids, features, feature_lengths) of a ``Batch`` or a mapping."""
    get = batch.__getitem__ if isinstance(batch, Mapping) else lambda name: getattr(batch, name)
    features = get("features")
    if features is None:
        raise ValueError("the batch carries raw audio (features is None): compute log-mel features first")
    return get("tokens"), get("segment_ids"), features, get("feature_lengths")


def _inline_audio(config: SpeechLLMConfig, tokens: jax.Array) -> jax.Array:
    """bool[B, L]: positions holding spliced audio (none for cross_attention, whose placeholder id is
    an ordinary token)."""
    if config.fusion == "cross_attention":
        return jnp.zeros(tokens.shape, bool)
    return tokens == config.placeholder_id


# --- (a) embedding RMS ratio ---------------------------------------------------------------------


def embedding_rms_ratio(config: SpeechLLMConfig, params: dict, batch: Any, lora: LoraConfig | None = None) -> dict:
    """RMS of audio vs text embeddings at the LLM input. Jit-able (``config`` static).

    Audio: the embeddings spliced into the prompt (decoder_only, hybrid: the pooled ones) or the
    cross-attention memory (cross_attention), over each clip's valid positions. Text: the token
    embeddings of the row's real, non-audio tokens. ``lora`` applies adapters through the interceptor.

    Returns audio_rms f32[B, C] (0 where no clip), text_rms f32[B], ratio f32[B, C] (audio / text,
    0 where no clip) and mean_ratio f32[] (over the clips present).
    """
    tokens, segment_ids, features, feature_lengths = _fields(batch)
    check_audio_prompts(config, tokens, segment_ids, features, feature_lengths)
    model = SpeechLLM(config)

    def measure(module, tokens, features, feature_lengths):
        audio = module.encode_audio(features, feature_lengths)
        return (audio if config.fusion == "cross_attention" else module.inline_audio(audio)), module.llm.embed(tokens)

    with lora_layers.lora(lora):
        audio, text = model.apply(params, tokens, features, feature_lengths, method=measure)
    width = audio.embeds.shape[-1]
    present = audio.lengths > 0
    audio_sq = jnp.sum(jnp.square(audio.embeds.astype(jnp.float32)), axis=(2, 3))  # padding is zero
    audio_rms = jnp.sqrt(audio_sq / (jnp.maximum(audio.lengths, 1) * width))
    is_text = (segment_ids != 0) & ~_inline_audio(config, tokens)
    text_sq = jnp.sum(jnp.where(is_text[..., None], jnp.square(text.astype(jnp.float32)), 0.0), axis=(1, 2))
    text_rms = jnp.sqrt(text_sq / (jnp.maximum(is_text.sum(axis=1), 1) * width))
    ratio = jnp.where(present, audio_rms / jnp.maximum(text_rms, 1e-12)[:, None], 0.0)
    return {
        "audio_rms": jnp.where(present, audio_rms, 0.0),
        "text_rms": text_rms,
        "ratio": ratio,
        "mean_ratio": ratio.sum() / jnp.maximum(present.sum(), 1),
    }


# --- (b) attention mass --------------------------------------------------------------------------


def append_generated(tokens: np.ndarray, segment_ids: np.ndarray, output: DecodeOutput) -> dict[str, np.ndarray]:
    """Prompts i32[B, T] (padded on either side) + their generated tokens -> one right-padded batch
    i32[B, T + N] with ``segment_ids`` and ``target_mask`` f32 (1 on the generated tokens)."""
    tokens, segment_ids = np.asarray(tokens), np.asarray(segment_ids)
    generated, lengths = np.asarray(output.tokens), np.asarray(output.lengths)
    rows, width = tokens.shape[0], tokens.shape[1] + generated.shape[1]
    out = {
        "tokens": np.zeros((rows, width), np.int32),
        "segment_ids": np.zeros((rows, width), np.int32),
        "target_mask": np.zeros((rows, width), np.float32),
    }
    for b in range(rows):
        prompt = tokens[b][segment_ids[b] != 0]
        sequence = np.concatenate([prompt, generated[b, : lengths[b]]])
        out["tokens"][b, : len(sequence)] = sequence
        out["segment_ids"][b, : len(sequence)] = 1
        out["target_mask"][b, len(prompt) : len(sequence)] = 1.0
    return out


def attention_mass(
    config: SpeechLLMConfig,
    params: dict,
    batch: Any,
    target_mask: jax.Array,
    *,
    instruction_mask: jax.Array | None = None,
    lora: LoraConfig | None = None,
) -> dict[str, jax.Array]:
    """Where the LLM's self-attention looks while it produces the targets.

    ``target_mask`` f[B, L] marks target / generated tokens (the ``Batch.loss_mask`` convention:
    token t is predicted at position t - 1); the queries are the positions predicting them. Keys
    fall into ``MASS_CATEGORIES``: *audio* (the spliced placeholder positions), *instruction*
    (``instruction_mask`` bool[B, L], by default every real non-audio token before the row's first
    target: the prompt text, chat markup included) and *other* (the targets themselves). Weights
    are averaged over heads, then over each row's queries.

    Returns per-layer batch means ``instruction``, ``audio``, ``other`` f32[layers] (rows without
    targets left out), ``per_example`` f32[B, layers, 3], and for cross_attention / hybrid
    ``xattn_gate`` f32[blocks] = tanh(attention gate) of each gated block.

    For ``hybrid`` the audio share counts the inline pooled tokens only (the full-resolution audio
    arrives through the gated cross-attention, see ``xattn_gate``). For ``cross_attention`` the
    audio never sits in the sequence: the audio share is 0 by
    construction and the self-attention split only says how much goes to the instruction versus the
    answer so far. The audio path is the gated cross-attention, whose queries attend to audio frames
    only; there ``xattn_gate`` (how far each block is opened) is the signal to watch.
    """
    tokens, segment_ids, features, feature_lengths = _fields(batch)
    check_audio_prompts(config, tokens, segment_ids, features, feature_lengths)
    if target_mask.shape != tokens.shape:
        raise ValueError(f"target_mask {tuple(target_mask.shape)} must match tokens {tuple(tokens.shape)}")
    if instruction_mask is not None and instruction_mask.shape != tokens.shape:
        raise ValueError(f"instruction_mask {tuple(instruction_mask.shape)} must match tokens {tuple(tokens.shape)}")
    return _attention_mass(
        config,
        params,
        tokens,
        segment_ids,
        features,
        feature_lengths,
        jnp.asarray(target_mask, jnp.float32),
        instruction_mask,
        lora,
    )


def key_categories(config: SpeechLLMConfig, tokens, segment_ids, target_mask, instruction_mask=None) -> jax.Array:
    """f32[B, L, 3] one-hot category of every key position (padding: *other*, it gets no weight)."""
    real = segment_ids != 0
    audio = real & _inline_audio(config, tokens)
    if instruction_mask is None:
        positions = jnp.arange(tokens.shape[1])[None, :]
        first_target = jnp.min(jnp.where(target_mask > 0, positions, tokens.shape[1]), axis=1, keepdims=True)
        instruction_mask = positions < first_target
    instruction = real & instruction_mask.astype(bool) & ~audio
    other = ~(instruction | audio)
    return jnp.stack([instruction, audio, other], axis=-1).astype(jnp.float32)


@functools.partial(jax.jit, static_argnames=("config", "lora"))
def _attention_mass(
    config, params, tokens, segment_ids, features, feature_lengths, target_mask, instruction_mask, lora
):
    # Unrolled layers sow one weight array each; only the LLM's are read, so XLA drops the encoder's.
    config, params = decoding_params(config, params, lora)
    config = config.replace(llm=config.llm.replace(remat_policy="none"))
    tokens = neutral_padding(config, tokens, segment_ids)
    _, state = SpeechLLM(config).apply(
        params, tokens, features, feature_lengths, segment_ids=segment_ids, mutable=[DIAGNOSTICS]
    )
    layers = state[DIAGNOSTICS]["llm"]
    weights = [layers[f"layers_{i}"]["self_attn"]["attention_weights"][0] for i in range(config.llm.num_layers)]
    categories = key_categories(config, tokens, segment_ids, target_mask, instruction_mask)
    queries = jnp.pad(target_mask[:, 1:], ((0, 0), (0, 1)))  # position t predicts token t + 1
    # [layers, B, H, T, S] -> mean over heads -> [B, layers, T, 3]
    per_query = jnp.einsum("lbhts,bsc->blhtc", jnp.stack(weights), categories).mean(axis=2)
    per_example = jnp.einsum("bltc,bt->blc", per_query, queries) / jnp.maximum(queries.sum(axis=1), 1)[:, None, None]
    has_queries = (queries.sum(axis=1) > 0).astype(jnp.float32)
    batch_mean = jnp.einsum("blc,b->lc", per_example, has_queries) / jnp.maximum(has_queries.sum(), 1)
    result = {name: batch_mean[:, k] for k, name in enumerate(MASS_CATEGORIES)}
    result["per_example"] = per_example
    if config.fusion != "decoder_only":
        blocks = params["params"]["xattn"]
        result["xattn_gate"] = jnp.stack(
            [jnp.tanh(blocks[f"blocks_{j}"]["attn_gate"]) for j in range(config.xattn.num_blocks)]
        )
    return result


# --- (c) prompt-following probe ------------------------------------------------------------------

Scorer = Callable[[str, str], float]


def word_error_rate(output: str, reference: str) -> float:
    """WER of the output against the reference transcript (English normalisation); lower is better."""
    return wer([reference], [output]).rate


def uppercase_fraction(output: str, reference: str) -> float:
    """Fraction of the output's letters that are upper-case (0 without letters)."""
    letters = [c for c in output if c.isalpha()]
    return sum(c.isupper() for c in letters) / len(letters) if letters else 0.0


def starts_with_yes_or_no(output: str, reference: str) -> float:
    """1 when the normalised output's first word is "yes" or "no", else 0."""
    words = get_normalizer("basic")(output).split()
    return float(bool(words) and words[0] in ("yes", "no"))


@dataclasses.dataclass(frozen=True)
class ProbeSpec:
    """One instruction: ``template`` is the user turn with an ``{audio}`` slot; ``scorer(output,
    reference transcript) -> float`` says how well an output follows it."""

    name: str
    template: str
    scorer: Scorer
    higher_is_better: bool = True


DEFAULT_PROBES: tuple[ProbeSpec, ...] = (
    ProbeSpec("transcribe", "{audio}\nTranscribe the audio.", word_error_rate, higher_is_better=False),
    ProbeSpec("capitals", "{audio}\nRepeat what is said, in capital letters only.", uppercase_fraction),
    ProbeSpec("yes_no", "{audio}\nAnswer yes or no: does the speaker mention a number?", starts_with_yes_or_no),
)


def probe_prompts(
    config: SpeechLLMConfig,
    tokenizer: Tokenizer,
    probes: Sequence[ProbeSpec],
    feature_lengths: Sequence[int],
    *,
    system: str | None = None,
    chat: bool = True,
) -> list[list[int]]:
    """Inference prompts, probe-major: row p * N + i is probe p on clip i (N = len(feature_lengths))."""
    names = [spec.name for spec in probes]
    if len(set(names)) != len(names):
        raise ValueError(f"probe names must be unique, got {names}")
    prompts = []
    for spec in probes:
        for frames in feature_lengths:
            example = encode_example(
                tokenizer,
                instruction=spec.name,
                prompts={spec.name: spec.template},
                audio_token_counts=[config.audio_token_count(int(frames))],
                placeholder_id=config.placeholder_id,
                system=system,
                chat=chat,
            )
            prompts.append(example.tokens.tolist())
    return prompts


def probe_batches(prompts: list[list[int]], features: np.ndarray, feature_lengths: np.ndarray, batch_size: int):
    """Yields (rows, tokens, segment_ids, features f32[b, 1, T, F], feature_lengths i32[b, 1]) with one
    static shape: prompts left-padded to the longest, the last batch topped up with copies of row 0."""
    clips = len(feature_lengths)
    tokens, segment_ids = pad_prompts(prompts, side="left")
    for start in range(0, len(prompts), batch_size):
        rows = list(range(start, min(start + batch_size, len(prompts))))
        index = np.asarray(rows + [0] * (batch_size - len(rows)))
        clip = index % clips
        yield (
            rows,
            tokens[index],
            segment_ids[index],
            jnp.asarray(features[clip][:, None]),
            jnp.asarray(feature_lengths[clip][:, None], jnp.int32),
        )


def prompt_following_probe(
    config: SpeechLLMConfig,
    params: dict,
    tokenizer: Tokenizer,
    features: np.ndarray,
    feature_lengths: np.ndarray,
    references: Sequence[str],
    *,
    probes: Sequence[ProbeSpec] = DEFAULT_PROBES,
    gen: GenerationConfig | None = None,
    batch_size: int = 16,
    system: str | None = None,
    chat: bool = True,
    lora: LoraConfig | None = None,
) -> dict[str, Any]:
    """Generates an answer for every (probe, clip) and scores it with the probe's scorer.

    features f32[N, T, F], feature_lengths i32[N], references: N transcripts. ``gen`` defaults to
    greedy, 32 new tokens, the tokenizer's end tokens. Returns a report:
      * ``scores``: {probe name: mean score};
      * ``probes``: {name: {template, higher_is_better, outputs, scores, mean}};
      * ``instruction_sensitivity``: fraction of clips whose normalised outputs are not all the same
        across probes (a dormant LLM gives one answer whatever it is asked: 0); None for one probe.
    """
    features, feature_lengths = np.asarray(features, np.float32), np.asarray(feature_lengths)
    if features.ndim != 3 or feature_lengths.shape != features.shape[:1]:
        raise ValueError(
            f"features {features.shape} must be [N, T, F] with feature_lengths [N], got {feature_lengths.shape}"
        )
    if len(references) != len(features):
        raise ValueError(f"{len(references)} references for {len(features)} clips: expected one per clip")
    if not probes:
        raise ValueError("no probes given")
    pad_id = tokenizer.pad_id if tokenizer.pad_id is not None else (tokenizer.eos_ids or (0,))[0]
    gen = gen or GenerationConfig(max_new_tokens=32, eos_ids=tuple(tokenizer.eos_ids), pad_id=pad_id)
    prompts = probe_prompts(config, tokenizer, probes, feature_lengths.tolist(), system=system, chat=chat)
    outputs: list[str] = [""] * len(prompts)
    for rows, tokens, segment_ids, clip_features, clip_lengths in probe_batches(
        prompts, features, feature_lengths, min(batch_size, len(prompts))
    ):
        out = generate_from_audio(config, params, tokens, segment_ids, clip_features, clip_lengths, gen, lora=lora)
        generated, lengths = np.asarray(out.tokens), np.asarray(out.lengths)
        for k, row in enumerate(rows):
            outputs[row] = tokenizer.decode(generated[k, : lengths[k]].tolist(), skip_special_tokens=True)
    return probe_report(probes, outputs, references)


def probe_report(probes: Sequence[ProbeSpec], outputs: Sequence[str], references: Sequence[str]) -> dict[str, Any]:
    """Scores probe-major ``outputs`` (see ``probe_prompts``) against ``references``."""
    clips = len(references)
    report: dict[str, Any] = {"scores": {}, "probes": {}}
    for p, spec in enumerate(probes):
        texts = list(outputs[p * clips : (p + 1) * clips])
        scores = [float(spec.scorer(text, ref)) for text, ref in zip(texts, references)]
        mean = float(np.mean(scores))
        report["scores"][spec.name] = mean
        report["probes"][spec.name] = {
            "template": spec.template,
            "higher_is_better": spec.higher_is_better,
            "outputs": texts,
            "scores": scores,
            "mean": mean,
        }
    normalize = get_normalizer("basic")
    differs = [len({normalize(outputs[p * clips + i]) for p in range(len(probes))}) > 1 for i in range(clips)]
    report["instruction_sensitivity"] = float(np.mean(differs)) if len(probes) > 1 else None
    return report
