"""Paths that name a local file or an object in a bucket (``gs://BUCKET/...``) alike.

A run folder (config, tokenizer, metrics, reports, evaluation outputs, checkpoints) and the data a
run reads (manifests, audio files) go through ``etils.epath``: local paths behave as plain files
(a file is written beside its target, then renamed, so it appears whole), bucket paths go through
epath's fsspec backend (``gcsfs``, the ``gcs`` extra), where an object appears whole when its upload
closes. ``os.path`` alone would turn ``gs://b/x`` into ``gs:/b/x`` (``normpath``) or
``/cwd/gs:/b/x`` (``abspath``).
"""

from __future__ import annotations

import os
from typing import IO

from etils import epath

PathLike = str | os.PathLike


def is_local(path: PathLike) -> bool:
    """False for a URI with a scheme (``gs://``, ``s3://``), True for a file system path."""
    return "://" not in os.fspath(path)


def join(base: PathLike, *names: str) -> str:
    """``os.path.join`` that keeps a bucket URI's ``//``."""
    return os.path.join(os.fspath(base), *names)


def absolute(path: PathLike) -> str:
    """A local path made absolute and normalised (``~`` expanded); a bucket URI as it is."""
    path = os.fspath(path)
    return os.path.abspath(os.path.expanduser(path)) if is_local(path) else path.rstrip("/")


def base_name(path: PathLike) -> str:
    """The last component of a folder or file path (``runs/tiny/`` -> ``tiny``)."""
    return os.path.basename(absolute(path))


def exists(path: PathLike) -> bool:
    return epath.Path(path).exists()


def is_file(path: PathLike) -> bool:
    return epath.Path(path).is_file()


def is_dir(path: PathLike) -> bool:
    return epath.Path(path).is_dir()


def make_dirs(path: PathLike) -> None:
    """Creates a folder and its parents (nothing to do on a bucket, where folders are name prefixes)."""
    epath.Path(path).mkdir(parents=True, exist_ok=True)


def open_file(path: PathLike, mode: str = "r") -> IO:
    """Opens a local or bucket file (text modes read and write UTF-8)."""
    if "b" in mode:
        return epath.Path(path).open(mode)
    return epath.Path(path).open(mode, encoding="utf-8")


def read_text(path: PathLike) -> str:
    return epath.Path(path).read_text(encoding="utf-8")


def read_bytes(path: PathLike) -> bytes:
    return epath.Path(path).read_bytes()


def write_whole(path: PathLike, data: str | bytes) -> None:
    """Writes ``path`` so that readers see the old content or the new, never a part: locally
    beside it, then renamed over it; on a bucket, one upload (an object appears when it closes)."""
    path = os.fspath(path)
    mode = "wb" if isinstance(data, bytes) else "w"
    if not is_local(path):
        with open_file(path, mode) as f:
            f.write(data)
        return
    partial = f"{path}.{os.getpid()}.partial"
    with open_file(partial, mode) as f:
        f.write(data)
    os.replace(partial, path)


def copy_file(source: PathLike, target: PathLike) -> None:
    """Copies one (small) file between any two of local and bucket paths."""
    write_whole(target, read_bytes(source))
