"""Dormancy diagnostics on tiny random Speech LLMs: RMS ratio, attention mass, prompt-following probe."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxspeech.data.tokenizers import load_tokenizer
from jaxspeech.decoding.generate import GenerationConfig
from jaxspeech.decoding.search import DecodeOutput
from jaxspeech.decoding.speech import decoding_params, generate_from_audio
from jaxspeech.evals import dormancy
from jaxspeech.evals.dormancy import (
    DEFAULT_PROBES,
    ProbeSpec,
    append_generated,
    attention_mass,
    embedding_rms_ratio,
    probe_batches,
    probe_prompts,
    probe_report,
    prompt_following_probe,
    starts_with_yes_or_no,
    uppercase_fraction,
    word_error_rate,
)
from jaxspeech.layers.dense import Dense
from jaxspeech.models.speech_llm import SpeechLLM
from jaxspeech.types import Batch
from jaxspeech.testing.random_params import random_params
from jaxspeech.testing.speech_llm import MELS, PLACEHOLDER, make_batch, tiny_config
from jaxspeech.testing.tokenizer_dirs import write_chatml_dir

ROWS = [([40, 17], [1, 5, 6], [7, 8, 9]), ([23], [1, 5], [11, 12, 13, 14, 15])]
FRAMES = 48


@functools.lru_cache(maxsize=None)
def setup(fusion, norm_match=False):
    config = tiny_config(fusion)
    config = config.replace(connector=config.connector.replace(norm_match=norm_match))
    batch = make_batch(config, ROWS, FRAMES)
    return config, random_params(SpeechLLM(config), batch), batch


def suffix_targets(batch):
    """f32[B, L]: 1 on each row's suffix tokens (the answer part of ROWS)."""
    mask = np.zeros(batch["tokens"].shape, np.float32)
    for b, (_, _, suffix) in enumerate(ROWS):
        end = int(np.asarray(batch["segment_ids"][b]).sum())
        mask[b, end - len(suffix) : end] = 1
    return jnp.asarray(mask)


# --- (a) RMS ratio -------------------------------------------------------------------------------


def test_rms_ratio_equals_hand_computation_and_norm_matching_pins_it_near_one():
    config, params, batch = setup("decoder_only", norm_match=True)
    inner = dict(params["params"])
    # The two parameters the ratio hinges on, at their initial values: the norm-match gain (1) and
    # the token table (normal with the LLM's initializer_range).
    inner["connector"] = {**inner["connector"], "norm_match": {"gain": jnp.ones(())}}
    shape = (config.llm.vocab_size, config.llm.hidden_size)
    table = np.random.default_rng(1).normal(0, config.llm.initializer_range, shape)
    inner["llm"] = {**inner["llm"], "embed_tokens": {"embedding": jnp.asarray(table, jnp.float32)}}
    params = {"params": inner}

    ratio_fn = jax.jit(embedding_rms_ratio, static_argnums=0)
    matched = ratio_fn(config, params, batch)
    plain_config = config.replace(connector=config.connector.replace(norm_match=False))
    plain = ratio_fn(plain_config, params, batch)

    audio = jax.jit(lambda p, f, l: SpeechLLM(plain_config).apply(p, f, l, method=SpeechLLM.encode_audio))(
        params, batch["features"], batch["feature_lengths"]
    )
    tokens, segments = np.asarray(batch["tokens"]), np.asarray(batch["segment_ids"])
    for b, (clip_frames, _, _) in enumerate(ROWS):
        text = table[tokens[b][(segments[b] != 0) & (tokens[b] != PLACEHOLDER)]]
        text_rms = np.sqrt(np.mean(text**2))
        np.testing.assert_allclose(float(plain["text_rms"][b]), text_rms, rtol=1e-5)
        for c in range(audio.lengths.shape[1]):
            n = int(audio.lengths[b, c])
            if c >= len(clip_frames):
                assert n == 0 and float(plain["ratio"][b, c]) == 0.0
                continue
            audio_rms = np.sqrt(np.mean(np.asarray(audio.embeds[b, c, :n]) ** 2))
            np.testing.assert_allclose(float(plain["audio_rms"][b, c]), audio_rms, rtol=1e-5)
            np.testing.assert_allclose(float(plain["ratio"][b, c]), audio_rms / text_rms, rtol=1e-5)
            # Norm matching scales every audio vector to the table's RMS.
            np.testing.assert_allclose(float(matched["audio_rms"][b, c]), np.sqrt(np.mean(table**2)), rtol=1e-4)
    present = np.asarray(plain["ratio"])[np.asarray(audio.lengths) > 0]
    np.testing.assert_allclose(float(plain["mean_ratio"]), present.mean(), rtol=1e-5)
    assert float(plain["mean_ratio"]) > 5  # unmatched projector outputs dwarf the text embeddings
    matched_ratios = np.asarray(matched["ratio"])[np.asarray(audio.lengths) > 0]
    assert np.all(np.abs(matched_ratios - 1) < 0.2), matched_ratios


def test_batch_fields_accepts_a_batch_or_a_dict():
    _, _, batch = setup("decoder_only")
    typed = Batch(
        features=batch["features"],
        feature_lengths=batch["feature_lengths"],
        tokens=batch["tokens"],
        loss_mask=suffix_targets(batch),
        segment_ids=batch["segment_ids"],
        positions=batch["segment_ids"],
        example_ids=np.zeros((2, 2)),
        weights=np.ones(2),
    )
    for source in (typed, batch):
        fields = dormancy._fields(source)
        assert [f.shape for f in fields] == [
            batch[k].shape for k in ("tokens", "segment_ids", "features", "feature_lengths")
        ]
    with pytest.raises(ValueError, match="raw audio"):
        dormancy._fields(dict(batch, features=None))


# --- (b) attention mass -------------------------------------------------------------------------


def dense_attention_mass(config, params, batch, targets):
    """Per-example masses [B, layers, 3] recomputed in numpy from the captured q/k projections."""
    config, params = decoding_params(config, params)
    capture = lambda module, method: isinstance(module, Dense) and module.name in ("q_proj", "k_proj")
    _, state = jax.jit(
        lambda p: SpeechLLM(config).apply(
            p,
            batch["tokens"],
            batch["features"],
            batch["feature_lengths"],
            segment_ids=batch["segment_ids"],
            capture_intermediates=capture,
            mutable=["intermediates"],
        )
    )(params)
    c = config.llm
    head_dim, groups = c.resolved_head_dim, c.num_heads // c.num_kv_heads
    tokens, segments = np.asarray(batch["tokens"]), np.asarray(batch["segment_ids"])
    batch_size, length = tokens.shape
    positions = np.maximum(np.cumsum(segments != 0, axis=1) - 1, 0)
    inv_freq = 1.0 / c.rope.theta ** (np.arange(0, head_dim, 2) / head_dim)
    angles = positions[:, :, None, None] * inv_freq  # [B, L, 1, D/2]

    def rope(x):
        first, second = x[..., : head_dim // 2], x[..., head_dim // 2 :]
        return np.concatenate(
            [first * np.cos(angles) - second * np.sin(angles), second * np.cos(angles) + first * np.sin(angles)],
            axis=-1,
        )

    real = segments != 0
    allowed = real[:, :, None] & real[:, None, :] & np.tril(np.ones((length, length), bool))[None]
    first_target = np.argmax(np.asarray(targets) > 0, axis=1)
    audio = real & (tokens == PLACEHOLDER)
    instruction = real & ~audio & (np.arange(length)[None] < first_target[:, None])
    categories = np.stack([instruction, audio, ~(instruction | audio)], axis=-1).astype(np.float64)
    queries = np.pad(np.asarray(targets)[:, 1:], ((0, 0), (0, 1)))
    masses = []
    for i in range(c.num_layers):
        layer = state["intermediates"]["llm"][f"layers_{i}"]["self_attn"]
        q = rope(np.asarray(layer["q_proj"]["__call__"][0], np.float64).reshape(batch_size, length, c.num_heads, -1))
        k = rope(np.asarray(layer["k_proj"]["__call__"][0], np.float64).reshape(batch_size, length, c.num_kv_heads, -1))
        k = np.repeat(k, groups, axis=2)
        scores = np.einsum("bthd,bshd->bhts", q, k) / np.sqrt(head_dim)
        scores = np.where(allowed[:, None], scores, -1e30)  # padding queries see nothing; they are not queries
        weights = np.exp(scores - scores.max(axis=-1, keepdims=True)) * allowed[:, None]
        weights /= np.maximum(weights.sum(axis=-1, keepdims=True), 1e-30)
        per_query = np.einsum("bhts,bsc->btc", weights, categories) / c.num_heads
        masses.append(np.einsum("btc,bt->bc", per_query, queries) / queries.sum(axis=1)[:, None])
    return np.stack(masses, axis=1)


def test_attention_mass_sums_to_one_and_equals_a_dense_recomputation():
    config, params, batch = setup("hybrid")
    targets = suffix_targets(batch)
    result = attention_mass(config, params, batch, targets)
    per_example = np.asarray(result["per_example"])
    assert per_example.shape == (2, config.llm.num_layers, 3)
    np.testing.assert_allclose(per_example.sum(axis=-1), 1.0, atol=1e-5)
    assert (per_example[..., :2] > 0.01).all()  # both instruction and audio get some attention
    np.testing.assert_allclose(per_example, dense_attention_mass(config, params, batch, targets), atol=1e-5)
    for k, name in enumerate(dormancy.MASS_CATEGORIES):
        np.testing.assert_allclose(np.asarray(result[name]), per_example[..., k].mean(axis=0), atol=1e-6)
    gates = [np.tanh(float(params["params"]["xattn"][f"blocks_{j}"]["attn_gate"])) for j in range(2)]
    np.testing.assert_allclose(np.asarray(result["xattn_gate"]), gates, rtol=1e-6)


def test_cross_attention_puts_no_self_attention_on_audio():
    config, params, batch = setup("cross_attention")
    rows = [([40], [1, 5, 6, 20, 21], [7, 8, 9]), ([23], [1, 5, 22], [11, 12, 13, 14, 15])]
    batch = make_batch(config, rows, FRAMES)  # text-only prompts; the placeholder id is an ordinary token here
    targets = np.zeros(batch["tokens"].shape, np.float32)
    targets[0, 5:8], targets[1, 3:8] = 1, 1
    result = attention_mass(config, params, batch, jnp.asarray(targets))
    per_example = np.asarray(result["per_example"])
    np.testing.assert_allclose(per_example.sum(axis=-1), 1.0, atol=1e-5)
    assert (per_example[..., 1] == 0).all() and (per_example[..., 0] > 0).all()


def test_append_generated_builds_right_padded_targets():
    tokens = np.array([[0, 0, 4, 5], [6, 7, 8, 0]])
    segments = np.array([[0, 0, 1, 1], [1, 1, 1, 0]])
    out = DecodeOutput(tokens=np.array([[9, 2, 0], [10, 11, 12]]), lengths=np.array([2, 3]), scores=np.zeros(2))
    joined = append_generated(tokens, segments, out)
    assert joined["tokens"].tolist() == [[4, 5, 9, 2, 0, 0, 0], [6, 7, 8, 10, 11, 12, 0]]
    assert joined["segment_ids"].tolist() == [[1, 1, 1, 1, 0, 0, 0], [1, 1, 1, 1, 1, 1, 0]]
    assert joined["target_mask"].tolist() == [[0, 0, 1, 1, 0, 0, 0], [0, 0, 0, 1, 1, 1, 0]]


# --- (c) prompt-following probe -----------------------------------------------------------------


def test_scorers_on_hand_made_outputs():
    assert word_error_rate("the cat sat", "the cat sat on the mat") == 0.5  # 3 deletions / 6 words
    assert word_error_rate("The cat, sat!", "the cat sat") == 0.0  # normalised before scoring
    assert word_error_rate("a dog sat", "the cat sat") == pytest.approx(2 / 3)
    assert uppercase_fraction("HELLO world", "") == 0.5
    assert uppercase_fraction("ABC 123!", "") == 1.0
    assert uppercase_fraction("123", "") == 0.0
    assert uppercase_fraction("Hi", "") == 0.5
    for text, expected in [
        ("Yes, it does.", 1.0),
        ("  no", 1.0),
        ("NO!", 1.0),
        ("yesterday", 0.0),
        ("I think yes", 0.0),
        ("", 0.0),
        ("No. Never.", 1.0),
    ]:
        assert starts_with_yes_or_no(text, "") == expected, text


def test_probe_report_scores_each_instruction():
    probes = DEFAULT_PROBES
    outputs = ["the cat sat", "a dog", "THE CAT SAT", "A Dog", "yes", "maybe"]  # probe-major, 2 clips
    report = probe_report(probes, outputs, ["the cat sat", "the dog ran"])
    assert report["probes"]["transcribe"]["scores"] == [0.0, 2 / 3]
    assert report["probes"]["capitals"]["scores"] == [1.0, 0.5]
    assert report["probes"]["yes_no"]["scores"] == [1.0, 0.0]
    assert report["scores"] == {"transcribe": pytest.approx(1 / 3), "capitals": 0.75, "yes_no": 0.5}
    assert report["instruction_sensitivity"] == 1.0
    same = probe_report(probes[:2], ["ok", "fine", "OK", "fine"], ["x", "y"])  # identical after normalisation
    assert same["instruction_sensitivity"] == 0.0
    assert probe_report(probes[:1], ["ok"], ["x"])["instruction_sensitivity"] is None


@pytest.fixture(scope="module")
def chatml(tmp_path_factory):
    return load_tokenizer(write_chatml_dir(str(tmp_path_factory.mktemp("chatml"))))


def test_probe_runs_end_to_end(chatml):
    audio_id = chatml.token_to_id("<|audio|>")
    base = tiny_config("decoder_only")
    config = base.replace(llm=base.llm.replace(vocab_size=chatml.vocab_size), placeholder_id=audio_id)
    lengths = np.array([40, 23])
    features = np.random.default_rng(0).normal(size=(2, FRAMES, MELS)).astype(np.float32)
    features[1, 23:] = 0
    prompts = probe_prompts(config, chatml, DEFAULT_PROBES, lengths.tolist())
    for p, spec in enumerate(DEFAULT_PROBES):
        for i, frames in enumerate(lengths):
            text = chatml.decode(prompts[p * 2 + i], skip_special_tokens=False)
            assert spec.template.replace("{audio}", "<|audio|>" * config.audio_token_count(int(frames))) in text
            assert text.endswith("<|im_start|>assistant\n")
    cross = tiny_config("cross_attention").replace(placeholder_id=audio_id)
    assert all(audio_id not in row for row in probe_prompts(cross, chatml, DEFAULT_PROBES, lengths.tolist()))

    batch = {
        "tokens": jnp.asarray([prompts[0]]),
        "segment_ids": jnp.ones((1, len(prompts[0])), jnp.int32),
        "features": jnp.asarray(features[:1, None]),
        "feature_lengths": jnp.asarray(lengths[:1, None]),
    }
    params = random_params(SpeechLLM(config), batch)
    gen = GenerationConfig(max_new_tokens=4, eos_ids=tuple(chatml.eos_ids), pad_id=chatml.pad_id)
    probes = DEFAULT_PROBES + (ProbeSpec("echo", "Say again: {audio}", lambda out, ref: float(len(out))),)
    report = prompt_following_probe(
        config, params, chatml, features, lengths, ["one two", "three"], probes=probes, gen=gen, batch_size=8
    )
    assert set(report["scores"]) == {"transcribe", "capitals", "yes_no", "echo"}

    # The same prompts and static shapes, generated directly, decode to the report's outputs.
    prompts = probe_prompts(config, chatml, probes, lengths.tolist())
    expected = []
    for rows, tokens, segments, clip_features, clip_lengths in probe_batches(prompts, features, lengths, 8):
        out = generate_from_audio(config, params, tokens, segments, clip_features, clip_lengths, gen)
        expected += [chatml.decode(np.asarray(out.tokens[k, : int(out.lengths[k])]).tolist()) for k in range(len(rows))]
    assert len(expected) == len(prompts) == 8
    outputs = [text for spec in probes for text in report["probes"][spec.name]["outputs"]]
    assert outputs == expected
    for spec in probes:
        entry = report["probes"][spec.name]
        assert entry["scores"] == [spec.scorer(o, r) for o, r in zip(entry["outputs"], ["one two", "three"])]
        assert report["scores"][spec.name] == pytest.approx(np.mean(entry["scores"]))
    with pytest.raises(ValueError, match="3 references for 2 clips"):
        prompt_following_probe(config, params, chatml, features, lengths, ["a", "b", "c"], gen=gen)
    with pytest.raises(ValueError, match="probe names must be unique"):
        probe_prompts(config, chatml, DEFAULT_PROBES[:1] * 2, [40])
