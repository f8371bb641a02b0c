"""``PipelineConfig``: the knobs of the input pipeline, in a module that worker processes import
without flax or any model code."""

from __future__ import annotations

import dataclasses

from jaxspeech.features import mel


@dataclasses.dataclass(frozen=True)
class PipelineConfig:
    """Knobs of the input pipeline (per host unless said otherwise).

    bucket_frames: fixed, increasing log-mel frame lengths (100 frames = 1 s); one batch shape each.
    frame_budget: padded frames (rows x clips x bucket frames) per host batch; sets rows per bucket.
    bucket_rows: rows per host batch for each bucket, overriding frame_budget (``jaxspeech plan``
      chooses them: ``jaxspeech train --plan plan.json`` sets them).
    max_tokens: token length L of each bucket (one int for all, or one per bucket); unused (L = 0)
      without a tokenizer. An example with more tokens is rejected, never truncated.
    clips_per_row: clip slots per row (one int or one per bucket); > 1 packs short examples.
    batch_size_multiple: rows per bucket are rounded to a multiple of this (the number of local
      devices on the batch mesh axes, so host batches shard evenly).
    max_bad_fraction / min_examples_for_bad_check: stop when more than this fraction of the
      examples seen so far (once at least that many were seen) were rejected.
    read_threads / num_workers / prefetch: threads per process, worker processes (0 = none) and
      batches buffered per process.
    worker_blas_threads: BLAS threads (numpy matmuls of the log-mel) in each worker process, so
      that workers do not oversubscribe the cores (None: leave the library default; needs
      threadpoolctl, without it this is a no-op).
    """

    bucket_frames: tuple[int, ...] = (500, 1000, 1500, 3000)
    frame_budget: int = 24_000
    bucket_rows: tuple[int, ...] | None = None
    max_tokens: int | tuple[int, ...] = 256
    clips_per_row: int | tuple[int, ...] = 1
    batch_size_multiple: int = 1
    drop_remainder: bool = False
    seed: int = 0
    shuffle: bool = True
    num_epochs: int | None = None
    num_workers: int = 0
    read_threads: int = 1
    prefetch: int = 2
    worker_blas_threads: int | None = 1
    sample_rate: int = mel.SAMPLE_RATE
    n_mels: int = 80
    compute_features_on_host: bool = True
    duration_tolerance: float = 0.025
    max_bad_fraction: float = 0.05
    min_examples_for_bad_check: int = 100
    pad_token_id: int = 0

    def __post_init__(self):
        buckets = tuple(int(b) for b in self.bucket_frames)
        if not buckets or any(b <= 0 for b in buckets) or any(a >= b for a, b in zip(buckets, buckets[1:])):
            raise ValueError(f"bucket_frames must be positive and strictly increasing, got {self.bucket_frames}")
        object.__setattr__(self, "bucket_frames", buckets)
        for name in ("max_tokens", "clips_per_row"):
            value = getattr(self, name)
            per_bucket = (value,) * len(buckets) if isinstance(value, int) else tuple(int(v) for v in value)
            if len(per_bucket) != len(buckets):
                raise ValueError(f"{name} has {len(per_bucket)} entries for {len(buckets)} buckets")
            object.__setattr__(self, name, per_bucket)
        if self.bucket_rows is not None:
            rows = tuple(int(r) for r in self.bucket_rows)
            if len(rows) != len(buckets) or any(r < 1 for r in rows):
                raise ValueError(
                    f"bucket_rows {self.bucket_rows} must hold one positive row count per bucket "
                    f"({len(buckets)} buckets)"
                )
            object.__setattr__(self, "bucket_rows", rows)
        if any(t < 0 for t in self.max_tokens) or any(c < 1 for c in self.clips_per_row):
            raise ValueError(
                f"max_tokens must be >= 0 and clips_per_row >= 1, got {self.max_tokens}, {self.clips_per_row}"
            )
        if self.frame_budget <= 0 or self.batch_size_multiple < 1:
            raise ValueError("frame_budget and batch_size_multiple must be positive")
        if self.sample_rate != mel.SAMPLE_RATE:
            raise ValueError(
                f"the log-mel front end needs {mel.SAMPLE_RATE} Hz audio, got sample_rate={self.sample_rate}"
            )
        if not 0.0 <= self.max_bad_fraction <= 1.0:
            raise ValueError(f"max_bad_fraction must be in [0, 1], got {self.max_bad_fraction}")
        if self.num_workers < 0 or self.read_threads < 0 or self.prefetch < 1:
            raise ValueError("num_workers and read_threads must be >= 0, prefetch >= 1")
        if self.num_epochs is not None and self.num_epochs < 1:
            raise ValueError(f"num_epochs must be >= 1 or None (forever), got {self.num_epochs}")
