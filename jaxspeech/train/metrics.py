"""Training metrics: throughput, MFU, and the logs (``metrics.jsonl`` + TensorBoard) in the workdir.

``metrics.jsonl`` holds one JSON object per logging event: ``{"step": s, "train/loss": ...}``
(eval results use the ``eval/`` prefix). A resumed run appends to the same file, so a step may
appear twice (logged before a crash, then again after the resume): readers keep the last record.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import shutil
import tempfile
import time
from typing import Any, Iterable, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from jaxspeech import paths
from jaxspeech.errors import MissingFileError
from jaxspeech.train.task import CountsThroughput, Task

log = logging.getLogger(__name__)

LOG_FILENAME = "metrics.jsonl"
TENSORBOARD_SUBDIR = "tensorboard"


@dataclasses.dataclass(frozen=True)
class MetricsConfig:
    """How often to log, and the peak FLOP/s used as the MFU denominator.

    ``peak_flops_per_device`` None: measured once at start-up with a ``peak_matmul_size`` square
    matmul in ``peak_matmul_dtype`` on one device when ``measure_peak_flops``; otherwise no MFU.
    """

    log_every: int = 50
    tensorboard: bool = True
    peak_flops_per_device: float | None = None
    measure_peak_flops: bool = True
    peak_matmul_size: int = 2048
    peak_matmul_dtype: str = "float32"

    def __post_init__(self):
        if self.log_every < 1:
            raise ValueError(f"metrics log_every must be >= 1, got {self.log_every}")


def throughput_counts(task: Task, batch: Any) -> dict[str, float]:
    """What a host batch holds (examples, and tokens / audio seconds when the task says)."""
    if isinstance(task, CountsThroughput):
        return {k: float(v) for k, v in task.throughput_counts(batch).items()}
    return {"examples": float(jax.tree.leaves(batch)[0].shape[0])}


def measure_peak_flops(
    size: int = 2048, dtype: str = "float32", repeats: int = 5, device: jax.Device | None = None
) -> float:
    """Best FLOP/s of a ``size`` x ``size`` matmul on one device: a measured stand-in for the peak."""
    device = device or jax.local_devices()[0]
    keys = jax.random.split(jax.random.key(0))
    a, b = (jax.device_put(jax.random.normal(k, (size, size), dtype), device) for k in keys)
    matmul = jax.jit(jnp.dot)
    matmul(a, b).block_until_ready()
    best = math.inf
    for _ in range(repeats):
        start = time.perf_counter()
        matmul(a, b).block_until_ready()
        best = min(best, time.perf_counter() - start)
    return 2.0 * size**3 / best


def mfu(flops_per_device: float | None, seconds: float, peak_flops_per_device: float | None) -> float | None:
    """Model FLOPs utilisation: FLOPs done per device in ``seconds`` over what the peak would do
    (None where the FLOPs or the peak are unknown)."""
    if not flops_per_device or not peak_flops_per_device or seconds <= 0:
        return None
    return flops_per_device / seconds / peak_flops_per_device


def mean_metrics(window: Iterable[Mapping[str, Any]]) -> dict[str, float]:
    """Per-key means of a list of (device) metric dicts, fetched in one transfer."""
    fetched = jax.device_get(list(window))
    if not fetched:
        return {}
    return {key: float(np.mean([m[key] for m in fetched])) for key in fetched[0]}


class MetricsLogger:
    """Appends scalars to ``<workdir>/metrics.jsonl`` and TensorBoard event files (process 0 only).

    On a bucket (``gs://``), where objects cannot be appended to, each write uploads the whole log
    again, and the event files are written in a local temporary folder and uploaded after each write."""

    def __init__(self, workdir: str | os.PathLike, tensorboard: bool = True, enabled: bool | None = None):
        self.enabled = jax.process_index() == 0 if enabled is None else enabled
        self.path = paths.join(workdir, LOG_FILENAME)
        self._file = None
        self._writer = None
        self._tensorboard_dir = paths.join(workdir, TENSORBOARD_SUBDIR)
        self._staging = None  # where a bucket run's event files are written before each upload
        if self.enabled:
            paths.make_dirs(workdir)
            if paths.is_local(self.path):
                self._file = open(self.path, "a", encoding="utf-8")
                if self._file.tell() and not _ends_with_newline(self.path):
                    self._file.write("\n")  # a killed run may have left half a line: keep it separate
            else:
                self._file = _RewrittenLog(self.path)
            if tensorboard:
                from tensorboardX import SummaryWriter  # imported lazily: only the logging process needs it

                if not paths.is_local(workdir):
                    self._staging = tempfile.mkdtemp(prefix="jaxspeech-tensorboard-")
                self._writer = SummaryWriter(self._staging or self._tensorboard_dir)

    def write(self, step: int, scalars: Mapping[str, float]) -> None:
        if not self.enabled:
            return
        record = {"step": int(step), **{k: float(v) for k, v in scalars.items()}}
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()
        if self._writer is not None:
            for key, value in scalars.items():
                self._writer.add_scalar(key, float(value), int(step))
            self._writer.flush()
            self._upload_events()

    def _upload_events(self) -> None:
        """Copies the event files of a bucket run's local staging folder to the bucket, whole."""
        if self._staging is not None:
            for name in os.listdir(self._staging):
                paths.copy_file(os.path.join(self._staging, name), paths.join(self._tensorboard_dir, name))

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
        if self._writer is not None:
            self._writer.close()
            self._upload_events()
            if self._staging is not None:
                shutil.rmtree(self._staging, ignore_errors=True)
                self._staging = None

    def __enter__(self) -> "MetricsLogger":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class _RewrittenLog:
    """A bucket object opened for appending lines: an object cannot be appended to, so each flush
    uploads the whole log again (one line per logging step keeps it small)."""

    def __init__(self, path: str):
        self.path = path
        old = paths.read_text(path) if paths.exists(path) else ""
        self._parts = [old, "\n"] if old and not old.endswith("\n") else [old]

    def write(self, text: str) -> None:
        self._parts.append(text)

    def flush(self) -> None:
        self._parts = ["".join(self._parts)]
        paths.write_whole(self.path, self._parts[0])

    def close(self) -> None:
        self.flush()


def _ends_with_newline(path: str) -> bool:
    with open(path, "rb") as f:
        f.seek(-1, os.SEEK_END)
        return f.read(1) == b"\n"


def read_log(workdir: str | os.PathLike) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """key -> (steps i64[N], values f64[N]) from ``metrics.jsonl``, sorted by step; for a step
    logged more than once (a resumed run) the last record wins. Lines cut short by a killed run
    are skipped with a warning."""
    path = paths.join(workdir, LOG_FILENAME)
    if not paths.exists(path):
        raise MissingFileError(path, f"no metrics log: is {workdir} a training workdir?")
    by_key: dict[str, dict[int, float]] = {}
    bad_lines = []
    with paths.open_file(path) as f:
        for line_number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                step = int(record.pop("step"))
                values = {key: float(value) for key, value in record.items()}
            except (json.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError):
                bad_lines.append(line_number)
                continue
            for key, value in values.items():
                by_key.setdefault(key, {})[step] = value
    if bad_lines:
        log.warning("%s: skipped %d unreadable line(s): %s", path, len(bad_lines), bad_lines[:10])
    result = {}
    for key, values in by_key.items():
        steps = np.array(sorted(values), dtype=np.int64)
        result[key] = (steps, np.array([values[s] for s in steps], dtype=np.float64))
    return result
