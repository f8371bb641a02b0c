"""Decode, validate, mix to mono and resample audio (WAV/FLAC/OGG and anything libsndfile reads).

libsndfile is lenient: a WAV cut short, a header-only WAV, a float WAV full of NaN, other sample
rates and stereo all decode without error, errors inside FLAC streams do not name the file, and
a header's frame count is believed (reading it at once allocates whatever the header claims).
The checks here are therefore ours: the sizes a header declares are checked against the file's
size before anything is allocated, audio is decoded in blocks, and every failure is an
``AudioError(path, reason, message)`` whose ``reason`` (a ``RejectReason``) is what the pipeline
counts.

What counts as valid: any decodable, finite, non-empty signal (silence included). Stereo is mixed
to mono by averaging the channels; other sample rates are resampled with soxr (high quality). A
duration that disagrees with the manifest by more than ``duration_tolerance`` is an error, because
it means the file is not the recording the transcript belongs to (or was cut).
"""

from __future__ import annotations

import io
import os
from typing import Literal

import numpy as np
import soundfile as sf
import soxr

from jaxspeech import paths
from jaxspeech.errors import AudioError, RejectReason

DEFAULT_SAMPLE_RATE = 16000
DEFAULT_DURATION_TOLERANCE = 0.025  # seconds

OverLength = Literal["reject", "chunk"]

# libsndfile's public error numbers (sndfile.h); higher numbers are internal decoder errors.
_SF_ERR_UNRECOGNISED_FORMAT = 1
_SF_ERR_SYSTEM = 2
_SF_ERR_UNSUPPORTED_ENCODING = 4
_WAV_FORMATS = ("WAV", "WAVEX")
_RIFF_UNKNOWN_SIZE = 0xFFFFFFFF  # written by streaming encoders that cannot seek back
_SF_UNKNOWN_FRAMES = np.iinfo(np.int64).max  # libsndfile's frame count of a stream of unknown length

# What a header may declare before anything is allocated from it. Uncompressed containers hold a
# fixed number of bytes per sample; no codec libsndfile reads packs more than 8192 frames into a
# byte (FLAC: at most 65535 samples per frame of >= 10 bytes; Opus: 5760 per >= 1-byte packet;
# Vorbis: 4096).
_UNCOMPRESSED_FORMATS = ("WAV", "WAVEX", "AIFF", "AU", "W64", "RF64", "RAW")
_PCM_SAMPLE_BYTES = {
    "PCM_S8": 1,
    "PCM_U8": 1,
    "PCM_16": 2,
    "PCM_24": 3,
    "PCM_32": 4,
    "FLOAT": 4,
    "DOUBLE": 8,
    "ULAW": 1,
    "ALAW": 1,
}
_MAX_FRAMES_PER_BYTE = 8192
_MAX_CHANNELS = 64
_MIN_SAMPLE_RATE, _MAX_SAMPLE_RATE = 1000, 768_000
_BLOCK_FRAMES = 1 << 16


def load_audio(
    path: str | os.PathLike,
    *,
    target_sample_rate: int = DEFAULT_SAMPLE_RATE,
    expected_duration: float | None = None,
    duration_tolerance: float = DEFAULT_DURATION_TOLERANCE,
    max_seconds: float | None = None,
    over_length: OverLength = "reject",
) -> np.ndarray | list[np.ndarray]:
    """Reads an audio file -> f32[N] mono at ``target_sample_rate`` (a list of chunks if chunking).

    ``expected_duration`` (seconds, from the manifest) is checked against the decoded duration.
    Audio longer than ``max_seconds`` is rejected (``over_length="reject"``) or split into
    consecutive chunks of at most ``max_seconds`` (``"chunk"``, which always returns a list).
    Raises ``AudioError`` naming ``path`` and the reason.
    """
    _check_options(target_sample_rate, max_seconds, over_length)
    path = os.fspath(path)
    try:
        data = paths.read_bytes(path)  # a local file or a bucket object
    except OSError as e:
        raise AudioError(path, RejectReason.UNREADABLE, f"cannot read the file: {e.strerror or e}") from None
    return decode_audio_bytes(
        data,
        name=path,
        target_sample_rate=target_sample_rate,
        expected_duration=expected_duration,
        duration_tolerance=duration_tolerance,
        max_seconds=max_seconds,
        over_length=over_length,
    )


def decode_audio_bytes(
    data: bytes,
    *,
    name: str = "<bytes>",
    target_sample_rate: int = DEFAULT_SAMPLE_RATE,
    expected_duration: float | None = None,
    duration_tolerance: float = DEFAULT_DURATION_TOLERANCE,
    max_seconds: float | None = None,
    over_length: OverLength = "reject",
) -> np.ndarray | list[np.ndarray]:
    """Like ``load_audio`` for an encoded file held in memory (e.g. a TFDS record); ``name`` labels errors."""
    _check_options(target_sample_rate, max_seconds, over_length)
    if len(data) == 0:
        raise AudioError(name, RejectReason.EMPTY, "0 bytes of data")
    samples_NxC, sample_rate = _decode(bytes(data), name)
    return _finish(
        samples_NxC,
        sample_rate,
        name,
        target_sample_rate,
        expected_duration,
        duration_tolerance,
        max_seconds,
        over_length,
    )


def prepare_waveform(
    samples: np.ndarray,
    sample_rate: int,
    *,
    name: str = "<array>",
    target_sample_rate: int = DEFAULT_SAMPLE_RATE,
    expected_duration: float | None = None,
    duration_tolerance: float = DEFAULT_DURATION_TOLERANCE,
    max_seconds: float | None = None,
    over_length: OverLength = "reject",
) -> np.ndarray | list[np.ndarray]:
    """Validates an already decoded waveform: samples [N] or [N, channels], float in [-1, 1] or
    integer PCM (scaled by its full range). Same checks and outputs as ``load_audio``."""
    _check_options(target_sample_rate, max_seconds, over_length)
    samples = np.asarray(samples)
    if samples.ndim not in (1, 2):
        raise AudioError(
            name, RejectReason.UNSUPPORTED_FORMAT, f"expected samples [N] or [N, channels], got shape {samples.shape}"
        )
    if not (isinstance(sample_rate, (int, np.integer)) and sample_rate > 0):
        raise AudioError(
            name, RejectReason.UNSUPPORTED_FORMAT, f"sample rate must be a positive integer, got {sample_rate!r}"
        )
    samples_NxC = _to_float32(samples, name)
    if samples_NxC.ndim == 1:
        samples_NxC = samples_NxC[:, None]
    return _finish(
        samples_NxC,
        int(sample_rate),
        name,
        target_sample_rate,
        expected_duration,
        duration_tolerance,
        max_seconds,
        over_length,
    )


def _check_options(target_sample_rate: int, max_seconds: float | None, over_length: str) -> None:
    if target_sample_rate <= 0:
        raise ValueError(f"target_sample_rate must be positive, got {target_sample_rate}")
    if over_length not in ("reject", "chunk"):
        raise ValueError(f"over_length must be 'reject' or 'chunk', got {over_length!r}")
    if max_seconds is not None and max_seconds <= 0:
        raise ValueError(f"max_seconds must be positive, got {max_seconds}")
    if over_length == "chunk" and max_seconds is None:
        raise ValueError("over_length='chunk' needs max_seconds (the chunk length)")


def _to_float32(samples: np.ndarray, name: str) -> np.ndarray:
    if np.issubdtype(samples.dtype, np.floating):
        return samples.astype(np.float32, copy=False)
    if samples.dtype == np.uint8:  # 8-bit PCM is unsigned, centred on 128
        return (samples.astype(np.float32) - 128.0) / 128.0
    if np.issubdtype(samples.dtype, np.signedinteger):
        return samples.astype(np.float32) / float(np.iinfo(samples.dtype).max + 1)
    raise AudioError(name, RejectReason.UNSUPPORTED_FORMAT, f"unsupported sample dtype {samples.dtype}")


def _libsndfile_reason(error: sf.LibsndfileError) -> RejectReason:
    if error.code in (_SF_ERR_UNRECOGNISED_FORMAT, _SF_ERR_UNSUPPORTED_ENCODING):
        return RejectReason.UNSUPPORTED_FORMAT
    if error.code == _SF_ERR_SYSTEM:
        return RejectReason.UNREADABLE
    return RejectReason.CORRUPT


def _check_header(name: str, data: bytes, container: str, subtype: str, frames: int, rate: int, channels: int) -> None:
    """Raises ``AudioError`` if the sizes the header declares cannot be true of a file of
    ``len(data)`` bytes (or are out of range), before anything is allocated from them."""
    if not 1 <= channels <= _MAX_CHANNELS:
        reason = RejectReason.CORRUPT if channels < 1 else RejectReason.UNSUPPORTED_FORMAT
        raise AudioError(name, reason, f"header declares {channels} channels (expected 1 to {_MAX_CHANNELS})")
    if not _MIN_SAMPLE_RATE <= rate <= _MAX_SAMPLE_RATE:
        raise AudioError(
            name,
            RejectReason.CORRUPT,
            f"header declares a sample rate of {rate} Hz (expected {_MIN_SAMPLE_RATE} to {_MAX_SAMPLE_RATE})",
        )
    if frames == _SF_UNKNOWN_FRAMES:
        return
    sample_bytes = _PCM_SAMPLE_BYTES.get(subtype) if container in _UNCOMPRESSED_FORMATS else None
    most = len(data) // (channels * sample_bytes) if sample_bytes else len(data) * _MAX_FRAMES_PER_BYTE
    if not 0 <= frames <= most:
        raise AudioError(
            name,
            RejectReason.CORRUPT,
            f"header declares {frames} frames, but a {len(data)}-byte {container} {subtype} file holds at most {most}",
        )
    if container in _WAV_FORMATS:
        shortfall = _wav_data_shortfall(data)
        if shortfall is not None:
            declared_bytes, present_bytes = shortfall
            raise AudioError(
                name,
                RejectReason.CORRUPT,
                f"truncated WAV: its data chunk declares {declared_bytes} bytes but the file holds {present_bytes}",
            )


def _read_blocks(f: sf.SoundFile) -> np.ndarray:
    """All frames of an open file -> f32[N, channels], read in blocks: memory grows with the audio
    actually decoded, never with what the header claims."""
    blocks = []
    while True:
        block = f.read(_BLOCK_FRAMES, dtype="float32", always_2d=True)
        if not len(block):
            break
        blocks.append(block)
    if not blocks:
        return np.zeros((0, f.channels), np.float32)
    return blocks[0] if len(blocks) == 1 else np.concatenate(blocks)


def _decode(data: bytes, name: str) -> tuple[np.ndarray, int]:
    """Encoded bytes -> (f32[N, channels], sample_rate), rejecting lying headers and truncated files."""
    try:
        with sf.SoundFile(io.BytesIO(data)) as f:
            container, subtype, declared_frames, sample_rate = f.format, f.subtype, f.frames, f.samplerate
            _check_header(name, data, container, subtype, declared_frames, sample_rate, f.channels)
            samples_NxC = _read_blocks(f)
    except sf.LibsndfileError as e:
        raise AudioError(
            name, _libsndfile_reason(e), f"libsndfile cannot decode it: {e.error_string.strip()}"
        ) from None
    except (RuntimeError, ValueError, TypeError, OverflowError) as e:
        raise AudioError(name, RejectReason.CORRUPT, f"decoding failed: {e}") from None
    if 0 < declared_frames < _SF_UNKNOWN_FRAMES and samples_NxC.shape[0] < declared_frames:
        raise AudioError(
            name,
            RejectReason.CORRUPT,
            f"truncated {container}: header declares {declared_frames} frames, decoded {samples_NxC.shape[0]}",
        )
    return samples_NxC, sample_rate


def _wav_data_shortfall(data: bytes) -> tuple[int, int] | None:
    """(declared, present) byte counts of a RIFF/WAVE data chunk cut short, else None."""
    if data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        return None
    pos = 12
    while pos + 8 <= len(data):
        chunk_id = data[pos : pos + 4]
        size = int.from_bytes(data[pos + 4 : pos + 8], "little")
        if chunk_id == b"data":
            present = len(data) - (pos + 8)
            if size == _RIFF_UNKNOWN_SIZE or (size == 0 and present > 0):
                return None  # streaming writer: length unknown, libsndfile reads to the end
            return (size, present) if size > present else None
        pos += 8 + size + (size & 1)  # chunks are padded to an even size
    return None


def _finish(
    samples_NxC: np.ndarray,
    sample_rate: int,
    name: str,
    target_sample_rate: int,
    expected_duration: float | None,
    duration_tolerance: float,
    max_seconds: float | None,
    over_length: OverLength,
) -> np.ndarray | list[np.ndarray]:
    """Validates f32[N, channels] at ``sample_rate``; returns mono f32[N'] at the target rate."""
    num_samples = samples_NxC.shape[0]
    if num_samples == 0 or samples_NxC.shape[1] == 0:
        raise AudioError(name, RejectReason.EMPTY, "no audio samples")
    if not np.isfinite(samples_NxC).all():
        bad = int(np.size(samples_NxC) - np.count_nonzero(np.isfinite(samples_NxC)))
        raise AudioError(name, RejectReason.NON_FINITE, f"{bad} of {samples_NxC.size} samples are NaN or infinite")
    seconds = num_samples / sample_rate
    if expected_duration is not None and abs(seconds - expected_duration) > duration_tolerance:
        raise AudioError(
            name,
            RejectReason.DURATION_MISMATCH,
            f"decoded {seconds:.3f} s but the manifest says {expected_duration:.3f} s (tolerance {duration_tolerance:.3f} s)",
        )
    if max_seconds is not None and seconds > max_seconds and over_length == "reject":
        raise AudioError(name, RejectReason.TOO_LONG, f"{seconds:.3f} s is over the maximum of {max_seconds:.3f} s")
    mono_N = samples_NxC.mean(axis=1) if samples_NxC.shape[1] > 1 else samples_NxC[:, 0]
    if sample_rate != target_sample_rate:
        mono_N = soxr.resample(mono_N, sample_rate, target_sample_rate, quality="HQ")
    mono_N = np.ascontiguousarray(mono_N, dtype=np.float32)
    if mono_N.size == 0:
        raise AudioError(
            name,
            RejectReason.EMPTY,
            f"{num_samples} samples at {sample_rate} Hz are no sample at {target_sample_rate} Hz",
        )
    if over_length == "chunk":
        chunk = max(1, int(round(max_seconds * target_sample_rate)))
        return [mono_N[start : start + chunk] for start in range(0, len(mono_N), chunk)]
    return mono_N
