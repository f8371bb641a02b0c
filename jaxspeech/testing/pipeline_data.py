"""A tiny on-disk speech dataset read through the project's real Grain pipeline
(``jaxspeech.data.pipeline.DataPipeline``), and the tiny task over its ``Batch``."""

from __future__ import annotations

import dataclasses
import json
import os

import numpy as np
import soundfile as sf

from jaxspeech.data.pipeline import DataPipeline, PipelineConfig
from jaxspeech.data.sources import ManifestSource

from jaxspeech.testing.tiny_task import TinyConfig, TinyTask

SAMPLE_RATE = 16000
PIPELINE_CONFIG = PipelineConfig(bucket_frames=(100,), frame_budget=800, max_tokens=32, n_mels=80, seed=0)
BATCH_TASK_CONFIG = TinyConfig(feature_dim=80)


def write_dataset(folder: str, count: int = 24, seed: int = 0) -> str:
    """``count`` WAV clips (0.3-0.9 s tones + noise) and their JSONL manifest; returns its path."""
    rng = np.random.default_rng(seed)
    os.makedirs(os.path.join(folder, "audio"), exist_ok=True)
    lines = []
    for i in range(count):
        samples = int(rng.uniform(0.3, 0.9) * SAMPLE_RATE)
        t = np.arange(samples) / SAMPLE_RATE
        audio = 0.3 * np.sin(2 * np.pi * (150 + 40 * i) * t) + 0.01 * rng.standard_normal(samples)
        relative = os.path.join("audio", f"{i:03d}.wav")
        sf.write(os.path.join(folder, relative), audio.astype(np.float32), SAMPLE_RATE)
        lines.append(
            json.dumps(
                {"id": f"utt{i}", "audio_filepath": relative, "duration": samples / SAMPLE_RATE, "text": f"say {i}"}
            )
        )
    path = os.path.join(folder, "train.jsonl")
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    return path


@dataclasses.dataclass(frozen=True)
class Encoded:
    tokens: np.ndarray
    loss_mask: np.ndarray


def tokenize(record: dict, frames_per_clip) -> Encoded:
    """bos (1), the text's bytes mapped into [4, 32), eos (2); the loss covers text and eos."""
    text = [4 + b % 28 for b in record["text"].encode("utf-8")]
    tokens = np.asarray([1] + text + [2], np.int32)
    return Encoded(tokens, np.asarray([0] + [1] * (len(text) + 1), np.float32))


def pipeline_iterator(manifest: str):
    """The pipeline's checkpointable iterator of ``HostBatch``es (8 rows of 1 s, 32 tokens)."""
    pipeline = DataPipeline(
        ManifestSource(manifest), PIPELINE_CONFIG, tokenize=tokenize, process_index=0, process_count=1
    )
    return pipeline.iterator()


@dataclasses.dataclass(frozen=True)
class BatchTinyTask(TinyTask):
    """``TinyTask`` over ``jaxspeech.types.Batch``: the clips of a row form the audio prefix."""

    config: TinyConfig = BATCH_TASK_CONFIG

    @staticmethod
    def _as_dict(batch) -> dict:
        rows, clips, frames, mels = batch.features.shape
        return {
            "features": batch.features.reshape(rows, clips * frames, mels),
            "tokens": batch.tokens,
            "loss_mask": batch.loss_mask,
        }

    def init_params(self, rng, batch):
        return super().init_params(rng, self._as_dict(batch))

    def loss(self, params, batch, rng, *, train: bool):
        return super().loss(params, self._as_dict(batch), rng, train=train)

    def throughput_counts(self, batch):
        return {
            "examples": float(np.sum(batch.example_ids >= 0)),
            "tokens": float(np.sum(batch.loss_mask)),
            "audio_seconds": float(np.sum(batch.feature_lengths)) / 100.0,
        }
