"""Whisper log-mel: filterbank, parity with openai-whisper and transformers, numpy == jnp, padding."""

import importlib.util
import os

import jax.numpy as jnp
import numpy as np
import pytest

from jaxspeech.features import mel

PARITY_TOLERANCE = 1e-4  # brief: max abs diff vs the PyTorch/NumPy references
JNP_TOLERANCE = 1e-4  # measured up to 5e-5 (float32 FFTs differ in the lowest bins)


def white_noise(seconds: float, seed: int = 0) -> np.ndarray:
    return (np.random.default_rng(seed).standard_normal(int(seconds * mel.SAMPLE_RATE)) * 0.1).astype(np.float32)


def sine_sweep(seconds: float) -> np.ndarray:
    """Exponential sweep 50 Hz -> 7.9 kHz, ending at full scale (the loudest frames at the edge)."""
    t = np.arange(int(seconds * mel.SAMPLE_RATE)) / mel.SAMPLE_RATE
    f0, f1 = 50.0, 7900.0
    phase = 2 * np.pi * f0 * seconds / np.log(f1 / f0) * (np.exp(t / seconds * np.log(f1 / f0)) - 1)
    return (0.8 * np.sin(phase) * np.linspace(0.2, 1.0, t.size)).astype(np.float32)


@pytest.fixture(scope="module")
def speech() -> np.ndarray:
    from jaxspeech.corpus.synthesis import get_synthesizer

    return get_synthesizer().synthesize("the quick brown fox jumps over the lazy dog.", "en-us", 170, 50)


def whisper_reference(audio: np.ndarray, n_mels: int) -> np.ndarray:
    """openai-whisper on 30-s zero-padded input, time-major, cut to the valid frames."""
    torch = pytest.importorskip("torch")
    whisper = pytest.importorskip("whisper")
    out = whisper.log_mel_spectrogram(torch.from_numpy(audio), n_mels, padding=mel.CHUNK_SAMPLES)
    return out.numpy().T[: mel.num_frames(audio.shape[0])]


def transformers_reference(audio: np.ndarray, n_mels: int) -> np.ndarray:
    """transformers.WhisperFeatureExtractor (pads to 30 s), time-major, cut to the valid frames."""
    transformers = pytest.importorskip("transformers")
    extractor = transformers.WhisperFeatureExtractor(feature_size=n_mels)
    out = extractor(audio, sampling_rate=mel.SAMPLE_RATE, return_tensors="np").input_features[0]
    return out.T[: mel.num_frames(audio.shape[0])]


def test_constants_and_frame_count():
    assert (mel.SAMPLE_RATE, mel.HOP_LENGTH, mel.N_FFT, mel.CHUNK_FRAMES) == (16000, 160, 400, 3000)
    assert mel.num_frames(480000) == 3000 and mel.num_frames(12345) == 77 and mel.num_frames(159) == 0
    np.testing.assert_array_equal(mel.num_frames(np.array([160, 319, 320])), [1, 1, 2])
    for n in (0, 159, 160, 12345):
        assert mel.log_mel_spectrogram(white_noise(1.0)[:n]).shape == (n // 160, 80)


@pytest.mark.parametrize("n_mels", [80, 128])
def test_filters_match_whisper_assets(n_mels):
    spec = importlib.util.find_spec("whisper")  # locates the package without importing torch
    if spec is None:
        pytest.skip("openai-whisper is not installed")
    with np.load(os.path.join(os.path.dirname(spec.origin), "assets", "mel_filters.npz")) as f:
        reference = f[f"mel_{n_mels}"]
    ours = mel.mel_filters(n_mels)
    assert ours.shape == reference.shape == (n_mels, 201)
    np.testing.assert_allclose(ours, reference, atol=1e-7, rtol=0)


@pytest.mark.parity
@pytest.mark.parametrize("n_mels", [80, 128])
@pytest.mark.parametrize("signal", ["noise", "sweep", "speech"])
def test_parity_with_whisper_and_transformers(signal, n_mels, speech):
    audio = {"noise": white_noise(2.3), "sweep": sine_sweep(3.1), "speech": speech}[signal]
    ours = mel.log_mel_spectrogram(audio, n_mels)
    for reference in (whisper_reference(audio, n_mels), transformers_reference(audio, n_mels)):
        assert ours.shape == reference.shape
        assert np.abs(ours - reference).max() <= PARITY_TOLERANCE


@pytest.mark.parity
def test_padded_frames_match_whisper_padding(speech):
    """pad_or_trim fills frames past the audio with Whisper's value for its zero padding."""
    reference = whisper_reference(np.pad(speech, (0, mel.CHUNK_SAMPLES - speech.size)), 80)
    padded = mel.pad_or_trim(mel.log_mel_spectrogram(speech), mel.CHUNK_FRAMES)
    assert padded.shape == reference.shape == (3000, 80)
    valid = mel.num_frames(speech.size)
    # The 2-3 frames straddling the end of the audio are computed from its tail by Whisper.
    tail = valid + 3
    assert np.abs(padded[:valid] - reference[:valid]).max() <= PARITY_TOLERANCE
    assert np.abs(padded[tail:] - reference[tail:]).max() <= PARITY_TOLERANCE


def test_jnp_matches_numpy(speech):
    batch = np.zeros((3, 40000), np.float32)
    lengths = np.array([speech.size, 25000, 40000])
    batch[0, : speech.size] = speech[:40000]
    batch[1, :25000] = white_noise(25000 / 16000, seed=1)
    batch[2] = sine_sweep(2.5)
    host = mel.log_mel_spectrogram(batch, 128)
    device = np.asarray(mel.log_mel_spectrogram_jnp(jnp.asarray(batch), 128, jnp.asarray(lengths)))
    assert device.shape == host.shape == (3, 250, 128)
    assert np.abs(device - host).max() <= JNP_TOLERANCE
    single = np.asarray(mel.log_mel_spectrogram_jnp(jnp.asarray(batch[2])))
    assert np.abs(single - mel.log_mel_spectrogram(batch[2])).max() <= JNP_TOLERANCE


def test_padding_does_not_change_valid_frames():
    a, b = white_noise(1.3, seed=2), sine_sweep(2.0)
    alone_a, alone_b = mel.log_mel_spectrogram(a), mel.log_mel_spectrogram(b)
    batch = np.zeros((2, b.size + 1000), np.float32)
    batch[0, : a.size], batch[1, : b.size] = a, b
    features = mel.log_mel_spectrogram(batch)
    np.testing.assert_allclose(features[0, : alone_a.shape[0]], alone_a, atol=1e-6)
    np.testing.assert_allclose(features[1, : alone_b.shape[0]], alone_b, atol=1e-6)
    # Garbage past ``lengths`` is ignored exactly like zeros.
    batch[0, a.size :] = 0.9
    with_lengths = mel.log_mel_spectrogram(batch, lengths=np.array([a.size, b.size]))
    np.testing.assert_allclose(with_lengths, features, atol=1e-6)
    on_device = mel.log_mel_spectrogram_jnp(jnp.asarray(batch), lengths=jnp.array([a.size, b.size]))
    np.testing.assert_allclose(np.asarray(on_device), features, atol=JNP_TOLERANCE)


def test_silence_is_finite_floor():
    features = mel.log_mel_spectrogram(np.zeros(16000, np.float32))
    assert np.all(np.isfinite(features))
    np.testing.assert_allclose(features, mel.FLOOR_VALUE, atol=1e-6)
    assert np.all(np.isfinite(np.asarray(mel.log_mel_spectrogram_jnp(jnp.zeros((2, 8000))))))


def test_pad_or_trim_values_and_shapes():
    features = mel.log_mel_spectrogram(np.stack([white_noise(1.0), 0.01 * white_noise(1.0, seed=3)]))
    padded = mel.pad_or_trim(features, 150)
    assert padded.shape == (2, 150, 80)
    np.testing.assert_array_equal(padded[:, :100], features)
    expected = np.maximum(features.max(axis=(1, 2)) - 2.0, -1.5)
    np.testing.assert_allclose(padded[:, 100:], np.broadcast_to(expected[:, None, None], (2, 50, 80)), atol=1e-6)
    np.testing.assert_array_equal(mel.pad_or_trim(features, 60), features[:, :60])
    np.testing.assert_array_equal(mel.pad_or_trim(features[0], 120, pad_value=-3.0)[100:], -3.0)


def test_bad_input_errors():
    with pytest.raises(ValueError, match="f32\\[N\\] or f32\\[B, N\\]"):
        mel.log_mel_spectrogram(np.zeros((2, 2, 400), np.float32))
    with pytest.raises(ValueError, match="NaN"):
        mel.log_mel_spectrogram(np.full(400, np.nan, np.float32))
    with pytest.raises(TypeError, match="floating point"):
        mel.log_mel_spectrogram(np.zeros(400, np.int16))
    with pytest.raises(ValueError, match="lengths"):
        mel.log_mel_spectrogram(np.zeros((2, 400), np.float32), lengths=np.array([1, 2, 3]))
    with pytest.raises(ValueError, match="lengths must be i32"):
        mel.log_mel_spectrogram_jnp(jnp.zeros((2, 400)), lengths=jnp.array([1, 2, 3]))
    with pytest.raises(ValueError, match="pad_or_trim"):
        mel.pad_or_trim(np.zeros(5), 10)
