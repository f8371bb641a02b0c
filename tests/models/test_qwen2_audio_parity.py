"""Qwen2-Audio import: logit parity with transformers' ``Qwen2AudioForConditionalGeneration`` (random
init from a tiny config, no download), placeholder arithmetic, checkpoint layouts, bad checkpoints.

The tiny model: Whisper-style tower d 32, 2 layers, 16 mel bins, max_source_positions 40 (HF's
tower insists on exactly 2 * 40 = 80 mel frames), Qwen2 LM d 48, 2 layers, GQA 4/2, vocab 96.
Weights are drawn with std 0.2 and biases / norm scales perturbed so that logits are O(1) and a
mapping mistake cannot hide behind tiny values. HF draws the tower's position table at random,
while released checkpoints (Whisper-derived) hold Whisper's sinusoids, which our encoder computes
rather than stores: the fixture writes the sinusoids into the HF model before saving.

Where the two implementations legitimately differ, the parity inputs are chosen so that it cannot
matter: our encoder zeroes mel frames past each clip's length before each convolution, HF's
convolutions read whatever the padded frames hold. With zeros past the length and an even length,
every conv output inside the clip reads the same values in both (measured otherwise: an odd
length, or padding frames of -0.6, moves this tiny model's logits by 0.2-1.5 for that row).
"""

from __future__ import annotations

import json
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from jaxspeech.convert.qwen2_audio import AUDIO_DEFAULTS, TEXT_DEFAULTS, config_from_hf, load_hf_qwen2_audio  # noqa: E402
from jaxspeech.convert.safetensors_io import CheckpointError, SafetensorsReader, write_safetensors  # noqa: E402
from jaxspeech.encoders.whisper import WhisperEncoder  # noqa: E402
from jaxspeech.layers.embeddings import sinusoids  # noqa: E402
from jaxspeech.models.speech_llm import SpeechLLM  # noqa: E402

AUDIO_TOKEN = 7
MELS, POSITIONS, WIDTH = 16, 40, 32
FRAMES = 2 * POSITIONS
TOL = 1e-4


def _hf_config() -> "transformers.Qwen2AudioConfig":
    return transformers.Qwen2AudioConfig(
        audio_config=dict(
            d_model=WIDTH,
            encoder_attention_heads=4,
            encoder_ffn_dim=64,
            encoder_layers=2,
            num_mel_bins=MELS,
            max_source_positions=POSITIONS,
            initializer_range=0.2,
        ),
        text_config=dict(
            model_type="qwen2",
            vocab_size=96,
            hidden_size=48,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            rms_norm_eps=1e-5,
            rope_theta=10000.0,
            initializer_range=0.2,
        ),
        audio_token_index=AUDIO_TOKEN,
    )


@pytest.fixture(scope="module")
def hf_checkpoint(tmp_path_factory):
    """(HF model, directory with config.json + model.safetensors in the Hub layout)."""
    torch.manual_seed(0)
    model = transformers.Qwen2AudioForConditionalGeneration(_hf_config()).eval()
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("bias") or "norm" in name:
                param.add_(0.1 * torch.randn_like(param))  # zero biases / unit scales would hide mapping bugs
        model.model.audio_tower.embed_positions.weight.copy_(torch.from_numpy(sinusoids(POSITIONS, WIDTH)))
    path = tmp_path_factory.mktemp("qwen2_audio")
    model.save_pretrained(path)
    return model, path


@pytest.fixture(scope="module")
def imported(hf_checkpoint):
    return load_hf_qwen2_audio(str(hf_checkpoint[1]))


def _batch(config, clip_frames: list[int], prefixes: list[list[int]], suffixes: list[list[int]], seed: int = 0):
    """Features f32[B, FRAMES, MELS] (zero past each clip's length), clip lengths, and right-padded
    prompts prefix + placeholders + suffix with their 0/1 mask."""
    rng = np.random.default_rng(seed)
    features = np.zeros((len(clip_frames), FRAMES, MELS), np.float32)
    rows = []
    for b, n in enumerate(clip_frames):
        features[b, :n] = rng.normal(size=(n, MELS))
        rows.append(prefixes[b] + [AUDIO_TOKEN] * config.audio_token_count(n) + suffixes[b])
    tokens = np.zeros((len(rows), max(map(len, rows))), np.int32)
    mask = np.zeros_like(tokens)
    for b, row in enumerate(rows):
        tokens[b, : len(row)] = row
        mask[b, : len(row)] = 1
    return features, np.asarray(clip_frames, np.int32), tokens, mask


def _ours(config, params, features, lengths, tokens, mask):
    """-> (logits f32[B, L, V], audio embeddings f[B, A, D], their lengths i32[B]) of our SpeechLLM."""
    model = SpeechLLM(config)

    def run(params, features, lengths, tokens, mask):
        audio = model.apply(params, features[:, None], lengths[:, None], method=SpeechLLM.encode_audio)
        logits = model.apply(params, tokens, features[:, None], lengths[:, None], segment_ids=mask)
        return logits, audio.embeds[:, 0], audio.lengths[:, 0]

    return [np.asarray(x) for x in jax.jit(run)(params, features, lengths, tokens, mask)]


def _theirs(model, features, lengths, tokens, mask):
    """-> (logits, projector outputs f[B, A, D]) of the HF model."""
    captured = {}
    hook = model.model.multi_modal_projector.register_forward_hook(lambda m, i, out: captured.update(audio=out))
    feature_mask = (np.arange(FRAMES)[None, :] < lengths[:, None]).astype(np.int64)
    try:
        with torch.no_grad():
            out = model(
                input_ids=torch.from_numpy(tokens.astype(np.int64)),
                input_features=torch.from_numpy(features).transpose(1, 2),
                attention_mask=torch.from_numpy(mask.astype(np.int64)),
                feature_attention_mask=torch.from_numpy(feature_mask),
            )
    finally:
        hook.remove()
    return out.logits.numpy(), captured["audio"].numpy()


@pytest.fixture(scope="module")
def padded_batch(imported):
    """Two clips of 80 and 46 mel frames (feature_attention_mask) -> 20 and 11 audio tokens, inside
    prompts of 27 and 17 tokens (right padding), and our outputs on them."""
    config, params = imported
    inputs = _batch(config, [80, 46], [[1, 2], [1, 2, 3, 4]], [[10, 11, 12, 13, 14], [15, 16]])
    assert [config.audio_token_count(int(n)) for n in inputs[1]] == [20, 11] and inputs[2].shape == (2, 27)
    return inputs, _ours(config, params, *inputs)


@pytest.mark.parity
def test_logits_match_transformers_on_a_padded_batch(hf_checkpoint, padded_batch):
    """Audio embeddings at every valid audio frame and logits at every valid position."""
    model, _ = hf_checkpoint
    (features, lengths, tokens, mask), (logits, audio, audio_lengths) = padded_batch
    ref_logits, ref_audio = _theirs(model, features, lengths, tokens, mask)

    np.testing.assert_array_equal(audio_lengths, [20, 11])
    for b, n in enumerate(audio_lengths):
        audio_diff = float(np.abs(audio[b, :n] - ref_audio[b, :n]).max())
        assert audio_diff <= TOL, f"row {b}: audio embeddings differ by {audio_diff:.2e}"
    valid = mask.astype(bool)
    assert float(ref_logits[valid].std()) > 0.3  # logits large enough for the tolerance to mean something
    diff = float(np.abs(logits[valid] - ref_logits[valid]).max())
    assert diff <= TOL, f"max abs logit diff {diff:.2e} > {TOL}"


def test_a_clip_padded_in_a_batch_gives_its_unpadded_logits(imported, padded_batch):
    """Pooling before the final norm keeps the encoder's padding invariance (46 frames alone vs padded to 80)."""
    config, params = imported
    (features, lengths, tokens, mask), (batched, _, _) = padded_batch
    n = int(mask[1].sum())
    run = jax.jit(SpeechLLM(config).apply)
    alone = np.asarray(run(params, tokens[1:, :n], features[1:, None, :46], lengths[1:, None]))
    np.testing.assert_allclose(alone[0], batched[1, :n], atol=1e-5)


def test_pooled_layer_states_are_the_unpooled_states_averaged(imported):
    """Requested layer states are pooled like the output: frame pairs of the pool-1 encoder averaged."""
    config, params = imported
    pooled_config = config.encoder.whisper
    encoder_params = {"params": params["params"]["encoder"]["whisper"]}
    features = jnp.asarray(np.random.default_rng(1).normal(size=(2, 30, MELS)), jnp.float32)
    lengths = jnp.asarray([30, 22])

    def states(encoder_config):
        out = WhisperEncoder(encoder_config).apply(encoder_params, features, lengths, output_layers=(0, -1))
        return out.layer_states, out.lengths

    (pooled, pooled_lengths), (full, full_lengths) = jax.jit(
        lambda: (states(pooled_config), states(pooled_config.replace(pool_before_norm=1)))
    )()
    np.testing.assert_array_equal(pooled_lengths, [7, 5])
    np.testing.assert_array_equal(full_lengths, [15, 11])
    for mine, unpooled in zip(pooled, full):
        for b, n in enumerate(np.asarray(pooled_lengths)):
            pairs = np.asarray(unpooled[b, : 2 * n]).reshape(n, 2, -1).mean(axis=1)
            np.testing.assert_allclose(np.asarray(mine[b, :n]), pairs, atol=1e-6)
            assert not np.asarray(mine[b, n:]).any()


def test_placeholder_counts_match_transformers():
    """Released sizes (defaults only): 3000 mel frames -> 1500 -> 750 audio tokens; every length
    from 3 to 3000 gives HF's (L - 1) // 2 + 1 then (L - 2) // 2 + 1, on ints and under jit."""
    config = config_from_hf(
        {"model_type": "qwen2_audio", "audio_config": {}, "text_config": {}, "audio_token_index": 9}
    )
    encoder = config.encoder.whisper
    assert (encoder.d_model, encoder.num_layers, encoder.n_mels, encoder.max_frames) == (1280, 32, 128, 3000)
    assert (config.llm.hidden_size, config.llm.num_layers, config.llm.vocab_size) == (4096, 32, 151936)
    assert config.placeholder_id == 9 and config.audio_token_count(3000) == 750
    tower = transformers.models.qwen2_audio.modeling_qwen2_audio.Qwen2AudioEncoder
    _, expected = tower._get_feat_extract_output_lengths(None, torch.arange(1, 3001))
    ours = [config.audio_token_count(n) for n in range(3, 3001)]
    np.testing.assert_array_equal(ours, expected.numpy()[2:])
    np.testing.assert_array_equal(jax.jit(encoder.output_lengths)(jnp.arange(1, 3001)), expected.numpy())
    for frames in (1, 2):  # one conv frame: HF gives 0 tokens, the data side refuses such a clip
        assert int(expected[frames - 1]) == 0
        with pytest.raises(ValueError, match="pooling window"):
            config.audio_token_count(frames)


def test_filled_in_defaults_are_transformers_defaults():
    audio, text = transformers.Qwen2AudioEncoderConfig(), transformers.Qwen2Config()
    assert {k: getattr(audio, k) for k in AUDIO_DEFAULTS} == AUDIO_DEFAULTS
    assert {k: getattr(text, k) for k in TEXT_DEFAULTS} == TEXT_DEFAULTS


def _tensors(path) -> dict[str, np.ndarray]:
    reader = SafetensorsReader(str(path))
    return {name: np.array(reader.get(name)) for name in reader.keys()}


def _write(tmp_path, source, tensors: dict, config: dict | None = None, **write_options):
    write_safetensors(tensors, str(tmp_path), **write_options)
    if config is None:
        shutil.copy(source / "config.json", tmp_path / "config.json")
    else:
        (tmp_path / "config.json").write_text(json.dumps(config))
    return str(tmp_path)


_TRANSFORMERS_PREFIXES = (
    ("language_model.lm_head.", "lm_head."),
    ("language_model.model.", "model.language_model."),
    ("audio_tower.", "model.audio_tower."),
    ("multi_modal_projector.", "model.multi_modal_projector."),
)


def _transformers_name(name: str) -> str:
    for hub, ours in _TRANSFORMERS_PREFIXES:
        if name.startswith(hub):
            return ours + name[len(hub) :]
    raise AssertionError(name)


def test_sharded_and_transformers_layouts_load_the_same_params(hf_checkpoint, imported, tmp_path):
    _, source = hf_checkpoint
    tensors = _tensors(source)
    sharded = _write(tmp_path / "sharded", source, tensors, max_shard_bytes=16_000)
    assert (tmp_path / "sharded" / "model.safetensors.index.json").exists()
    renamed = _write(tmp_path / "renamed", source, {_transformers_name(k): v for k, v in tensors.items()})
    _, reference = imported
    for directory in (sharded, renamed):
        _, params = load_hf_qwen2_audio(directory)
        jax.tree.map(np.testing.assert_array_equal, params, reference)
    _, scanned = load_hf_qwen2_audio(sharded, scan_layers=True)
    stacked = scanned["params"]["encoder"]["whisper"]["layers"]["mlp"]["fc1"]["kernel"]
    np.testing.assert_array_equal(
        stacked[1], reference["params"]["encoder"]["whisper"]["layers_1"]["mlp"]["fc1"]["kernel"]
    )


def _drop(name):
    return lambda t: {k: v for k, v in t.items() if k != name}


def _replace(name, value_fn):
    return lambda t: {**t, name: value_fn(t[name])}


BAD_TENSORS = {
    "missing tower tensor": (
        _drop("audio_tower.layers.1.fc2.weight"),
        "tensor 'audio_tower.layers.1.fc2.weight' is missing",
    ),
    "missing LM bias": (
        _drop("language_model.model.layers.0.self_attn.k_proj.bias"),
        "tensor 'language_model.model.layers.0.self_attn.k_proj.bias' is missing",
    ),
    "missing projector": (
        _drop("multi_modal_projector.linear.bias"),
        "tensor 'multi_modal_projector.linear.bias' is missing",
    ),
    "transposed projector": (
        _replace("multi_modal_projector.linear.weight", np.transpose),
        r"'multi_modal_projector.linear.weight' has shape \(32, 48\), expected \(48, 32\)",
    ),
    "wrong conv kernel": (
        _replace("audio_tower.conv1.weight", lambda w: w[:, :, :2]),
        r"'audio_tower.conv1.weight' has shape \(32, 16, 2\), expected \(32, 16, 3\)",
    ),
    "wrong lm head": (
        _replace("language_model.lm_head.weight", lambda w: w[:-1]),
        r"'language_model.lm_head.weight' has shape \(95, 48\), expected \(96, 48\)",
    ),
    "extra tensor": (
        lambda t: {**t, "audio_tower.proj.weight": np.zeros(3, np.float32)},
        "does not use.*audio_tower.proj.weight",
    ),
    "learned positions": (
        _replace("audio_tower.embed_positions.weight", lambda w: w + 0.5),
        "tensor 'audio_tower.embed_positions.weight' \\(the encoder position table\\) differs from sinusoids",
    ),
}


@pytest.mark.parametrize("case", list(BAD_TENSORS))
def test_bad_tensors_are_named(hf_checkpoint, tmp_path, case):
    mutate, message = BAD_TENSORS[case]
    _, source = hf_checkpoint
    with pytest.raises(CheckpointError, match=message):
        load_hf_qwen2_audio(_write(tmp_path, source, mutate(_tensors(source))))


BAD_CONFIGS = {
    "no placeholder id": (lambda c: {k: v for k, v in c.items() if k != "audio_token_index"}, "audio_token_index"),
    "not qwen2_audio": (lambda c: {**c, "model_type": "whisper"}, "has model_type 'whisper'"),
    "no text config": (lambda c: {k: v for k, v in c.items() if k != "text_config"}, "lacks the 'text_config' dict"),
    "sliding window": (
        lambda c: {**c, "text_config": {**c["text_config"], "use_sliding_window": True}},
        "use_sliding_window",
    ),
    "relu tower": (
        lambda c: {**c, "audio_config": {**c["audio_config"], "activation_function": "relu"}},
        "audio_config has activation_function 'relu', expected gelu",
    ),
}


@pytest.mark.parametrize("case", list(BAD_CONFIGS))
def test_bad_configs_are_named(hf_checkpoint, case):
    mutate, message = BAD_CONFIGS[case]
    _, source = hf_checkpoint
    config = json.loads((source / "config.json").read_text())
    with pytest.raises(CheckpointError, match=message):
        config_from_hf(mutate(config))
