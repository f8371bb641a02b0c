"""Whisper's log-mel spectrogram, on the host (numpy) and on device (jnp), time-major.

The recipe is Whisper's: periodic Hann window of 400 samples, hop 160, centred STFT with reflect
padding on the left, power spectrum, Slaney mel filterbank (0-8 kHz), ``log10(max(mel, 1e-10))``,
dynamic range ``max(x, x.max() - 8)`` per example, then ``(x + 4) / 4``. The STFT frame Whisper
drops leaves ``num_samples // 160`` frames.

Right edge: Whisper always sees audio followed by zeros (``transcribe`` pads 30 s of zeros, the HF
feature extractor pads to 30 s). We therefore treat every waveform as continued by zeros instead
of reflect-padding its end, and take the dynamic-range maximum over every frame that overlaps the
audio, including the partly filled frames past ``num_samples // 160`` that Whisper keeps inside its
30-s window. The valid frames then equal Whisper's on the 30-s padded input exactly, and appending
zeros to a waveform never changes its valid frames (pure-zero frames sit at the floor, so they
cannot raise the maximum).

Padded frames: a frame of pure zeros carries Whisper's floor value ``max(M - 2, -1.5)``, where
``M`` is the example's largest normalized value (``-1.5 = (log10(1e-10) + 4) / 4``).
``pad_or_trim`` pads features with that per-example value, which is what Whisper produces for a
30-s padded input (up to the two or three frames straddling the end of the audio, which Whisper
computes from the audio's tail; compute features from zero-padded audio when those must match).
"""

from __future__ import annotations

import functools
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

SAMPLE_RATE = 16000
N_FFT = 400
HOP_LENGTH = 160
CHUNK_FRAMES = 3000  # Whisper's 30-s input window
CHUNK_SAMPLES = CHUNK_FRAMES * HOP_LENGTH
LOG_FLOOR = 1e-10
DYNAMIC_RANGE = 8.0  # log10 units kept below each example's maximum
FLOOR_VALUE = (np.log10(LOG_FLOOR) + 4.0) / 4.0  # normalized value of a silent spectrum: -1.5


def num_frames(num_samples):
    """Valid feature frames for ``num_samples`` audio samples (int or integer array)."""
    return num_samples // HOP_LENGTH


def _hz_to_mel(hz: np.ndarray) -> np.ndarray:
    """Slaney's mel scale: linear below 1 kHz, logarithmic above."""
    hz = np.asarray(hz, dtype=np.float64)
    linear = hz * 3.0 / 200.0
    log_region = 15.0 + np.log(np.maximum(hz, 1e-12) / 1000.0) / (np.log(6.4) / 27.0)
    return np.where(hz >= 1000.0, log_region, linear)


def _mel_to_hz(mel: np.ndarray) -> np.ndarray:
    mel = np.asarray(mel, dtype=np.float64)
    linear = mel * 200.0 / 3.0
    log_region = 1000.0 * np.exp((np.log(6.4) / 27.0) * (mel - 15.0))
    return np.where(mel >= 15.0, log_region, linear)


@functools.lru_cache(maxsize=None)
def mel_filters(n_mels: int, sample_rate: int = SAMPLE_RATE, n_fft: int = N_FFT) -> np.ndarray:
    """f32[n_mels, 1 + n_fft // 2] Slaney-normalized triangular filters over 0 .. sample_rate / 2.

    Same construction as ``librosa.filters.mel(sr, n_fft, n_mels)`` (htk=False, norm="slaney"),
    which produced the tables shipped with Whisper. The returned array is read-only (cached).
    """
    if n_mels < 1 or n_fft < 2 or sample_rate < 1:
        raise ValueError(f"mel_filters needs positive sizes, got n_mels={n_mels}, n_fft={n_fft}, sr={sample_rate}")
    fft_freqs = np.linspace(0.0, sample_rate / 2.0, 1 + n_fft // 2)
    mel_points = np.linspace(_hz_to_mel(0.0), _hz_to_mel(sample_rate / 2.0), n_mels + 2)
    edges_hz = _mel_to_hz(mel_points)
    widths_hz = np.diff(edges_hz)
    offsets = edges_hz[:, None] - fft_freqs[None, :]  # [n_mels + 2, bins]
    rising = -offsets[:-2] / widths_hz[:-1, None]
    falling = offsets[2:] / widths_hz[1:, None]
    weights = np.maximum(0.0, np.minimum(rising, falling))
    weights *= (2.0 / (edges_hz[2:] - edges_hz[:-2]))[:, None]  # equal area per filter
    filters = weights.astype(np.float32)
    filters.setflags(write=False)
    return filters


@functools.lru_cache(maxsize=None)
def _hann_window(length: int = N_FFT) -> np.ndarray:
    """f32[length] periodic Hann window, as ``torch.hann_window(length)``."""
    window = (0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(length) / length)).astype(np.float32)
    window.setflags(write=False)
    return window


def _frames_overlapping(num_samples: int) -> int:
    """STFT frames (centred every 160 samples) whose 400-sample window overlaps the audio."""
    return (num_samples + N_FFT // 2 - 1) // HOP_LENGTH + 1


def _log_mel(xp, matmul: Callable, audio_BxN, lengths_B, n_mels: int):
    """Shared numpy/jnp body: audio f32[B, N] (zeros past lengths) -> f32[B, N // 160, n_mels]."""
    batch, length = audio_BxN.shape
    if lengths_B is not None:
        audio_BxN = xp.where(xp.arange(length)[None, :] < lengths_B[:, None], audio_BxN, 0.0)
    frames_total = _frames_overlapping(length)
    half = N_FFT // 2
    rows = frames_total + 2  # frame k spans hop-rows k, k + 1 and the first 80 samples of k + 2
    right_zeros = rows * HOP_LENGTH - half - length
    extended = xp.concatenate([audio_BxN, xp.zeros((batch, right_zeros), audio_BxN.dtype)], axis=1)
    left = extended[:, 1 : half + 1][:, ::-1]  # reflect padding, as torch.stft(center=True)
    padded = xp.concatenate([left, extended], axis=1).reshape(batch, rows, HOP_LENGTH)
    frames = xp.concatenate(
        [
            padded[:, :frames_total],
            padded[:, 1 : frames_total + 1],
            padded[:, 2 : frames_total + 2, : N_FFT - 2 * HOP_LENGTH],
        ],
        axis=-1,
    )  # [B, K, 400]
    spectrum = xp.fft.rfft(frames * xp.asarray(_hann_window())[None, None, :], axis=-1)  # [B, K, 201]
    power = spectrum.real**2 + spectrum.imag**2
    mel = matmul(power, xp.asarray(mel_filters(n_mels).T))  # [B, K, n_mels]
    log_spec = xp.log10(xp.maximum(mel, LOG_FLOOR))
    peak = log_spec.max(axis=(1, 2), keepdims=True)
    log_spec = xp.maximum(log_spec, peak - DYNAMIC_RANGE)
    return ((log_spec + 4.0) / 4.0)[:, : num_frames(length)]


def _check_audio(audio, name: str) -> None:
    if audio.ndim not in (1, 2):
        raise ValueError(f"{name}: audio must be f32[N] or f32[B, N], got shape {tuple(audio.shape)}")


def log_mel_spectrogram(audio: np.ndarray, n_mels: int = 80, *, lengths: np.ndarray | None = None) -> np.ndarray:
    """Host-side log-mel. audio f32[N] or f32[B, N] at 16 kHz -> f32[N // 160, n_mels] or f32[B, ...].

    ``lengths`` i32[B] (optional, batched input only): samples past each length are treated as
    zeros. The dynamic-range maximum is taken per example.
    """
    audio = np.asarray(audio)
    _check_audio(audio, "log_mel_spectrogram")
    if not np.issubdtype(audio.dtype, np.floating):
        raise TypeError(f"log_mel_spectrogram: audio must be floating point in [-1, 1], got dtype {audio.dtype}")
    if not np.all(np.isfinite(audio)):
        raise ValueError("log_mel_spectrogram: audio contains NaN or infinite samples")
    unbatched = audio.ndim == 1
    audio_BxN = audio[None].astype(np.float32) if unbatched else audio.astype(np.float32)
    if lengths is not None:
        if unbatched:
            raise ValueError("log_mel_spectrogram: lengths needs batched audio f32[B, N]")
        lengths = np.asarray(lengths)
        if lengths.shape != (audio_BxN.shape[0],):
            raise ValueError(
                f"log_mel_spectrogram: lengths must be i32[{audio_BxN.shape[0]}], got shape {lengths.shape}"
            )
    features = _log_mel(np, np.matmul, audio_BxN, lengths, n_mels).astype(np.float32)
    return features[0] if unbatched else features


_matmul_highest = functools.partial(jnp.matmul, precision=jax.lax.Precision.HIGHEST)


@functools.partial(jax.jit, static_argnames=("n_mels",))
def log_mel_spectrogram_jnp(audio: jax.Array, n_mels: int = 80, lengths: jax.Array | None = None) -> jax.Array:
    """Device log-mel, same values as ``log_mel_spectrogram``. audio f32[N] | f32[B, N], lengths i32[B]."""
    _check_audio(audio, "log_mel_spectrogram_jnp")
    unbatched = audio.ndim == 1
    audio_BxN = audio[None] if unbatched else audio
    if lengths is not None and (unbatched or lengths.shape != (audio_BxN.shape[0],)):
        raise ValueError(
            f"log_mel_spectrogram_jnp: lengths must be i32[B] for audio f32[B, N], got "
            f"lengths {tuple(lengths.shape)} for audio {tuple(audio.shape)}"
        )
    features = _log_mel(jnp, _matmul_highest, audio_BxN.astype(jnp.float32), lengths, n_mels)
    return features[0] if unbatched else features


def padding_value(features: np.ndarray) -> np.ndarray:
    """Whisper's value for a silent frame: ``max(M - 2, -1.5)`` per example.

    features f[T, F] -> f32 scalar array; f[B, T, F] -> f32[B]. ``M`` is the example's maximum.
    """
    features = np.asarray(features)
    if features.ndim not in (2, 3):
        raise ValueError(f"padding_value: features must be f[T, F] or f[B, T, F], got shape {features.shape}")
    if features.shape[-2] == 0:
        return np.full(features.shape[:-2], FLOOR_VALUE, np.float32)
    peak = features.max(axis=(-2, -1))
    return np.maximum(peak - DYNAMIC_RANGE / 4.0, FLOOR_VALUE).astype(np.float32)


def pad_or_trim(
    features: np.ndarray, length: int = CHUNK_FRAMES, pad_value: float | np.ndarray | None = None
) -> np.ndarray:
    """Pads (or trims) the time axis of f[T, F] or f[B, T, F] to ``length`` frames.

    Padding uses ``pad_value`` if given, else each example's Whisper silence value
    (``padding_value``), so a bucket padded here looks like Whisper's 30-s zero padding.
    """
    features = np.asarray(features)
    if features.ndim not in (2, 3):
        raise ValueError(f"pad_or_trim: features must be f[T, F] or f[B, T, F], got shape {features.shape}")
    if length < 0:
        raise ValueError(f"pad_or_trim: length must be >= 0, got {length}")
    frames = features.shape[-2]
    if frames >= length:
        return features[..., :length, :]
    fill = padding_value(features) if pad_value is None else np.asarray(pad_value, dtype=features.dtype)
    pad_shape = features.shape[:-2] + (length - frames, features.shape[-1])
    padding = np.broadcast_to(np.asarray(fill, features.dtype).reshape(np.shape(fill) + (1, 1)), pad_shape)
    return np.concatenate([features, padding], axis=-2)
