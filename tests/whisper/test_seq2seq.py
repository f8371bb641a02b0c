"""Whisper encoder-decoder: HF parity (logits, greedy generate), KV cache, batching, beam search."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import linen as nn
from flax import traverse_util
from transformers import WhisperForConditionalGeneration

from jaxspeech.convert.hf_whisper import load_hf_whisper
from jaxspeech.layers import axes
from jaxspeech.layers.embeddings import sinusoids
from jaxspeech.decoding.whisper import make_generate_fn, suppression_processor
from jaxspeech.models.whisper_seq2seq import WhisperGenerationConfig, WhisperSeq2Seq, init_cache, unrolled
from jaxspeech.testing.whisper import (
    EOS,
    EN,
    MICRO_FRAMES,
    NO_TIMESTAMPS,
    PAD,
    SOT,
    TRANSCRIBE,
    base_sized_hf_config,
    micro_hf_config,
    padded_features,
    random_audio,
    tiny_sized_hf_config,
)

PROMPT = [SOT, EN, TRANSCRIBE, NO_TIMESTAMPS]


def _tokens(batch: int, length: int, seed: int = 0) -> jnp.ndarray:
    return jnp.asarray(np.random.RandomState(seed).randint(0, 92, (batch, length)), jnp.int32)


def _features(batch: int, frames: int, seed: int = 0) -> np.ndarray:
    return np.random.RandomState(seed).randn(batch, frames, 80).astype(np.float32)


@pytest.mark.parity
def test_micro_logits_and_decoder_match_hf(tmp_path):
    torch.manual_seed(0)
    hf = WhisperForConditionalGeneration(micro_hf_config(init_std=0.02)).eval()  # HF's default init
    hf.save_pretrained(str(tmp_path))
    config, params = load_hf_whisper(str(tmp_path))
    model = WhisperSeq2Seq(config)
    features, tokens = _features(2, MICRO_FRAMES), _tokens(2, 9)
    logits = jax.jit(lambda p: model.apply(p, jnp.asarray(features), None, tokens))(params)
    with torch.no_grad():
        ref = hf(
            input_features=torch.tensor(features).transpose(1, 2), decoder_input_ids=torch.tensor(np.asarray(tokens))
        )
    assert logits.dtype == jnp.float32 and logits.shape == (2, 9, 100)
    full_diff = float(np.abs(np.asarray(logits) - ref.logits.numpy()).max())
    # The decoder alone, fed HF's encoder states.
    encoder_states = ref.encoder_last_hidden_state.numpy()
    decode = lambda p: model.apply(p, tokens, jnp.asarray(encoder_states), jnp.array([50, 50]), method="decode")
    decoded = jax.jit(decode)(params)
    decoder_diff = float(np.abs(np.asarray(decoded) - ref.logits.numpy()).max())
    print(f"micro: logits max|diff| {full_diff:.3g}, decoder-only logits max|diff| {decoder_diff:.3g}")
    assert full_diff <= 1e-4 and decoder_diff <= 1e-4, (full_diff, decoder_diff)


def _sized_parity(tmp_path, hf_config, tokens_len: int = 6) -> tuple[float, float]:
    torch.manual_seed(0)
    hf = WhisperForConditionalGeneration(hf_config).eval()
    # Our encoder positions are the exact sinusoids, not a weight; give HF the same table (its own,
    # computed by torch in float32, differs by up to ~1e-4 at 1500 positions: see test_convert).
    table = sinusoids(hf_config.max_source_positions, hf_config.d_model)
    with torch.no_grad():
        hf.model.encoder.embed_positions.weight.copy_(torch.from_numpy(table))
    hf.save_pretrained(str(tmp_path))
    config, params = load_hf_whisper(str(tmp_path))
    model = WhisperSeq2Seq(config)
    features, tokens = _features(1, 3000), _tokens(1, tokens_len)
    encoded, logits = jax.jit(
        lambda p: (
            model.apply(p, jnp.asarray(features), method="encode").hidden,
            model.apply(p, jnp.asarray(features), None, tokens),
        )
    )(params)
    with torch.no_grad():
        ref = hf(
            input_features=torch.tensor(features).transpose(1, 2), decoder_input_ids=torch.tensor(np.asarray(tokens))
        )
    encoder_diff = float(np.abs(np.asarray(encoded) - ref.encoder_last_hidden_state.numpy()).max())
    logits_diff = float(np.abs(np.asarray(logits) - ref.logits.numpy()).max())
    print(f"{hf_config.d_model=}: encoder max|diff| {encoder_diff:.3g}, logits max|diff| {logits_diff:.3g}")
    return encoder_diff, logits_diff


@pytest.mark.parity
def test_tiny_sized_model_matches_hf(tmp_path):
    encoder_diff, logits_diff = _sized_parity(tmp_path, tiny_sized_hf_config())
    assert encoder_diff <= 1e-4 and logits_diff <= 1e-4, (encoder_diff, logits_diff)


@pytest.mark.parity
@pytest.mark.slow
def test_base_sized_model_matches_hf(tmp_path):
    encoder_diff, logits_diff = _sized_parity(tmp_path, base_sized_hf_config())
    assert encoder_diff <= 1e-4 and logits_diff <= 1e-4, (encoder_diff, logits_diff)


@pytest.mark.parametrize("scan", [False, True])
def test_kv_cached_decoding_equals_full_forward(micro, scan):
    """Prefill + steps (each utterance's cross-attention K/V read by two hypothesis rows, as beams
    do) give the teacher-forced logits; scanned params decode after ``unrolled``."""
    config, params = load_hf_whisper(micro.directory, scan_layers=scan)
    full = jax.jit(lambda p, x, n, t: WhisperSeq2Seq(config).apply(p, x, n, t))
    config, params = unrolled(config, params)
    model = WhisperSeq2Seq(config)
    features, lengths, tokens = (
        jnp.asarray(_features(2, MICRO_FRAMES, seed=1)),
        jnp.array([100, 57]),
        _tokens(2, 8, seed=1),
    )
    rows = jnp.repeat(tokens, 2, axis=0).at[1::2, 4:].set(tokens[::-1, 4:])  # per utterance: its tokens, the other's

    @jax.jit
    def cached(p):
        encoded = model.apply(p, features, lengths, method="encode")
        cache = model.apply(p, 2, 10, method="init_cache")
        prompt_logits, cache, cross = model.apply(
            p, encoded.hidden, encoded.lengths, tokens[:, :4], cache, method="prefill"
        )
        cache = jax.tree.map(lambda a: jnp.repeat(a, 2, axis=0) if a.ndim else a, cache)
        steps = []
        for i in range(4, 8):
            step_logits, cache = model.apply(p, rows[:, i], cache, cross, method="extend")
            steps.append(step_logits[:, None])
        return prompt_logits, jnp.concatenate(steps, axis=1), cache

    prompt_logits, step_logits, cache = cached(params)
    reference = full(params, features, lengths, tokens)
    swapped = full(params, features, lengths, tokens.at[:, 4:].set(tokens[::-1, 4:]))
    # Relative to the logits' scale: the micro model's large weights (std 0.5) amplify float32 rounding.
    atol = 1e-5 * float(np.abs(reference).max())
    np.testing.assert_allclose(prompt_logits, reference[:, :4], atol=atol)
    np.testing.assert_allclose(step_logits[0::2], reference[:, 4:], atol=atol)
    np.testing.assert_allclose(step_logits[1::2], swapped[:, 4:], atol=atol)
    assert int(cache.index) == 8 and len(cache.k) == 2 and cache.k[0].shape == (4, 4, 10, 16)
    assert not np.any(np.asarray(cache.k[0][:, :, 8:]))  # unused slots stay empty


def test_padded_batch_equals_each_example_alone(micro):
    """Encoder lengths mask the encoder and the cross-attention: padding never changes logits."""
    model = WhisperSeq2Seq(micro.config)
    run = jax.jit(lambda p, x, n, t: model.apply(p, x, n, t))
    features, tokens = jnp.asarray(_features(3, MICRO_FRAMES, seed=2)), _tokens(3, 6, seed=2)
    lengths = [100, 63, 20]
    batched = run(micro.params, features, jnp.asarray(lengths), tokens)
    for row, length in enumerate(lengths):
        alone = run(micro.params, features[row : row + 1, :length], jnp.asarray([length]), tokens[row : row + 1])
        # A leak through padding moves logits by far more than 1e-3; float32 reordering between the
        # batched and the single-row matmuls reaches ~2e-4 on logits of size ~3 on some CPUs.
        np.testing.assert_allclose(batched[row], alone[0], atol=2e-4, rtol=2e-4)


def _hf_greedy(micro, features: np.ndarray, max_new_tokens: int) -> list[list[int]]:
    with torch.no_grad():
        out = micro.hf.generate(
            torch.tensor(features).transpose(1, 2), language="en", task="transcribe", max_new_tokens=max_new_tokens
        )
    # HF returns the generated tokens without the prompt and drops the end token; padding follows.
    return [[t for t in row if t != PAD] for row in out.tolist()]


def _ours(output, row: int) -> list[int]:
    tokens = np.asarray(output.tokens[row, : output.lengths[row]]).tolist()
    return tokens[:-1] if tokens and tokens[-1] == EOS else tokens


def _processed_logits(micro, features: np.ndarray, generated: list[list[int]]) -> list[np.ndarray]:
    """Teacher-forced logits (after suppression) at each generated position: one f32[len, V] per row."""
    model = WhisperSeq2Seq(micro.config)
    processor = suppression_processor(micro.generation, 100)
    width = len(PROMPT) + max(len(t) for t in generated)
    sequences = jnp.asarray([PROMPT + t + [PAD] * (width - len(PROMPT) - len(t)) for t in generated], jnp.int32)
    logits = jax.jit(lambda p, x, s: model.apply(p, x, None, s))(micro.params, jnp.asarray(features), sequences)
    rows = []
    for row, tokens in enumerate(generated):
        steps = [
            processor(logits[row, len(PROMPT) - 1 + step][None], jnp.int32(step))[0] for step in range(len(tokens))
        ]
        rows.append(np.asarray(steps))
    return rows


@pytest.mark.parity
def test_greedy_tokens_match_hf_generate_and_batch_equals_alone(micro):
    audios = [random_audio(n, seed) for seed, n in enumerate((16000, 9000, 4000))]
    features = padded_features(audios)
    max_new = 12
    reference = _hf_greedy(micro, features, max_new)
    generate = make_generate_fn(micro.config, micro.generation, max_new_tokens=max_new)
    full_lengths = jnp.full((3,), MICRO_FRAMES, jnp.int32)
    batched = generate(micro.params, jnp.asarray(features), full_lengths)
    ours = [_ours(batched, row) for row in range(3)]
    assert ours == reference
    assert len({len(t) for t in ours}) > 1 and any(int(n) < max_new for n in batched.lengths)  # some rows end early
    top2 = [np.sort(row, axis=-1)[:, -2:] for row in _processed_logits(micro, features, ours)]
    assert min(float(np.min(t[:, 1] - t[:, 0])) for t in top2) > 1e-3  # no near-tie that float noise could flip
    for row in range(3):
        alone = generate(micro.params, jnp.asarray(features[row : row + 1]), full_lengths[:1])
        assert _ours(alone, 0) == ours[row]


@pytest.mark.parity
def test_beam_search_tokens_match_hf_beam_search(micro):
    """Beam 3 over a batch (each utterance's beams share its cross-attention K/V, and a padding row
    rides along inactive) gives transformers' beam-search transcripts."""
    audios = [random_audio(n, seed) for seed, n in enumerate((16000, 9000, 4000), start=5)]
    features = padded_features(audios)
    with torch.no_grad():
        hf = micro.hf.generate(
            torch.tensor(features).transpose(1, 2),
            language="en",
            task="transcribe",
            max_new_tokens=10,
            num_beams=3,
            do_sample=False,
        )
    reference = [[t for t in row if t not in (PAD, EOS)] for row in hf.tolist()]
    beam = make_generate_fn(micro.config, micro.generation, max_new_tokens=10, num_beams=3)
    padded = jnp.asarray(np.concatenate([features, features[:1]]))
    out = beam(micro.params, padded, jnp.full((4,), MICRO_FRAMES, jnp.int32), jnp.arange(4) < 3)
    assert [_ours(out, row) for row in range(3)] == reference
    assert int(out.lengths[3]) == 0 and len({len(t) for t in reference}) > 1


def test_beam_search_scores_are_teacher_forced_log_probs(micro):
    features = padded_features([random_audio(n, seed) for seed, n in enumerate((16000, 7000))])
    beam = make_generate_fn(micro.config, micro.generation, max_new_tokens=8, num_beams=3)
    out = beam(micro.params, jnp.asarray(features), jnp.full((2,), MICRO_FRAMES, jnp.int32))
    generated = [np.asarray(out.tokens[row, : out.lengths[row]]).tolist() for row in range(2)]
    for tokens, logits, score in zip(generated, _processed_logits(micro, features, generated), out.scores):
        log_probs = jax.nn.log_softmax(jnp.asarray(logits), axis=-1)
        total = float(sum(log_probs[step, token] for step, token in enumerate(tokens)))
        np.testing.assert_allclose(float(score), total / len(tokens), rtol=1e-4)


def test_suppression_processor():
    generation = WhisperGenerationConfig(
        decoder_start_token_id=5,
        eos_token_id=7,
        pad_token_id=7,
        suppress_tokens=(1, 2, 50),
        begin_suppress_tokens=(3, 7),
    )
    process = suppression_processor(generation, vocab_size=10)
    logits = jnp.zeros((2, 10))
    first, later = process(logits, jnp.int32(0)), process(logits, jnp.int32(1))
    assert np.isneginf(first[:, [1, 2, 3, 7]]).all() and np.isfinite(first[:, [0, 4, 5, 6, 8, 9]]).all()
    assert np.isneginf(later[:, [1, 2]]).all() and np.isfinite(later[:, [0, 3, 4, 5, 6, 7, 8, 9]]).all()


def test_prompts_and_bad_generation_arguments(micro):
    assert micro.generation.prompt("en") == tuple(PROMPT)
    assert micro.generation.prompt("<|de|>", "translate", timestamps=True) == (SOT, 96, 97)
    english_only = WhisperGenerationConfig(
        decoder_start_token_id=1, eos_token_id=0, pad_token_id=0, no_timestamps_token_id=2
    )
    assert english_only.prompt("en") == (1, 2)
    with pytest.raises(ValueError, match="unknown language 'fr'"):
        micro.generation.prompt("fr")
    with pytest.raises(ValueError, match="exceeds the decoder's 40 positions"):
        init_cache(micro.config, 1, 41)


def test_full_model_remat_equals_no_remat_and_parameters_have_logical_axes(micro):
    config, params = load_hf_whisper(micro.directory, scan_layers=True)
    features, lengths, tokens = jnp.asarray(_features(2, 20, seed=4)), jnp.array([20, 9]), _tokens(2, 5, seed=4)

    def value_and_grad(cfg):
        loss = lambda p: jnp.mean(jax.nn.log_softmax(WhisperSeq2Seq(cfg).apply(p, features, lengths, tokens))[..., 7])
        value, grads = jax.jit(jax.value_and_grad(loss))(params)
        return value, traverse_util.flatten_dict(grads["params"], sep="/")

    value, grads = value_and_grad(config)
    remat_value, remat_grads = value_and_grad(config.with_options(scan_layers=True, remat_policy="full"))
    np.testing.assert_allclose(remat_value, value, rtol=1e-6)
    for path, g in grads.items():
        np.testing.assert_allclose(remat_grads[path], g, atol=1e-5 * max(1.0, float(np.abs(g).max())), err_msg=path)

    names = {v for k, v in vars(axes).items() if k.isupper() and isinstance(v, str)}
    boxed = jax.eval_shape(lambda: WhisperSeq2Seq(config).init(jax.random.key(0), features, lengths, tokens))["params"]
    leaves = jax.tree.leaves(boxed, is_leaf=lambda x: isinstance(x, nn.Partitioned))
    assert len(leaves) == len(grads)
    assert all(isinstance(leaf, nn.Partitioned) and set(leaf.names) <= names for leaf in leaves)
