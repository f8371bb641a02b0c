"""Tiny synthetic audio datasets for the data-pipeline tests (no speech synthesis needed)."""

from __future__ import annotations

import dataclasses
import json
import os

import numpy as np
import soundfile as sf

SAMPLE_RATE = 16000


def tone(seconds: float, sample_rate: int = SAMPLE_RATE, channels: int = 1, seed: int = 0) -> np.ndarray:
    """f32[N] or f32[N, channels]: a chirp plus a little noise, different per channel."""
    rng = np.random.default_rng(seed)
    n = int(round(seconds * sample_rate))
    t = np.arange(n) / sample_rate
    columns = [
        0.3 * np.sin(2 * np.pi * (200 + 150 * c + 300 * t) * t) + 0.01 * rng.standard_normal(n) for c in range(channels)
    ]
    audio = np.stack(columns, axis=1).astype(np.float32)
    return audio[:, 0] if channels == 1 else audio


def write_clip(
    path: str, seconds: float, sample_rate: int = SAMPLE_RATE, channels: int = 1, seed: int = 0, **kwargs
) -> float:
    """Writes a clip (format from the extension) and returns its exact duration in seconds."""
    audio = tone(seconds, sample_rate, channels, seed)
    sf.write(path, audio, sample_rate, **kwargs)
    return audio.shape[0] / sample_rate


def write_manifest(path: str, entries: list[dict]) -> str:
    with open(path, "w", encoding="utf-8") as f:
        for entry in entries:
            f.write(json.dumps(entry) + "\n")
    return path


@dataclasses.dataclass(frozen=True)
class ToyEncoded:
    """The shape of ``jaxspeech.data.prompts.EncodedExample`` that the pipeline reads."""

    tokens: np.ndarray
    loss_mask: np.ndarray


def toy_tokenize(record: dict, frames_per_clip) -> ToyEncoded:
    """bos, one placeholder (id 3) per 4 frames, the text's bytes (ids 10..265), eos; loss on the text + eos."""
    placeholders = [3] * sum(-(-f // 4) for f in frames_per_clip)
    text = [10 + b for b in record["text"].encode("utf-8")]
    tokens = np.asarray([1] + placeholders + text + [2], np.int32)
    loss_mask = np.asarray([0] * (1 + len(placeholders)) + [1] * (len(text) + 1), np.float32)
    return ToyEncoded(tokens, loss_mask)


def make_dataset(
    folder: str, count: int, *, seed: int = 0, min_s: float = 0.2, max_s: float = 1.9, name: str = "train"
) -> str:
    """``count`` FLAC clips of random durations and a manifest with relative paths; returns the manifest."""
    os.makedirs(os.path.join(folder, "audio"), exist_ok=True)
    rng = np.random.default_rng(seed)
    entries = []
    for i in range(count):
        seconds = float(rng.uniform(min_s, max_s))
        relative = os.path.join("audio", f"{name}_{i:04d}.flac")
        duration = write_clip(os.path.join(folder, relative), seconds, seed=seed * 10_000 + i)
        entries.append(
            {"id": f"{name}-{i}", "audio_filepath": relative, "duration": duration, "text": f"utterance {i}"}
        )
    return write_manifest(os.path.join(folder, f"{name}.jsonl"), entries)
