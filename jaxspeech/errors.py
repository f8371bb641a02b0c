"""Typed errors of the data pipeline and the reason codes used to count rejected examples."""

from __future__ import annotations

import dataclasses
import enum


class RejectReason(str, enum.Enum):
    """Why an example was rejected; the value is the counter key (JSON-friendly)."""

    UNREADABLE = "unreadable"  # missing file, permission or I/O error
    UNSUPPORTED_FORMAT = "unsupported_format"  # not a container/codec libsndfile recognises
    CORRUPT = "corrupt"  # recognised format that fails to decode, or truncated data
    EMPTY = "empty"  # zero bytes or zero samples
    NON_FINITE = "non_finite"  # NaN or infinite samples
    DURATION_MISMATCH = "duration_mismatch"  # decoded duration differs from the manifest's
    TOO_LONG = "too_long"  # over the maximum length / longer than the largest bucket
    TOO_MANY_TOKENS = "too_many_tokens"  # tokens exceed the bucket's fixed token length
    PACK_OVERFLOW = "pack_overflow"  # fits alone, but no packed row of its batch had room left


class AudioError(Exception):
    """An audio file or buffer that cannot be used; ``reason`` is a ``RejectReason``."""

    def __init__(self, path: str, reason: RejectReason, message: str):
        self.path = path
        self.reason = RejectReason(reason)
        self.message = message
        super().__init__(f"{path}: [{self.reason.value}] {message}")

    def __reduce__(self):
        # Worker processes send these back pickled; keep the three constructor arguments.
        return (type(self), (self.path, self.reason, self.message))


class ManifestError(ValueError):
    """A manifest or dataset layout that does not match what the sources expect."""


class DataQualityError(RuntimeError):
    """Too many bad examples: the pipeline stops rather than train on a broken dataset."""


@dataclasses.dataclass(frozen=True)
class Reject:
    """One skipped example: its source index, record id, file (or record name) and why."""

    example_id: int
    id: str
    path: str
    reason: RejectReason
    message: str
