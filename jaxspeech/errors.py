"""Typed errors and the reason codes used to count rejected examples.

``KnownError`` marks the errors a user fixes from their message alone; it reads
``<file, config key or flag>: <what was found and what was expected>``. The ``jaxspeech`` command
prints such an error as one line ``error: <message>`` and exits 2, without a traceback (``--debug``
or ``JAXSPEECH_DEBUG=1`` shows it); any other exception keeps its traceback.
"""

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


class KnownError(Exception):
    """An expected failure whose message names the file or key at fault and what was expected."""


class UsageError(KnownError, ValueError):
    """Bad input: ``where`` (a file, config key or flag) and ``what`` was found or expected."""

    def __init__(self, where: str, what: str):
        self.where, self.what = str(where), what
        super().__init__(f"{self.where}: {what}")

    def __reduce__(self):
        return (type(self), (self.where, self.what))


class MissingFileError(UsageError, FileNotFoundError):
    """A file or folder that should exist does not (``where``: its path)."""


class ConfigError(UsageError):
    """A config key that does not exist, or a value of the wrong type or range (``where``: the dotted key)."""


class AudioError(KnownError):
    """An audio file or buffer that cannot be used; ``reason`` is a ``RejectReason``."""

    def __init__(self, path: str, reason: RejectReason, message: str):
        self.path = path
        self.reason = RejectReason(reason)
        self.message = message
        super().__init__(f"{path}: [{self.reason.value}] {message}")

    def __reduce__(self):
        # Worker processes send these back pickled; keep the three constructor arguments.
        return (type(self), (self.path, self.reason, self.message))


class ManifestError(KnownError, ValueError):
    """A manifest or dataset layout that does not match what the sources expect."""


class DataQualityError(KnownError, RuntimeError):
    """Too many bad examples: the pipeline stops rather than train on a broken dataset."""


@dataclasses.dataclass(frozen=True)
class Reject:
    """One skipped example: its source index, record id, file (or record name) and why."""

    example_id: int
    id: str
    path: str
    reason: RejectReason
    message: str
