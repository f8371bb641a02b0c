"""The Grain input pipeline: source -> plan -> decode/validate -> log-mel -> tokens -> padded Batch.

    pipeline = DataPipeline(ManifestSource("train.jsonl"), PipelineConfig(...), tokenize=my_tokenize)
    iterator = iter(pipeline)              # or pipeline.iterator(saved_state)
    host_batch = next(iterator)            # HostBatch: numpy Batch + metadata + rejects
    state = iterator.get_state()           # JSON-serialisable; store it in the checkpoint

Grain runs the steps: ``MapDataset.range(steps).map(StepLoader)`` read by ``read_threads`` threads
and, with ``num_workers > 0``, by that many worker processes (``mp_prefetch``). Every step is a pure
function of its index (see ``batching.BatchPlan``), so the iterator state is just the next step
and the quality counters. Two consequences:

- resume is exactly-once and needs no Grain worker state, so unlike Grain's ``DataLoader`` (which
  refuses a state saved with a different worker count) a state restores under any ``num_workers``;
- the state is tied to the plan (dataset, buckets, batch sizes, seed, host count): restoring into a
  pipeline that plans differently raises instead of silently replaying other examples.

Worker processes are started with ``spawn``: scripts that use ``num_workers > 0`` need the usual
``if __name__ == "__main__":`` guard, and ``source`` and ``tokenize`` must be picklable (module-level
functions or objects, not lambdas or closures over open files).
"""

from __future__ import annotations

import functools
import hashlib
import json
import sys
from typing import Iterator

import grain
import jax
import numpy as np

from jaxspeech.data import batching
from jaxspeech.data.pipeline_config import PipelineConfig
from jaxspeech.data.quality import QualityCounters
from jaxspeech.data.sources import source_durations
from jaxspeech.data.step_loader import StepLoader, Tokenize, limit_blas_threads
from jaxspeech.features import mel
from jaxspeech.types import Batch, BatchShape, HostBatch

__all__ = ["DataPipeline", "PipelineConfig", "PipelineIterator", "Tokenize"]

STATE_VERSION = 1


def _ensure_absl_flags_parsed() -> None:
    """Grain's worker processes read absl flags; outside an absl app nobody parses them, so their
    defaults are taken (this does not touch ``sys.argv`` or argparse)."""
    from absl import flags

    if not flags.FLAGS.is_parsed():
        flags.FLAGS.mark_as_parsed()


class DataPipeline:
    """Bucketed, sharded, checkpointable batches of one host's share of ``source``.

    ``process_index``/``process_count`` default to ``jax.process_index()``/``jax.process_count()``.
    ``tokenize(record, frames_per_clip)`` adds tokens and a loss mask (None: pure audio, L = 0).
    """

    def __init__(
        self,
        source,
        config: PipelineConfig,
        *,
        tokenize: Tokenize | None = None,
        process_index: int | None = None,
        process_count: int | None = None,
    ):
        process_index = jax.process_index() if process_index is None else process_index
        process_count = jax.process_count() if process_count is None else process_count
        self.source, self.config, self.tokenize = source, config, tokenize
        self.process_index, self.process_count = process_index, process_count
        rows = config.bucket_rows or batching.rows_per_bucket(
            config.bucket_frames, config.clips_per_row, config.frame_budget, config.batch_size_multiple
        )
        durations = source_durations(source)
        frames = batching.frames_for_durations(durations, config.sample_rate)
        self.plan = batching.BatchPlan(
            frames,
            config.bucket_frames,
            rows,
            clips_per_row=config.clips_per_row,
            max_tokens=config.max_tokens,
            token_lengths=self._planned_token_lengths(durations, frames),
            seed=config.seed,
            shuffle=config.shuffle,
            drop_remainder=config.drop_remainder,
            num_epochs=config.num_epochs,
            process_index=process_index,
            process_count=process_count,
        )
        self.loader = StepLoader(source, self.plan, config, tokenize)
        self.fingerprint = self._fingerprint()

    def _planned_token_lengths(self, durations: np.ndarray, frames: np.ndarray) -> np.ndarray | None:
        """Token counts that packing plans with (only needed for buckets with several clips per row).

        Each example is tokenized for the longest audio its duration check admits (capped at its
        bucket), so with a tokenizer whose length grows with the audio the decoded example never
        needs more tokens than planned.
        """
        config = self.config
        if self.tokenize is None or max(config.clips_per_row) == 1:
            return None
        buckets = batching.assign_buckets(frames, config.bucket_frames)
        longest = batching.frames_for_durations(durations + config.duration_tolerance, config.sample_rate)
        lengths = np.zeros(len(frames), np.int64)
        for i in np.flatnonzero(buckets >= 0):
            if config.clips_per_row[buckets[i]] > 1:
                admitted = int(min(longest[i], config.bucket_frames[buckets[i]]))
                lengths[i] = len(self.tokenize(self.source[i], (admitted,)).tokens)
        return lengths

    @property
    def steps_per_epoch(self) -> int:
        return self.plan.steps_per_epoch

    def batch_shapes(self) -> list[BatchShape]:
        """The static host-batch shape of each bucket (compile these ahead of time)."""
        config = self.config
        shapes = []
        for bucket in range(len(config.bucket_frames)):
            shape = self.loader.bucket_shape(bucket)
            audio_samples = 0 if config.compute_features_on_host else shape.frames * mel.HOP_LENGTH
            shapes.append(BatchShape(shape.rows, shape.clips, shape.frames, shape.tokens, config.n_mels, audio_samples))
        return shapes

    def _fingerprint(self) -> str:
        plan = self.plan
        described = {
            "examples": len(self.source),
            "rows": [hashlib.sha256(rows.tobytes()).hexdigest() for rows in plan.rows],
            "rows_per_batch": plan.rows_per_batch,
            "seed": plan.seed,
            "shuffle": plan.shuffle,
            "drop_remainder": plan.drop_remainder,
            "process": [self.process_index, self.process_count],
        }
        return hashlib.sha256(json.dumps(described, sort_keys=True).encode()).hexdigest()[:16]

    def grain_dataset(self, start_step: int = 0) -> grain.IterDataset:
        """The Grain dataset of host-batch payloads from ``start_step`` on."""
        stop = self.plan.num_steps if self.plan.num_steps is not None else sys.maxsize
        steps = grain.MapDataset.range(start_step, max(start_step, stop)).map(self.loader)
        dataset = steps.to_iter_dataset(
            grain.ReadOptions(num_threads=self.config.read_threads, prefetch_buffer_size=self.config.prefetch)
        )
        if self.config.num_workers > 0:
            _ensure_absl_flags_parsed()
            threads = self.config.worker_blas_threads
            dataset = dataset.mp_prefetch(
                grain.MultiprocessingOptions(
                    num_workers=self.config.num_workers, per_worker_buffer_size=self.config.prefetch
                ),
                worker_init_fn=None if threads is None else functools.partial(limit_blas_threads, threads),
            )
        return dataset

    def iterator(self, state: dict | None = None) -> "PipelineIterator":
        iterator = PipelineIterator(self)
        if state is not None:
            iterator.set_state(state)
        return iterator

    def __iter__(self) -> "PipelineIterator":
        return self.iterator()


class PipelineIterator(Iterator[HostBatch]):
    """Yields ``HostBatch``es; ``get_state``/``set_state`` give exactly-once resume; ``stats`` the counters."""

    def __init__(self, pipeline: DataPipeline):
        self.pipeline = pipeline
        self.counters = QualityCounters()
        self._next_step = 0
        self._grain_iterator = None

    def __next__(self) -> HostBatch:
        if self._grain_iterator is None:
            self._grain_iterator = iter(self.pipeline.grain_dataset(self._next_step))
        payload = next(self._grain_iterator)
        self._next_step = payload["step"] + 1
        # Worker outputs arrive in shared memory; plain copies free it now rather than at exit.
        batch = Batch(**{k: None if v is None else np.array(v) for k, v in payload["arrays"].items()})
        self.counters.add(len(payload["metadata"]), payload["rejects"])
        config = self.pipeline.config
        self.counters.check(config.max_bad_fraction, config.min_examples_for_bad_check)
        return HostBatch(
            batch=batch,
            metadata=tuple(payload["metadata"]),
            rejects=tuple(payload["rejects"]),
            step=payload["step"],
            epoch=payload["epoch"],
            bucket=payload["bucket"],
        )

    @property
    def stats(self) -> dict:
        """JSON-friendly counters: next step, examples seen/delivered, rejects per reason (+ a few paths)."""
        return {"next_step": self._next_step, **self.counters.to_dict()}

    def get_state(self) -> dict:
        return {
            "version": STATE_VERSION,
            "fingerprint": self.pipeline.fingerprint,
            "next_step": self._next_step,
            "counters": self.counters.to_dict(),
        }

    def set_state(self, state: dict) -> None:
        if state.get("version") != STATE_VERSION:
            raise ValueError(
                f"pipeline state version {state.get('version')!r}; this code reads version {STATE_VERSION}"
            )
        if state["fingerprint"] != self.pipeline.fingerprint:
            raise ValueError(
                f"pipeline state was saved by a pipeline with a different plan (fingerprint {state['fingerprint']}, "
                f"this one {self.pipeline.fingerprint}): the dataset, buckets, batch sizes, seed, shuffle or host "
                "count changed, so the saved position does not name the same examples"
            )
        self.close()
        self._next_step = int(state["next_step"])
        self.counters = QualityCounters.from_dict(state["counters"])

    def close(self) -> None:
        """Stops worker processes (also done on garbage collection, but not promptly)."""
        if self._grain_iterator is not None and hasattr(self._grain_iterator, "close"):
            self._grain_iterator.close()
        self._grain_iterator = None

    def __enter__(self) -> "PipelineIterator":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
