"""The Grain input pipeline: source -> plan -> decode/validate -> log-mel -> tokens -> padded Batch.

    pipeline = DataPipeline(ManifestSource("train.jsonl"), PipelineConfig(...), tokenize=my_tokenize)
    iterator = iter(pipeline)              # or pipeline.iterator(saved_state)
    host_batch = next(iterator)            # HostBatch: numpy Batch + metadata + rejects
    state = iterator.get_state()           # JSON-serialisable; store it in the checkpoint

Grain runs the steps: ``MapDataset.range(steps).map(load_step)`` read by ``read_threads`` threads
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

import dataclasses
import hashlib
import json
import sys
from typing import Any, Callable, Iterator, Sequence

import grain
import numpy as np

from jaxspeech.data import batching
from jaxspeech.data.errors import AudioError, Reject, RejectReason
from jaxspeech.data.quality import QualityCounters
from jaxspeech.data.sources import decode_record, record_name, source_durations
from jaxspeech.features import mel
from jaxspeech.types import Batch, BatchShape, HostBatch

# tokenize(record, frames per clip) -> an object with ``tokens`` i32[n] and ``loss_mask`` f32[n]
# (``jaxspeech.data.prompts.EncodedExample`` fits).
Tokenize = Callable[[dict, Sequence[int]], Any]

STATE_VERSION = 1
METADATA_FIELDS = ("audio_filepath", "duration", "task", "prompt", "target", "language")


@dataclasses.dataclass(frozen=True)
class PipelineConfig:
    """Knobs of the input pipeline (per host unless said otherwise).

    bucket_frames: fixed, increasing log-mel frame lengths (100 frames = 1 s); one batch shape each.
    frame_budget: padded frames (rows x clips x bucket frames) per host batch; sets rows per bucket.
    max_tokens: token length L of each bucket (one int for all, or one per bucket); unused (L = 0)
      without a tokenizer. An example with more tokens is rejected, never truncated.
    clips_per_row: clip slots per row (one int or one per bucket); > 1 packs short examples.
    batch_size_multiple: rows per bucket are rounded to a multiple of this (the number of local
      devices on the batch mesh axes, so host batches shard evenly).
    max_bad_fraction / min_examples_for_bad_check: stop when more than this fraction of the
      examples seen so far (once at least that many were seen) were rejected.
    read_threads / num_workers / prefetch: threads per process, worker processes (0 = none) and
      batches buffered per process.
    """

    bucket_frames: tuple[int, ...] = (500, 1000, 1500, 3000)
    frame_budget: int = 24_000
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
        if any(t < 0 for t in self.max_tokens) or any(c < 1 for c in self.clips_per_row):
            raise ValueError(f"max_tokens must be >= 0 and clips_per_row >= 1, got {self.max_tokens}, {self.clips_per_row}")
        if self.frame_budget <= 0 or self.batch_size_multiple < 1:
            raise ValueError("frame_budget and batch_size_multiple must be positive")
        if self.sample_rate != mel.SAMPLE_RATE:
            raise ValueError(f"the log-mel front end needs {mel.SAMPLE_RATE} Hz audio, got sample_rate={self.sample_rate}")
        if not 0.0 <= self.max_bad_fraction <= 1.0:
            raise ValueError(f"max_bad_fraction must be in [0, 1], got {self.max_bad_fraction}")
        if self.num_workers < 0 or self.read_threads < 0 or self.prefetch < 1:
            raise ValueError("num_workers and read_threads must be >= 0, prefetch >= 1")
        if self.num_epochs is not None and self.num_epochs < 1:
            raise ValueError(f"num_epochs must be >= 1 or None (forever), got {self.num_epochs}")


class StepLoader:
    """Grain map function: step index -> the payload of that step's host batch (plain numpy).

    Runs in worker processes, so it returns dicts rather than ``Batch`` objects and never raises on
    bad audio: rejects travel back with the batch and are counted by the iterator.
    """

    def __init__(self, source, plan: batching.BatchPlan, shapes: Sequence[BatchShape], config: PipelineConfig, tokenize: Tokenize | None):
        self.source, self.plan, self.shapes, self.config, self.tokenize = source, plan, tuple(shapes), config, tokenize

    def __call__(self, step: int) -> dict:
        planned = self.plan.step(step)
        shape = self.shapes[planned.bucket]
        rejects = [self._reject(i, reason, message) for i, reason, message in planned.plan_rejects]
        placed = []  # (example, record, (row, clip)); rejected examples leave no gap in their row
        for row, example_ids in enumerate(planned.rows):
            clip = used_tokens = 0
            for example_id in example_ids:
                record = self.source[example_id]
                outcome = self._load(example_id, record, shape)
                if isinstance(outcome, batching.LoadedExample) and used_tokens + len(outcome.tokens) > shape.tokens:
                    message = (
                        f"{len(outcome.tokens)} tokens do not fit the {shape.tokens - used_tokens} left in its packed row "
                        "(the tokenizer gave more tokens for the decoded audio than for the manifest duration)"
                    )
                    outcome = Reject(example_id, str(record["id"]), record_name(record), RejectReason.PACK_OVERFLOW, message)
                if isinstance(outcome, Reject):
                    rejects.append(outcome)
                    continue
                placed.append((outcome, record, (row, clip)))
                clip += 1
                used_tokens += len(outcome.tokens)
        arrays = batching.assemble_arrays(
            [p[0] for p in placed],
            [p[2] for p in placed],
            rows=shape.batch_size,
            clips=shape.clips,
            frames=self.config.bucket_frames[planned.bucket],
            tokens=shape.tokens,
            n_mels=self.config.n_mels,
            features_on_host=self.config.compute_features_on_host,
            pad_token_id=self.config.pad_token_id,
        )
        metadata = [_metadata(example.example_id, record, row, clip) for example, record, (row, clip) in placed]
        return {
            "arrays": arrays,
            "metadata": metadata,
            "rejects": rejects,
            "step": planned.step,
            "epoch": planned.epoch,
            "bucket": planned.bucket,
        }

    def _reject(self, example_id: int, reason: RejectReason, message: str) -> Reject:
        record = self.source[example_id]
        return Reject(example_id, str(record.get("id", example_id)), record_name(record), reason, message)

    def _load(self, example_id: int, record: dict, shape: BatchShape) -> batching.LoadedExample | Reject:
        """Decodes, validates and tokenizes one example; bad data comes back as a ``Reject``."""
        record_id, name = str(record.get("id", example_id)), record_name(record)
        try:
            audio = decode_record(record, target_sample_rate=self.config.sample_rate, duration_tolerance=self.config.duration_tolerance)
        except AudioError as e:
            return Reject(example_id, record_id, e.path, e.reason, e.message)
        frames = int(mel.num_frames(len(audio)))
        if frames == 0:
            return Reject(example_id, record_id, name, RejectReason.EMPTY, f"{len(audio)} samples: shorter than one feature frame")
        if frames > shape.frames:
            message = (
                f"decoded {frames} frames, more than the {shape.frames}-frame bucket that its manifest duration "
                f"({record.get('duration', float('nan')):.4f} s) put it in"
            )
            return Reject(example_id, record_id, name, RejectReason.TOO_LONG, message)
        if self.tokenize is None:
            return batching.LoadedExample(example_id, audio, frames, np.zeros((0,), np.int32), np.zeros((0,), np.float32))
        encoded = self.tokenize(record, (frames,))
        tokens = np.asarray(encoded.tokens, np.int32)
        loss_mask = np.asarray(encoded.loss_mask, np.float32)
        if tokens.ndim != 1 or tokens.shape != loss_mask.shape:
            raise ValueError(f"tokenize({record_id!r}) returned tokens {tokens.shape} and loss_mask {loss_mask.shape}; expected equal [n]")
        if len(tokens) > shape.tokens:
            return Reject(example_id, record_id, name, RejectReason.TOO_MANY_TOKENS, f"{len(tokens)} tokens, over the bucket's {shape.tokens}")
        return batching.LoadedExample(example_id, audio, frames, tokens, loss_mask)


def _metadata(example_id: int, record: dict, row: int, clip: int) -> dict:
    entry = {"example_id": example_id, "id": str(record["id"]), "text": record.get("text", ""), "row": row, "clip": clip}
    entry.update({k: record[k] for k in METADATA_FIELDS if k in record})
    return entry


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
        if process_index is None or process_count is None:
            import jax

            process_index = jax.process_index() if process_index is None else process_index
            process_count = jax.process_count() if process_count is None else process_count
        self.source, self.config, self.tokenize = source, config, tokenize
        self.process_index, self.process_count = process_index, process_count
        self.rows = batching.rows_per_bucket(config.bucket_frames, config.clips_per_row, config.frame_budget, config.batch_size_multiple)
        durations = source_durations(source)
        frames = batching.frames_for_durations(durations, config.sample_rate)
        self.plan = batching.BatchPlan(
            frames,
            config.bucket_frames,
            self.rows,
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
        return [
            BatchShape(
                batch_size=rows,
                clips=clips,
                frames=frames,
                tokens=tokens if self.tokenize is not None else 0,
                n_mels=config.n_mels,
                audio_samples=0 if config.compute_features_on_host else frames * mel.HOP_LENGTH,
            )
            for rows, clips, frames, tokens in zip(self.rows, config.clips_per_row, config.bucket_frames, config.max_tokens)
        ]

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
        loader = StepLoader(self.source, self.plan, self.batch_shapes(), self.config, self.tokenize)
        steps = grain.MapDataset.range(start_step, max(start_step, stop)).map(loader)
        dataset = steps.to_iter_dataset(
            grain.ReadOptions(num_threads=self.config.read_threads, prefetch_buffer_size=self.config.prefetch)
        )
        if self.config.num_workers > 0:
            _ensure_absl_flags_parsed()
            dataset = dataset.mp_prefetch(
                grain.MultiprocessingOptions(num_workers=self.config.num_workers, per_worker_buffer_size=self.config.prefetch)
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
            raise ValueError(f"pipeline state version {state.get('version')!r}; this code reads version {STATE_VERSION}")
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
