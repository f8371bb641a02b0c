"""generate_from_audio: KV-cached search == a loop of full forwards; padding and batching change nothing.

Parameters are random (gates open), shared by the three fusions: cross_attention and hybrid have the
same tree; decoder_only drops ``xattn`` and stacks the LLM layers (so decoding unrolls them).
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxspeech.decoding.generate import GenerationConfig
from jaxspeech.decoding.speech import decoded_rows, generate_from_audio
from jaxspeech.layers.lora import LoraConfig, lora
from jaxspeech.llm.layout import stack_layers
from jaxspeech.models.speech_llm import SpeechLLM
from jaxspeech.testing.random_params import random_params
from jaxspeech.testing.speech_llm import PLACEHOLDER, make_batch, tiny_config

FUSIONS = ["decoder_only", "cross_attention", "hybrid"]
# Two clips in row 0, one in row 1; prompts of different lengths.
ROWS = [([40, 17], [1, 5, 6], [7, 8, 9]), ([23], [1, 5], [11, 12, 13, 14, 15])]
FRAMES = 48
NEW = 6
GREEDY = GenerationConfig(max_new_tokens=NEW, eos_ids=(), pad_id=0)
LORA = LoraConfig(rank=2, alpha=4.0, targets=r"llm/.*(q_proj|v_proj|down_proj)")


@functools.lru_cache(maxsize=None)
def setup(fusion: str):
    """(config, params, right-padded batch) for ``fusion``."""
    hybrid = tiny_config("hybrid")
    params = random_params(SpeechLLM(hybrid), make_batch(hybrid, ROWS, FRAMES))
    config = tiny_config(fusion)
    if fusion == "decoder_only":
        inner = {k: v for k, v in params["params"].items() if k != "xattn"}
        inner["llm"] = stack_layers({"params": inner["llm"]}, config.llm.num_layers)["params"]
        params = {"params": inner}
    return config, params, make_batch(config, ROWS, FRAMES)


def left_padded(batch: dict) -> dict:
    """The same prompts with their padding moved to the left."""
    shift = batch["tokens"].shape[1] - np.asarray(batch["segment_ids"]).sum(axis=1)
    roll = lambda x: jnp.stack([jnp.roll(r, int(s)) for r, s in zip(x, shift)])
    return dict(batch, tokens=roll(batch["tokens"]), segment_ids=roll(batch["segment_ids"]))


@functools.lru_cache(maxsize=None)
def full_forward(config, adapters=None):
    """Jitted ``SpeechLLM.__call__`` (under the LoRA interceptor when ``adapters`` is given)."""
    model = SpeechLLM(config)

    def forward(params, tokens, segment_ids, features, feature_lengths):
        with lora(adapters):
            return model.apply(params, tokens, features, feature_lengths, segment_ids=segment_ids)

    return jax.jit(forward)


def log_probs(config, logits):
    logits = np.asarray(logits, np.float64)
    if config.fusion != "cross_attention":
        logits[..., PLACEHOLDER] = -np.inf  # generation never emits the placeholder
    logits = logits - logits.max(axis=-1, keepdims=True)
    return logits - np.log(np.exp(logits).sum(axis=-1, keepdims=True))


def reference_greedy(config, params, batch, b, adapters=None):
    """Row ``b`` alone: re-run the full forward on the growing sequence, append the argmax each time.

    -> (tokens [NEW], summed log-probs). The sequence lives in a buffer of prompt + NEW slots whose
    unused tail is padding (segment 0), so one compiled forward serves every step and row."""
    forward = full_forward(config, adapters)
    length = int(np.asarray(batch["segment_ids"][b]).sum())
    tokens = np.zeros((1, batch["tokens"].shape[1] + NEW), np.int32)
    segments = np.zeros_like(tokens)
    tokens[0, :length] = np.asarray(batch["tokens"][b, :length])
    segments[0, :length] = 1
    generated, score = [], 0.0
    for step in range(NEW):
        logits = forward(params, tokens, segments, batch["features"][b : b + 1], batch["feature_lengths"][b : b + 1])
        scores = log_probs(config, logits[0, length + step - 1])
        token = int(np.argmax(scores))
        generated.append(token)
        score += scores[token]
        tokens[0, length + step], segments[0, length + step] = token, 1
    return generated, score


def teacher_forced_score(config, params, batch, b, continuation):
    """Summed log-probs of ``continuation`` after row ``b``'s prompt, from one full forward."""
    length = int(np.asarray(batch["segment_ids"][b]).sum())
    tokens = np.zeros((1, batch["tokens"].shape[1] + NEW), np.int32)
    tokens[0, :length] = np.asarray(batch["tokens"][b, :length])
    tokens[0, length : length + NEW] = continuation
    segments = (np.arange(tokens.shape[1]) < length + NEW).astype(np.int32)[None]
    clip = slice(b, b + 1)
    logits = full_forward(config)(params, tokens, segments, batch["features"][clip], batch["feature_lengths"][clip])
    scores = log_probs(config, logits[0, length - 1 : length + NEW - 1])
    return float(scores[np.arange(NEW), continuation].sum())


def generate(config, params, batch, gen, **kwargs):
    return generate_from_audio(
        config,
        params,
        batch["tokens"],
        batch["segment_ids"],
        batch["features"],
        batch["feature_lengths"],
        gen,
        **kwargs,
    )


@pytest.mark.parametrize(
    "fusion,adapters",
    [("decoder_only", LORA), ("cross_attention", None), ("hybrid", None)],
    ids=["decoder_only-lora", "cross_attention", "hybrid"],
)
def test_greedy_equals_full_forward_loop_for_each_row_alone(fusion, adapters):
    """Right- and left-padded batches against each row alone. decoder_only runs with LoRA adapters
    (merged for decoding, applied by the interceptor in the reference) on scanned params."""
    config, params, batch = setup(fusion)
    if adapters is not None:
        params = random_params(SpeechLLM(config), batch, seed=1, adapters=adapters)
    right = generate(config, params, batch, GREEDY, lora=adapters)
    left = generate(config, params, left_padded(batch), GREEDY, lora=adapters)
    for b in range(len(ROWS)):
        expected, score = reference_greedy(config, params, batch, b, adapters)
        assert np.asarray(right.tokens[b]).tolist() == expected
        assert np.asarray(left.tokens[b]).tolist() == expected
        np.testing.assert_allclose([float(right.scores[b]), float(left.scores[b])], [score, score], atol=1e-4)
    assert (np.asarray(right.lengths) == NEW).all()
    assert len(set(np.asarray(right.tokens).ravel().tolist())) > 2  # random weights give varied tokens
    if adapters is not None:
        with pytest.raises(ValueError, match="params hold LoRA adapters .*lora_a.* but no LoraConfig"):
            generate(config, params, batch, GREEDY)


def test_beam_search_scores_match_the_full_forward():
    config, params, batch = setup("hybrid")
    greedy = generate(config, params, batch, GREEDY)
    one_beam = generate(
        config, params, batch, GenerationConfig(max_new_tokens=NEW, method="beam", num_beams=1, length_penalty=0.0)
    )
    np.testing.assert_array_equal(np.asarray(one_beam.tokens), np.asarray(greedy.tokens))
    np.testing.assert_allclose(np.asarray(one_beam.scores), np.asarray(greedy.scores), atol=1e-5)

    # Three beams reorder the cache rows (the memory is expanded once); with no end token and no
    # length penalty the winner's score is the log-probability of its tokens under the full forward.
    beams = generate(
        config, params, batch, GenerationConfig(max_new_tokens=NEW, method="beam", num_beams=3, length_penalty=0.0)
    )
    for b in range(len(ROWS)):
        tokens = np.asarray(beams.tokens[b])
        assert PLACEHOLDER not in tokens.tolist()
        np.testing.assert_allclose(
            float(beams.scores[b]), teacher_forced_score(config, params, batch, b, tokens), atol=1e-4
        )


def test_decoded_rows_drop_padding_to_a_power_of_two_when_that_halves_the_batch():
    active = lambda *rows: np.array(rows, bool)
    assert decoded_rows(active(1, 1, 1)) is None  # nothing to drop
    assert decoded_rows(active(1, 0, 0, 1)).tolist() == [0, 3]
    assert decoded_rows(active(1, 0, 1)) is None  # 2 of 3 rows: not worth a program of its own
    assert decoded_rows(active(0, 1, 0, 1, 1, 0, 0, 0)).tolist() == [1, 3, 4, 0]  # 3 real rows -> 4
    assert decoded_rows(active(0, 1, 0, 1, 1, 0, 0, 1)).tolist() == [1, 3, 4, 7]  # 4 of 8: half
    assert decoded_rows(active(1, 1, 1, 1, 1, 0, 0, 0)) is None  # 5 real rows -> 8: all of them
    assert decoded_rows(active(0, 0, 0)).tolist() == [0]


@pytest.mark.parametrize("method", ["greedy", "beam"])
def test_padding_rows_are_dropped_before_decoding_and_come_back_empty(method):
    """A batch whose rows 1 and 2 are padding (active False) decodes rows 0 and 3 as a batch of two:
    they get what decoding them without the padding rows gives; rows 1 and 2 come back empty."""
    config, params, _ = setup("decoder_only")
    batch = make_batch(config, [ROWS[0], ROWS[1], ROWS[1], ROWS[0]], FRAMES)
    gen = GREEDY if method == "greedy" else GenerationConfig(max_new_tokens=NEW, method="beam", num_beams=3)
    padded = generate(config, params, batch, gen, active=np.array([True, False, False, True]))
    alone = generate(config, params, {k: v[np.array([0, 3])] for k, v in batch.items()}, gen)
    np.testing.assert_array_equal(np.asarray(padded.tokens)[[0, 3]], np.asarray(alone.tokens))
    np.testing.assert_array_equal(np.asarray(padded.lengths), [NEW, 0, 0, NEW])
    np.testing.assert_allclose(np.asarray(padded.scores)[[0, 3]], np.asarray(alone.scores), atol=1e-5)
    for row in (1, 2):
        assert np.asarray(padded.tokens)[row].tolist() == [GREEDY.pad_id] * NEW and float(padded.scores[row]) == 0.0


def test_bad_prompts_raise_clear_errors():
    config, params, batch = setup("decoder_only")
    missing = dict(batch, tokens=batch["tokens"].at[0, 4].set(20))  # one placeholder too few in row 0
    with pytest.raises(ValueError, match="row 0 has .* audio placeholder tokens .* but its clips give"):
        generate(config, params, missing, GREEDY)
    empty = dict(batch, segment_ids=batch["segment_ids"].at[1].set(0))
    with pytest.raises(ValueError, match="prompt row 1 has no tokens"):
        generate(config, params, empty, GREEDY)
    with pytest.raises(ValueError, match=r"feature_lengths\[0, 0\] = 60 exceeds the 48 feature frames"):
        generate(config, params, dict(batch, feature_lengths=batch["feature_lengths"].at[0, 0].set(60)), GREEDY)
    with pytest.raises(ValueError, match="tokens .* and segment_ids .* must both be"):
        generate(config, params, dict(batch, segment_ids=batch["segment_ids"][:, :-1]), GREEDY)


@pytest.mark.parametrize("ctc_embed", [False, True])
def test_ctc_aligned_positions_decode_equals_the_full_forward(ctc_embed):
    """audio_positions 'ctc': the rotary positions come from the CTC head's greedy path, in the full
    forward and in the prefill alike, and the cache carries them on for the generated tokens (with
    ``ctc_embed``, the audio tokens also carry their CTC posteriors' embeddings, in both)."""
    config = tiny_config("decoder_only", ctc_vocab_size=32, audio_positions="ctc", ctc_embed=ctc_embed)
    rows = [([40], [1, 5, 6], [7, 8, 9]), ([23], [1, 5], [11, 12, 13, 14, 15])]
    batch = make_batch(config, rows, FRAMES)
    params = random_params(SpeechLLM(config), batch)
    positions = SpeechLLM(config).apply(
        params,
        batch["tokens"],
        batch["features"],
        batch["feature_lengths"],
        segment_ids=batch["segment_ids"],
        method=lambda m, t, f, fl, segment_ids: m._aligned_positions(t, None, segment_ids, m._encode(f, fl, False)[3]),
    )
    sequential = np.cumsum(np.asarray(batch["segment_ids"]), axis=1) - 1
    assert (np.asarray(positions) != np.maximum(sequential, 0)).any()  # the CTC path moved them
    right = generate(config, params, batch, GREEDY)
    left = generate(config, params, left_padded(batch), GREEDY)
    for b in range(len(rows)):
        expected, score = reference_greedy(config, params, batch, b)
        assert np.asarray(right.tokens[b]).tolist() == expected
        assert np.asarray(left.tokens[b]).tolist() == expected
        np.testing.assert_allclose([float(right.scores[b]), float(left.scores[b])], [score, score], atol=1e-4)
    assert len(set(np.asarray(right.tokens).ravel().tolist())) > 2
