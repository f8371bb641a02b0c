"""Paths that name a local file or an object in a bucket (``gs://BUCKET/...``) alike.

A run folder (config, tokenizer, metrics, reports, evaluation outputs, checkpoints) and the data a
run reads (manifests, audio files) go through ``etils.epath``: local paths behave as plain files
(a file is written beside its target, then renamed, so it appears whole), bucket paths go through
epath's fsspec backend (``gcsfs``, the ``gcs`` extra), where an object appears whole when its upload
closes. ``os.path`` alone would turn ``gs://b/x`` into ``gs:/b/x`` (``normpath``) or
``/cwd/gs:/b/x`` (``abspath``).

Libraries that read only local files (the Hugging Face checkpoints of ``init.whisper_dir`` /
``init.llm_dir``: config.json, safetensors, tokenizer files) get a bucket folder through
``local_copy``: a mirror of it under ``cache_root()/mirrors``, made once.
"""

from __future__ import annotations

import hashlib
import logging
import os
from typing import IO, Iterator

from etils import epath

log = logging.getLogger(__name__)

PathLike = str | os.PathLike
CACHE_VARIABLE = "JAXSPEECH_CACHE"
# Written last into a mirror: every file is there (``MIRRORED``) or every file but the weights.
MIRRORED = ".jaxspeech-mirrored"
MIRRORED_WITHOUT_WEIGHTS = ".jaxspeech-mirrored-without-weights"
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".h5", ".msgpack", ".ckpt", ".gguf", ".npz")
CHUNK_BYTES = 16 << 20


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


def cache_root() -> str:
    """``$JAXSPEECH_CACHE``, else ``~/.cache/jaxspeech``."""
    return absolute(os.environ.get(CACHE_VARIABLE) or "~/.cache/jaxspeech")


def mirror_folder(uri: PathLike) -> str:
    """Where ``local_copy`` mirrors ``uri``: ``<cache_root()>/mirrors/<last name>-<12 hex digits of its SHA-1>``."""
    uri = absolute(uri)
    digest = hashlib.sha1(uri.encode()).hexdigest()[:12]
    return os.path.join(cache_root(), "mirrors", f"{base_name(uri)}-{digest}")


def is_weight_file(name: str) -> bool:
    return name.endswith(WEIGHT_SUFFIXES)


def local_copy(path: PathLike, weights: bool = True) -> str:
    """A local folder with the files of the folder ``path``: a local path as it is; a bucket folder
    mirrored once into ``mirror_folder(path)`` (each file written beside, then renamed; a marker
    written last, so a half-made mirror is completed, never used) and reused from then on without
    asking the bucket. ``weights`` False leaves out weight files (``WEIGHT_SUFFIXES``): enough to
    read configs and tokenizers."""
    if is_local(path):
        return os.fspath(path)
    uri = absolute(path)
    folder = mirror_folder(uri)
    marker = MIRRORED if weights else MIRRORED_WITHOUT_WEIGHTS
    if any(os.path.exists(os.path.join(folder, name)) for name in {MIRRORED, marker}):
        return folder
    remote = epath.Path(uri)
    try:
        files = sorted(p for p in _files_under(remote) if weights or not is_weight_file(p.name))
    except FileNotFoundError:
        files = []
    if not files:
        raise FileNotFoundError(f"{uri}: no files to copy there")
    sizes = [p.stat().length for p in files]
    log.info("copying %s (%d files, %.1f MB) to %s", uri, len(files), sum(sizes) / 1e6, folder)
    from tqdm.auto import tqdm

    with tqdm(total=sum(sizes), unit="B", unit_scale=True, desc=f"copying {uri}", disable=None) as bar:
        for source, size in zip(files, sizes):
            target = os.path.join(folder, os.fspath(source.relative_to(remote)))
            if not (os.path.isfile(target) and os.path.getsize(target) == size):  # a whole file of an earlier try
                _download(source, target, bar.update)
            else:
                bar.update(size)
    write_whole(os.path.join(folder, marker), uri + "\n")
    return folder


def _files_under(folder: epath.Path) -> Iterator[epath.Path]:
    """The files in ``folder`` and its subfolders."""
    for entry in folder.iterdir():
        if entry.is_dir():
            yield from _files_under(entry)
        else:
            yield entry


def _download(source: epath.Path, target: str, advance) -> None:
    """Copies the bucket file ``source`` to the local ``target`` (beside it, then renamed), calling
    ``advance(bytes)`` after each chunk."""
    os.makedirs(os.path.dirname(target), exist_ok=True)
    partial = f"{target}.{os.getpid()}.partial"
    with source.open("rb") as reader, open(partial, "wb") as writer:
        while chunk := reader.read(CHUNK_BYTES):
            writer.write(chunk)
            advance(len(chunk))
    os.replace(partial, target)
