"""Duration bucketing into a fixed list of shapes, the per-epoch batch plan, packing and padding.

The plan is made from manifest durations alone, before any audio is decoded: every example goes to
the smallest bucket whose frame length holds it, each bucket's members are shuffled per epoch and
cut into batches of that bucket's fixed size, and the batches of all buckets are shuffled together.
The plan is *global* (the same on every host, for a given seed): each global batch is split into
equal host slices, so all hosts run the same bucket shape at the same step and together cover the
dataset exactly once per epoch. Since the whole plan is a pure function of (seed, epoch), a stream
position is one integer, which is what makes resuming exact and cheap.
"""

from __future__ import annotations

import dataclasses
import math
import threading
from typing import Sequence

import numpy as np

from jaxspeech.data.errors import RejectReason
from jaxspeech.features import mel


def frames_for_durations(durations_s: np.ndarray, sample_rate: int = mel.SAMPLE_RATE) -> np.ndarray:
    """i64[N] valid log-mel frames of each duration (-1 where the duration is unknown)."""
    durations_s = np.asarray(durations_s, dtype=np.float64)
    known = np.isfinite(durations_s) & (durations_s >= 0)
    samples = np.round(np.where(known, durations_s, 0.0) * sample_rate).astype(np.int64)
    return np.where(known, mel.num_frames(samples), -1)


def assign_buckets(frames: np.ndarray, bucket_frames: Sequence[int]) -> np.ndarray:
    """i32[N]: index of the smallest bucket holding each example; -1 if too long or unknown."""
    frames = np.asarray(frames)
    index = np.searchsorted(np.asarray(bucket_frames), frames, side="left")
    return np.where((frames < 0) | (index >= len(bucket_frames)), -1, index).astype(np.int32)


def rows_per_bucket(
    bucket_frames: Sequence[int], clips_per_row: Sequence[int], frame_budget: int, multiple: int = 1
) -> tuple[int, ...]:
    """Rows per host batch: as many as fit ``frame_budget`` padded frames (rows x clips x frames),
    rounded down to a multiple of ``multiple`` (at least ``multiple``)."""
    rows = []
    for frames, clips in zip(bucket_frames, clips_per_row):
        fit = frame_budget // (frames * clips)
        rows.append(max(multiple, fit // multiple * multiple))
    return tuple(rows)


@dataclasses.dataclass(frozen=True)
class PlannedStep:
    """One host's share of one global batch: which examples to load, in which bucket shape.

    ``plan_rejects`` are examples this host reports as rejected by planning (too long, unknown
    duration): each epoch's are attached to its first step, split across hosts.
    """

    step: int
    epoch: int
    bucket: int
    example_ids: tuple[int, ...]
    plan_rejects: tuple[tuple[int, RejectReason, str], ...] = ()


class BatchPlan:
    """Deterministic assignment of examples to steps, identical on every host.

    ``examples_per_batch[b]`` is a host's batch capacity in bucket ``b`` (rows x clips); a global
    batch holds ``process_count`` times that. Partial last batches of a bucket are kept (and padded)
    unless ``drop_remainder``. ``num_epochs=None`` repeats forever.
    """

    def __init__(
        self,
        frames: np.ndarray,
        bucket_frames: Sequence[int],
        examples_per_batch: Sequence[int],
        *,
        seed: int,
        shuffle: bool,
        drop_remainder: bool = False,
        num_epochs: int | None = None,
        process_index: int = 0,
        process_count: int = 1,
    ):
        if not 0 <= process_index < process_count:
            raise ValueError(f"process_index {process_index} is not in [0, {process_count})")
        if len(examples_per_batch) != len(bucket_frames):
            raise ValueError(f"{len(examples_per_batch)} batch sizes for {len(bucket_frames)} buckets")
        self.seed, self.shuffle, self.drop_remainder, self.num_epochs = seed, shuffle, drop_remainder, num_epochs
        self.process_index, self.process_count = process_index, process_count
        self.examples_per_batch = tuple(int(n) for n in examples_per_batch)
        frames = np.asarray(frames)
        self.bucket_ids = assign_buckets(frames, bucket_frames)
        self.members = [np.flatnonzero(self.bucket_ids == b) for b in range(len(bucket_frames))]
        self.plan_rejects = tuple(
            (int(i), RejectReason.UNREADABLE, "duration unknown (its header could not be read)")
            if frames[i] < 0
            else (int(i), RejectReason.TOO_LONG, f"{int(frames[i])} frames, longer than the largest bucket ({bucket_frames[-1]})")
            for i in np.flatnonzero(self.bucket_ids < 0)
        )
        per_global = [n * process_count for n in self.examples_per_batch]
        rounding = math.floor if drop_remainder else math.ceil
        self.steps_per_epoch = sum(rounding(len(m) / n) for m, n in zip(self.members, per_global))
        if self.steps_per_epoch == 0:
            raise ValueError(
                f"no batch can be formed: {len(frames)} examples, {len(self.plan_rejects)} fit no bucket "
                f"{tuple(bucket_frames)}, bucket sizes {per_global} (drop_remainder={drop_remainder})"
            )
        self._lock = threading.Lock()
        self._cached: tuple[int, list[tuple[int, np.ndarray]]] | None = None

    def __getstate__(self) -> dict:
        # Worker processes receive the plan pickled; the lock and the epoch cache stay behind.
        state = dict(self.__dict__)
        del state["_lock"], state["_cached"]
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()
        self._cached = None

    @property
    def num_steps(self) -> int | None:
        return None if self.num_epochs is None else self.steps_per_epoch * self.num_epochs

    def epoch_batches(self, epoch: int) -> list[tuple[int, np.ndarray]]:
        """Global batches of ``epoch`` in order: (bucket, example ids)."""
        with self._lock:
            if self._cached is not None and self._cached[0] == epoch:
                return self._cached[1]
        rng = np.random.default_rng([self.seed, epoch])
        batches = []
        for bucket, members in enumerate(self.members):
            order = rng.permutation(members) if self.shuffle else members
            size = self.examples_per_batch[bucket] * self.process_count
            for start in range(0, len(order), size):
                chunk = order[start : start + size]
                if len(chunk) == size or not self.drop_remainder:
                    batches.append((bucket, chunk))
        if self.shuffle:
            batches = [batches[i] for i in rng.permutation(len(batches))]
        with self._lock:
            self._cached = (epoch, batches)
        return batches

    def step(self, step: int) -> PlannedStep:
        if step < 0 or (self.num_steps is not None and step >= self.num_steps):
            raise IndexError(f"step {step} is outside the plan ({self.num_steps} steps)")
        epoch, within = divmod(step, self.steps_per_epoch)
        bucket, global_ids = self.epoch_batches(epoch)[within]
        share = self.examples_per_batch[bucket]
        mine = global_ids[self.process_index * share : (self.process_index + 1) * share]
        rejects = self.plan_rejects[self.process_index :: self.process_count] if within == 0 else ()
        return PlannedStep(step, epoch, bucket, tuple(int(i) for i in mine), rejects)


def place_in_rows(token_lengths: Sequence[int], rows: int, clips: int, max_tokens: int) -> list[tuple[int, int] | None]:
    """First-fit packing in order: (row, clip) for each example, None where no row has room.

    A row takes up to ``clips`` examples whose token counts sum to at most ``max_tokens``.
    """
    used_clips = [0] * rows
    used_tokens = [0] * rows
    placements: list[tuple[int, int] | None] = []
    for length in token_lengths:
        for row in range(rows):
            if used_clips[row] < clips and used_tokens[row] + length <= max_tokens:
                placements.append((row, used_clips[row]))
                used_clips[row] += 1
                used_tokens[row] += length
                break
        else:
            placements.append(None)
    return placements


@dataclasses.dataclass(frozen=True)
class LoadedExample:
    """A decoded example: audio f32[N] at 16 kHz with ``frames`` = N // 160 valid frames;
    tokens i32[n] / loss_mask f32[n] (empty for pure-audio pipelines)."""

    example_id: int
    audio: np.ndarray
    frames: int
    tokens: np.ndarray
    loss_mask: np.ndarray


def assemble_arrays(
    examples: Sequence[LoadedExample],
    placements: Sequence[tuple[int, int]],
    *,
    rows: int,
    clips: int,
    frames: int,
    tokens: int,
    n_mels: int,
    features_on_host: bool,
    pad_token_id: int = 0,
) -> dict[str, np.ndarray | None]:
    """The numpy fields of a ``jaxspeech.types.Batch`` of static shape (rows, clips, frames, tokens).

    Features are computed here when ``features_on_host`` (from each clip's full audio, then
    padded to ``frames`` with Whisper's silence value); otherwise the waveform is carried as
    ``audio`` f32[rows, clips, frames * 160], which drops at most the sub-frame tail (< 160 samples)
    that no valid frame needs.
    """
    hop = mel.HOP_LENGTH
    out = {
        "features": np.zeros((rows, clips, frames, n_mels), np.float32) if features_on_host else None,
        "feature_lengths": np.zeros((rows, clips), np.int32),
        "tokens": np.full((rows, tokens), pad_token_id, np.int32),
        "loss_mask": np.zeros((rows, tokens), np.float32),
        "segment_ids": np.zeros((rows, tokens), np.int32),
        "positions": np.zeros((rows, tokens), np.int32),
        "example_ids": np.full((rows, clips), -1, np.int64),
        "weights": np.zeros((rows,), np.float32),
        "audio": None if features_on_host else np.zeros((rows, clips, frames * hop), np.float32),
    }
    if not examples:
        return out
    if features_on_host:
        buffer_NxS = np.zeros((len(examples), (frames + 1) * hop), np.float32)  # holds every sample of a clip
        for n, example in enumerate(examples):
            buffer_NxS[n, : len(example.audio)] = example.audio
        lengths = np.asarray([len(e.audio) for e in examples], np.int32)
        features_NxTxF = mel.log_mel_spectrogram(buffer_NxS, n_mels, lengths=lengths)[:, :frames]
    token_fill = [0] * rows
    for n, (example, (row, clip)) in enumerate(zip(examples, placements)):
        out["feature_lengths"][row, clip] = example.frames
        out["example_ids"][row, clip] = example.example_id
        out["weights"][row] = 1.0
        if features_on_host:
            out["features"][row, clip] = features_NxTxF[n]
        else:
            kept = example.audio[: frames * hop]
            out["audio"][row, clip, : len(kept)] = kept
        length = len(example.tokens)
        if length:
            start = token_fill[row]
            span = slice(start, start + length)
            out["tokens"][row, span] = example.tokens
            out["loss_mask"][row, span] = example.loss_mask
            out["loss_mask"][row, start] = 0.0  # nothing in the row predicts a segment's first token
            out["segment_ids"][row, span] = clip + 1
            out["positions"][row, span] = np.arange(length, dtype=np.int32)
            token_fill[row] = start + length
    return out
