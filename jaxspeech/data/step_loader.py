"""Grain's map function: one step index -> the decoded, validated, tokenized and padded arrays of
that step's host batch. It runs in worker processes, so it imports no model code and returns plain
numpy (the iterator in ``pipeline.py`` wraps it into a ``Batch``)."""

from __future__ import annotations

from typing import Any, Callable, NamedTuple, Sequence

import numpy as np

from jaxspeech.data import batching
from jaxspeech.errors import AudioError, Reject, RejectReason
from jaxspeech.data.pipeline_config import PipelineConfig
from jaxspeech.data.sources import decode_record, record_name
from jaxspeech.features import mel

# tokenize(record, frames per clip) -> an object with ``tokens`` i32[n] and ``loss_mask`` f32[n]
# (``jaxspeech.data.prompts.EncodedExample`` fits).
Tokenize = Callable[[dict, Sequence[int]], Any]

METADATA_FIELDS = ("audio_filepath", "duration", "instruction", "prompt", "target", "language")


class BucketShape(NamedTuple):
    """Static host-batch shape of one bucket: rows, clip slots per row, frames per clip, tokens per row."""

    rows: int
    clips: int
    frames: int
    tokens: int


class StepLoader:
    """Grain map function: step index -> the payload of that step's host batch (plain numpy).

    Runs in worker processes, so it returns dicts rather than ``Batch`` objects and never raises on
    bad audio: rejects travel back with the batch and are counted by the iterator.
    """

    def __init__(self, source, plan: batching.BatchPlan, config: PipelineConfig, tokenize: Tokenize | None):
        self.source, self.plan, self.config, self.tokenize = source, plan, config, tokenize

    def __call__(self, step: int) -> dict:
        planned = self.plan.step(step)
        shape = self.bucket_shape(planned.bucket)
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
                    outcome = Reject(
                        example_id, str(record["id"]), record_name(record), RejectReason.PACK_OVERFLOW, message
                    )
                if isinstance(outcome, Reject):
                    rejects.append(outcome)
                    continue
                placed.append((outcome, record, (row, clip)))
                clip += 1
                used_tokens += len(outcome.tokens)
        arrays = batching.assemble_arrays(
            [p[0] for p in placed],
            [p[2] for p in placed],
            rows=shape.rows,
            clips=shape.clips,
            frames=shape.frames,
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

    def bucket_shape(self, bucket: int) -> BucketShape:
        """Static shape of ``bucket``'s host batches (tokens: 0 without a tokenizer)."""
        config = self.config
        tokens = config.max_tokens[bucket] if self.tokenize is not None else 0
        return BucketShape(
            self.plan.rows_per_batch[bucket], config.clips_per_row[bucket], config.bucket_frames[bucket], tokens
        )

    def _reject(self, example_id: int, reason: RejectReason, message: str) -> Reject:
        record = self.source[example_id]
        return Reject(example_id, str(record.get("id", example_id)), record_name(record), reason, message)

    def _load(self, example_id: int, record: dict, shape: BucketShape) -> batching.LoadedExample | Reject:
        """Decodes, validates and tokenizes one example; bad data comes back as a ``Reject``."""
        record_id, name = str(record.get("id", example_id)), record_name(record)
        try:
            audio = decode_record(
                record, target_sample_rate=self.config.sample_rate, duration_tolerance=self.config.duration_tolerance
            )
        except AudioError as e:
            return Reject(example_id, record_id, e.path, e.reason, e.message)
        frames = int(mel.num_frames(len(audio)))
        if frames == 0:
            return Reject(
                example_id, record_id, name, RejectReason.EMPTY, f"{len(audio)} samples: shorter than one feature frame"
            )
        if frames > shape.frames:
            message = (
                f"decoded {frames} frames, more than the {shape.frames}-frame bucket that its manifest duration "
                f"({record.get('duration', float('nan')):.4f} s) put it in"
            )
            return Reject(example_id, record_id, name, RejectReason.TOO_LONG, message)
        if self.tokenize is None:
            return batching.LoadedExample(
                example_id, audio, frames, np.zeros((0,), np.int32), np.zeros((0,), np.float32)
            )
        encoded = self.tokenize(record, (frames,))
        tokens = np.asarray(encoded.tokens, np.int32)
        loss_mask = np.asarray(encoded.loss_mask, np.float32)
        if tokens.ndim != 1 or tokens.shape != loss_mask.shape:
            raise ValueError(
                f"tokenize({record_id!r}) returned tokens {tokens.shape} and loss_mask {loss_mask.shape}; expected equal [n]"
            )
        if len(tokens) > shape.tokens:
            return Reject(
                example_id,
                record_id,
                name,
                RejectReason.TOO_MANY_TOKENS,
                f"{len(tokens)} tokens, over the bucket's {shape.tokens}",
            )
        return batching.LoadedExample(example_id, audio, frames, tokens, loss_mask)


def _metadata(example_id: int, record: dict, row: int, clip: int) -> dict:
    """Host-only description of a delivered example: ids, transcript, where it sits, record fields."""
    entry = {
        "example_id": example_id,
        "id": str(record["id"]),
        "text": record.get("text", ""),
        "row": row,
        "clip": clip,
    }
    entry.update({k: record[k] for k in METADATA_FIELDS if k in record})
    return entry


def limit_blas_threads(threads: int, worker_index: int, worker_count: int) -> None:
    """Grain worker init: caps BLAS threads in this worker process (no-op without threadpoolctl)."""
    try:
        import threadpoolctl
    except ImportError:
        return
    threadpoolctl.threadpool_limits(limits=threads, user_api="blas")
