"""The ``Batch`` contract between the data pipeline, the models and the trainer.

Shapes (B rows, C clips per row, T feature frames, F mel bins, L tokens, N = T * 160 samples):

- ``features``        f32[B, C, T, F] log-mel, time-major (``None`` when ``audio`` is carried instead)
- ``feature_lengths`` i32[B, C] valid frames per clip; 0 = no clip in that slot
- ``tokens``          i32[B, L] prompt + target ids, the audio placeholder repeated once per audio
                      embedding (as produced by ``data/text.py``); pad id past the last segment
- ``loss_mask``       f32[B, L] 1 where ``tokens[b, t]`` is a target predicted from position t - 1
- ``segment_ids``     i32[B, L] 0 on padding, 1..k for the k examples packed into a row
- ``positions``       i32[B, L] restart at 0 at the start of every segment (0 on padding)
- ``example_ids``     i64[B, C] source index of the example in each clip slot, -1 for padding
                      (int32 once on device unless ``jax_enable_x64``)
- ``weights``         f32[B] 1 for rows holding at least one example, 0 for padding rows
- ``audio``           f32[B, C, N] raw 16-kHz waveform, only when features are computed on device

Clip c of row b belongs to segment c + 1 of that row: the model fills the audio placeholders of
segment k with the embeddings of clip k - 1. With C = 1 (no packing) a row is one example.
Host-only metadata (ids, transcripts, paths) travels beside the arrays in ``HostBatch``, so that
jitted functions never see it.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import numpy as np
from flax import struct

from jaxspeech.errors import Reject

Array = Any  # np.ndarray on the host, jax.Array on device


@dataclasses.dataclass(frozen=True)
class BatchShape:
    """Static shape of one bucket's batches; ``audio_samples`` > 0 means raw audio instead of features."""

    batch_size: int
    clips: int
    frames: int
    tokens: int
    n_mels: int
    audio_samples: int = 0


@struct.dataclass
class Batch:
    """A padded batch of speech/text examples; see the module docstring for shapes."""

    features: Array | None
    feature_lengths: Array
    tokens: Array
    loss_mask: Array
    segment_ids: Array
    positions: Array
    example_ids: Array
    weights: Array
    audio: Array | None = None

    @property
    def num_examples(self) -> Array:
        """Number of real examples (filled clip slots) in the batch, as a scalar array."""
        return (self.example_ids >= 0).sum()

    @classmethod
    def padding(cls, shape: BatchShape) -> "Batch":
        """An all-padding numpy batch of ``shape`` (weights 0, example_ids -1)."""
        rows, clips = shape.batch_size, shape.clips
        raw_audio = shape.audio_samples > 0
        return cls(
            features=None if raw_audio else np.zeros((rows, clips, shape.frames, shape.n_mels), np.float32),
            feature_lengths=np.zeros((rows, clips), np.int32),
            tokens=np.zeros((rows, shape.tokens), np.int32),
            loss_mask=np.zeros((rows, shape.tokens), np.float32),
            segment_ids=np.zeros((rows, shape.tokens), np.int32),
            positions=np.zeros((rows, shape.tokens), np.int32),
            example_ids=np.full((rows, clips), -1, np.int64),
            weights=np.zeros((rows,), np.float32),
            audio=np.zeros((rows, clips, shape.audio_samples), np.float32) if raw_audio else None,
        )

    @classmethod
    def abstract(cls, shape: BatchShape) -> "Batch":
        """``jax.ShapeDtypeStruct``s of a batch of ``shape`` as it looks on device (for AOT compiles)."""
        return jax.eval_shape(lambda: cls.padding(shape))


@struct.dataclass
class TextBatch:
    """A batch of packed text (no audio): tokens i32[B, L], loss_mask f32[B, L] (1 where the token
    is a target predicted from position t - 1), segment_ids i32[B, L] (0 = padding, 1..k for the k
    texts of a row) and positions i32[B, L] (restarting at 0 in every segment)."""

    tokens: Array
    loss_mask: Array
    segment_ids: Array
    positions: Array

    @classmethod
    def padding(cls, rows: int, length: int) -> "TextBatch":
        """An all-padding numpy batch of ``rows`` x ``length`` tokens."""
        zeros = np.zeros((rows, length), np.int32)
        return cls(tokens=zeros, loss_mask=zeros.astype(np.float32), segment_ids=zeros.copy(), positions=zeros.copy())


@dataclasses.dataclass(frozen=True)
class HostBatch:
    """What the pipeline yields: the numpy ``Batch`` plus host-only information.

    ``metadata`` has one dict per real example (``example_id``, ``id``, ``text``, ``row``, ``clip``,
    and the record's ``audio_filepath``, ``duration``, ``task``, ``prompt``, ``target``,
    ``language`` where present); ``rejects`` lists the examples of this step that were skipped.
    """

    batch: Batch
    metadata: tuple[dict, ...]
    rejects: tuple[Reject, ...]
    step: int
    epoch: int
    bucket: int
