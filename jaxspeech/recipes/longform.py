"""Whisper transcription of audio of any length: overlapping chunks, batched decoding, token merge.

Chunking: audio that fits one window (``2 * max_source_positions`` frames: 30 s for released
checkpoints) is one chunk. Longer audio is cut into windows of that length starting every
``window - 2 * stride`` samples, so consecutive chunks overlap by ``2 * stride`` (default: a sixth
of the window on each side, 5 s + 5 s, as the HF ASR pipeline). The last window ends at the end
of the audio. Every chunk is zero-padded to the full window before the log-mel, which is how
Whisper saw audio in training.

Merge rule (``merge_overlapping``): the tokens of consecutive chunks A and B both transcribe the
overlap. For every overlap size k (1 .. min(|A|, |B|)) we count the positions where A's last k
tokens equal B's first k; the k with the most matches wins (ties: the smaller k). With at least
``min_matches`` matches the overlap is split in the middle: A's tokens for its first half, B's
for the second half (each chunk is trusted away from its cut edge), i.e.
``A[:|A| - k + k // 2] + B[k // 2:]``. Without such an alignment the two are concatenated.
"""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxspeech.convert.hf_whisper import load_generation_config, load_hf_whisper
from jaxspeech.data.text import load_tokenizer
from jaxspeech.decoding.whisper import make_generate_fn
from jaxspeech.features.mel import HOP_LENGTH, log_mel_spectrogram


def chunk_windows(num_samples: int, window: int, stride: int) -> list[tuple[int, int]]:
    """[start, end) sample ranges covering ``num_samples``: one window if it fits, else windows of
    ``window`` samples every ``window - 2 * stride`` samples, the last one ending at ``num_samples``."""
    if window <= 0 or stride < 0 or window - 2 * stride <= 0:
        raise ValueError(f"need window > 2 * stride >= 0, got window={window}, stride={stride}")
    if num_samples <= window:
        return [(0, num_samples)]
    step = window - 2 * stride
    windows = []
    start = 0
    while start + window < num_samples:
        windows.append((start, start + window))
        start += step
    windows.append((num_samples - window, num_samples))
    return windows


def merge_overlapping(left: Sequence[int], right: Sequence[int], min_matches: int = 2) -> list[int]:
    """Joins the tokens of two overlapping chunks (see the module docstring for the rule)."""
    left, right = list(left), list(right)
    best_k, best_matches = 0, 0
    for k in range(1, min(len(left), len(right)) + 1):
        matches = sum(a == b for a, b in zip(left[len(left) - k :], right[:k]))
        if matches > best_matches:
            best_k, best_matches = k, matches
    if best_matches < min_matches:
        return left + right
    return left[: len(left) - best_k + best_k // 2] + right[best_k // 2 :]


def merge_chunks(chunks: Sequence[Sequence[int]], min_matches: int = 2) -> list[int]:
    """Folds ``merge_overlapping`` over the token lists of consecutive chunks."""
    merged: list[int] = []
    for i, tokens in enumerate(chunks):
        merged = list(tokens) if i == 0 else merge_overlapping(merged, tokens, min_matches)
    return merged


class WhisperTranscriber:
    """Transcribes 16-kHz mono waveforms with an HF Whisper directory (config.json, safetensors,
    generation_config.json, tokenizer.json).

    ``transcribe(audios)`` chunks long audio, decodes all chunks in batches of ``batch_size`` (a
    short last batch padded to a power of two rows) and returns one string per waveform.
    """

    def __init__(
        self,
        directory: str,
        *,
        language: str | None = "en",
        task: str = "transcribe",
        num_beams: int = 1,
        max_new_tokens: int = 224,
        batch_size: int = 8,
        stride_fraction: float = 1 / 6,
        **model_options,
    ):
        self.config, params = load_hf_whisper(directory, **model_options)
        self.params = jax.device_put(params)
        self.generation = load_generation_config(directory)
        self.tokenizer = load_tokenizer(directory)
        self.batch_size = batch_size
        self.window = self.config.encoder.max_frames * HOP_LENGTH
        self.stride = int(self.window * stride_fraction)
        self._generate = make_generate_fn(
            self.config,
            self.generation,
            language=language,
            task=task,
            num_beams=num_beams,
            max_new_tokens=max_new_tokens,
        )
        self._end_ids = {self.generation.eos_token_id, self.generation.pad_token_id}

    def _features(self, chunk: np.ndarray) -> np.ndarray:
        """f32[samples <= window] -> f32[frames, n_mels] of the chunk zero-padded to the window."""
        padded = np.zeros((self.window,), np.float32)
        padded[: len(chunk)] = chunk
        return log_mel_spectrogram(padded, self.config.encoder.n_mels)

    def decode_chunks(self, chunks: Sequence[np.ndarray]) -> list[list[int]]:
        """Token ids (end and padding tokens removed) of each chunk (f32[samples <= window])."""
        results: list[list[int]] = []
        frames = self.config.encoder.max_frames
        for begin in range(0, len(chunks), self.batch_size):
            group = chunks[begin : begin + self.batch_size]
            # A short last batch is padded to the next power of two rows (one program per size), and
            # the padding rows are inactive: they generate nothing and end no later than the real ones.
            rows = min(self.batch_size, 1 << (len(group) - 1).bit_length())
            features = np.zeros((rows, frames, self.config.encoder.n_mels), np.float32)
            for row, chunk in enumerate(group):
                features[row] = self._features(chunk)
            # Every chunk fills the window (zero audio past its end), as Whisper was trained: no lengths.
            active = jnp.arange(rows) < len(group)
            out = jax.device_get(self._generate(self.params, jnp.asarray(features), None, active))
            for row in range(len(group)):
                tokens = out.tokens[row, : out.lengths[row]].tolist()
                results.append([t for t in tokens if t not in self._end_ids])
        return results

    def transcribe_tokens(self, audios: Sequence[np.ndarray]) -> list[list[int]]:
        """Merged token ids per waveform."""
        spans, chunks = [], []
        for audio in audios:
            audio = np.asarray(audio, np.float32)
            if audio.ndim != 1:
                raise ValueError(f"expected mono f32[N] audio at 16 kHz, got shape {audio.shape}")
            windows = chunk_windows(len(audio), self.window, self.stride)
            spans.append((len(chunks), len(chunks) + len(windows)))
            chunks.extend(audio[start:end] for start, end in windows)
        decoded = self.decode_chunks(chunks)
        return [merge_chunks(decoded[first:last]) for first, last in spans]

    def transcribe(self, audios: Sequence[np.ndarray]) -> list[str]:
        """One transcript per 16-kHz mono waveform f32[N]."""
        return [self.tokenizer.decode(tokens).strip() for tokens in self.transcribe_tokens(audios)]
