"""Duration bucketing into a fixed list of shapes, the per-epoch batch plan, packing and padding.

The plan is made from manifest durations alone, before any audio is decoded: every example goes to
the smallest bucket whose frame length holds it and becomes a row of that bucket (buckets with
several clips per row pack examples into rows once, by token count); each bucket's rows are
shuffled per epoch and cut into batches of that bucket's fixed row count, and the batches of all
buckets are shuffled together.
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

from jaxspeech.errors import RejectReason
from jaxspeech.features import mel


# Manifests round durations (the corpus builder to 0.1 ms); half of that is the most a rounded
# duration can under-state its audio, so bucketing counts it in.
MANIFEST_DURATION_PRECISION_S = 5e-5


def frames_for_durations(durations_s: np.ndarray, sample_rate: int = mel.SAMPLE_RATE) -> np.ndarray:
    """i64[N] log-mel frames of the longest audio each (rounded) duration can stand for; -1 if unknown."""
    durations_s = np.asarray(durations_s, dtype=np.float64)
    known = np.isfinite(durations_s) & (durations_s >= 0)
    seconds = np.where(known, durations_s, 0.0) + MANIFEST_DURATION_PRECISION_S
    samples = np.floor(seconds * sample_rate).astype(np.int64)
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


def pack_rows(example_ids: Sequence[int], token_lengths: np.ndarray, clips: int, max_tokens: int) -> np.ndarray:
    """i64[rows, clips] (-1 = empty slot): examples grouped into rows of at most ``clips`` examples
    and ``max_tokens`` tokens. Each row starts with the longest example left and is topped up with
    the shortest ones that fit (deterministic; the same rows every epoch, in a new order)."""
    order = sorted((int(i) for i in example_ids), key=lambda i: (-int(token_lengths[i]), i))
    rows = []
    low, high = 0, len(order) - 1
    while low <= high:
        row = [order[low]]
        used = int(token_lengths[order[low]])
        low += 1
        while len(row) < clips and low <= high and used + int(token_lengths[order[high]]) <= max_tokens:
            row.append(order[high])
            used += int(token_lengths[order[high]])
            high -= 1
        rows.append(row + [-1] * (clips - len(row)))
    return np.asarray(rows, dtype=np.int64).reshape(len(rows), clips)


@dataclasses.dataclass(frozen=True)
class PlannedStep:
    """One host's share of one global batch: the examples of each row, in which bucket shape.

    ``rows`` has at most the bucket's row count entries, each 1..clips example ids (clip order).
    ``plan_rejects`` are examples this host reports as rejected by planning (too long, unknown
    duration, too many tokens to pack): each epoch's are attached to its first step, split across
    hosts.
    """

    step: int
    epoch: int
    bucket: int
    rows: tuple[tuple[int, ...], ...]
    plan_rejects: tuple[tuple[int, RejectReason, str], ...] = ()

    @property
    def example_ids(self) -> tuple[int, ...]:
        return tuple(i for row in self.rows for i in row)


class BatchPlan:
    """Deterministic assignment of examples to rows and steps, identical on every host.

    ``rows_per_batch[b]`` is a host's row count in bucket ``b``; a global batch holds
    ``process_count`` times as many rows. Buckets with ``clips_per_row[b] > 1`` pack examples into
    rows once, by ``token_lengths`` (upper bounds, i64[N]) within ``max_tokens[b]``; other buckets
    hold one example per row. Partial last batches of a bucket are kept (and padded) unless
    ``drop_remainder``. ``num_epochs=None`` repeats forever.
    """

    def __init__(
        self,
        frames: np.ndarray,
        bucket_frames: Sequence[int],
        rows_per_batch: Sequence[int],
        *,
        seed: int,
        shuffle: bool,
        clips_per_row: Sequence[int] | None = None,
        max_tokens: Sequence[int] | None = None,
        token_lengths: np.ndarray | None = None,
        drop_remainder: bool = False,
        num_epochs: int | None = None,
        process_index: int = 0,
        process_count: int = 1,
    ):
        num_buckets = len(bucket_frames)
        clips_per_row = tuple(clips_per_row or (1,) * num_buckets)
        if not 0 <= process_index < process_count:
            raise ValueError(f"process_index {process_index} is not in [0, {process_count})")
        if len(rows_per_batch) != num_buckets or len(clips_per_row) != num_buckets:
            raise ValueError(
                f"{len(rows_per_batch)} row counts and {len(clips_per_row)} clip counts for {num_buckets} buckets"
            )
        self.seed, self.shuffle, self.drop_remainder, self.num_epochs = seed, shuffle, drop_remainder, num_epochs
        self.process_index, self.process_count = process_index, process_count
        self.rows_per_batch = tuple(int(n) for n in rows_per_batch)
        frames = np.asarray(frames)
        token_lengths = np.zeros(len(frames), np.int64) if token_lengths is None else np.asarray(token_lengths)
        self.bucket_ids = assign_buckets(frames, bucket_frames)
        rejects = [
            (int(i), RejectReason.UNREADABLE, "duration unknown (its header could not be read)")
            if frames[i] < 0
            else (
                int(i),
                RejectReason.TOO_LONG,
                f"{int(frames[i])} frames, longer than the largest bucket ({bucket_frames[-1]})",
            )
            for i in np.flatnonzero(self.bucket_ids < 0)
        ]
        self.rows: list[np.ndarray] = []  # per bucket: i64[rows, clips], -1 = empty slot
        for bucket, clips in enumerate(clips_per_row):
            members = np.flatnonzero(self.bucket_ids == bucket)
            if clips == 1:
                self.rows.append(members.astype(np.int64)[:, None])
                continue
            limit = max_tokens[bucket]
            fits = token_lengths[members] <= limit
            rejects += [
                (int(i), RejectReason.TOO_MANY_TOKENS, f"{int(token_lengths[i])} tokens, over the bucket's {limit}")
                for i in members[~fits]
            ]
            self.rows.append(pack_rows(members[fits], token_lengths, clips, limit))
        self.plan_rejects = tuple(sorted(rejects))
        rounding = math.floor if drop_remainder else math.ceil
        self.steps_per_epoch = sum(
            rounding(len(r) / (n * process_count)) for r, n in zip(self.rows, self.rows_per_batch)
        )
        if self.steps_per_epoch == 0:
            raise ValueError(
                f"no batch can be formed: {len(frames)} examples, {len(self.plan_rejects)} rejected by planning, "
                f"rows per bucket {[len(r) for r in self.rows]}, global batch rows "
                f"{[n * process_count for n in self.rows_per_batch]} (drop_remainder={drop_remainder})"
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
        """Global batches of ``epoch`` in order: (bucket, i64[rows, clips] example ids, -1 = empty)."""
        with self._lock:
            if self._cached is not None and self._cached[0] == epoch:
                return self._cached[1]
        rng = np.random.default_rng([self.seed, epoch])
        batches = []
        for bucket, rows in enumerate(self.rows):
            order = rows[rng.permutation(len(rows))] if self.shuffle else rows
            size = self.rows_per_batch[bucket] * self.process_count
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
        bucket, global_rows = self.epoch_batches(epoch)[within]
        share = self.rows_per_batch[bucket]
        mine = global_rows[self.process_index * share : (self.process_index + 1) * share]
        rows = tuple(tuple(int(i) for i in row if i >= 0) for row in mine)
        rejects = self.plan_rejects[self.process_index :: self.process_count] if within == 0 else ()
        return PlannedStep(step, epoch, bucket, rows, rejects)


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
    padded to ``frames`` with the clip's Whisper silence value); otherwise the waveform is carried as
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
    token_fill = [0] * rows
    for example, (row, clip) in zip(examples, placements):
        out["feature_lengths"][row, clip] = example.frames
        out["example_ids"][row, clip] = example.example_id
        out["weights"][row] = 1.0
        if features_on_host:
            # Per clip, so no time goes into padding frames; their value is Whisper's silence.
            out["features"][row, clip] = mel.pad_or_trim(mel.log_mel_spectrogram(example.audio, n_mels), frames)
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
