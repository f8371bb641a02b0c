"""Reading and writing safetensors checkpoints (single file or sharded with an index), numpy only.

The format is parsed directly (an 8-byte little-endian header size, a JSON header, raw tensor
bytes) so that bfloat16 tensors load as ``ml_dtypes.bfloat16`` arrays; tensors are memory-mapped
and read on demand. Nothing is ever unpickled.
"""

from __future__ import annotations

import json
import math
import os
import struct
from typing import Iterable, Mapping

import ml_dtypes
import numpy as np

from jaxspeech.errors import KnownError

INDEX_NAME = "model.safetensors.index.json"
SINGLE_NAME = "model.safetensors"

_DTYPES = {
    "F64": np.dtype(np.float64),
    "F32": np.dtype(np.float32),
    "F16": np.dtype(np.float16),
    "BF16": np.dtype(ml_dtypes.bfloat16),
    "I64": np.dtype(np.int64),
    "I32": np.dtype(np.int32),
    "I16": np.dtype(np.int16),
    "I8": np.dtype(np.int8),
    "U8": np.dtype(np.uint8),
    "BOOL": np.dtype(np.bool_),
}
_NAMES = {dtype: name for name, dtype in _DTYPES.items()}


class CheckpointError(KnownError, ValueError):
    """A checkpoint that cannot be read or does not fit the model.

    ``path``: the file or folder at fault (None: a config held in memory); ``tensor``: the tensor
    concerned (None: the whole file); ``what``: what was found and what was expected."""

    def __init__(self, path: str | os.PathLike | None, tensor: str | None, what: str):
        self.path = None if path is None else os.fspath(path)
        self.tensor, self.what = tensor, what
        subject = "" if tensor is None else f"tensor {tensor!r} "
        super().__init__(f"{self.path}: {subject}{what}" if self.path is not None else f"{subject}{what}")

    def __reduce__(self):
        return (type(self), (self.path, self.tensor, self.what))

    def at(self, path: str | os.PathLike) -> "CheckpointError":
        """The same error located in ``path`` (when it had no path of its own)."""
        return self if self.path is not None else CheckpointError(path, self.tensor, self.what)


_MAX_HEADER_BYTES = 100_000_000  # the limit of the reference implementation


def _read_header(path: str) -> tuple[dict, int]:
    """(tensor entries, data offset) of a safetensors file, every entry checked against the file:
    known dtype, non-negative shape, byte range of that shape's size, ranges that tile the data
    section exactly (no overlap, no gap, nothing past the end). Raises ``CheckpointError``."""
    try:
        file_size = os.path.getsize(path)
        with open(path, "rb") as f:
            prefix = f.read(8)
            if len(prefix) < 8:
                raise CheckpointError(path, None, f"is {file_size} bytes, too short for a safetensors header")
            (size,) = struct.unpack("<Q", prefix)
            if size > min(file_size - 8, _MAX_HEADER_BYTES):
                raise CheckpointError(
                    path,
                    None,
                    f"declares a {size}-byte header, but the file is {file_size} bytes "
                    f"(not a safetensors file, or truncated)",
                )
            header = json.loads(f.read(size))
    except OSError as e:
        raise CheckpointError(path, None, f"cannot be read ({e.strerror or e})") from e
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(path, None, f"has no JSON header ({e}): not a safetensors file") from e
    if not isinstance(header, dict):
        raise CheckpointError(path, None, f"has a JSON header of type {type(header).__name__}, expected an object")
    data_start = 8 + size
    tensors = {name: _checked_entry(path, name, info) for name, info in header.items() if name != "__metadata__"}
    _check_tiling(path, tensors, file_size - data_start)
    return tensors, data_start


def _checked_entry(path: str, name: str, info) -> dict:
    if not isinstance(info, dict) or set(info) != {"dtype", "shape", "data_offsets"}:
        raise CheckpointError(path, name, "has a header entry without exactly dtype, shape and data_offsets")
    dtype = _DTYPES.get(info["dtype"]) if isinstance(info["dtype"], str) else None
    if dtype is None:
        raise CheckpointError(path, name, f"has unsupported dtype {info['dtype']!r} (supported: {sorted(_DTYPES)})")
    shape, offsets = info["shape"], info["data_offsets"]
    if not isinstance(shape, list) or not all(type(d) is int and d >= 0 for d in shape):
        raise CheckpointError(path, name, f"has shape {shape!r}, expected a list of non-negative integers")
    if (
        not isinstance(offsets, list)
        or len(offsets) != 2
        or not all(type(o) is int for o in offsets)
        or not 0 <= offsets[0] <= offsets[1]
    ):
        raise CheckpointError(path, name, f"has data_offsets {offsets!r}, expected [begin, end] with 0 <= begin <= end")
    expected = math.prod(shape) * dtype.itemsize
    if offsets[1] - offsets[0] != expected:
        raise CheckpointError(
            path,
            name,
            f"has {offsets[1] - offsets[0]} bytes, but shape {tuple(shape)} of {info['dtype']} needs {expected}",
        )
    return {"dtype": dtype, "shape": tuple(shape), "begin": offsets[0], "end": offsets[1]}


def _check_tiling(path: str, tensors: dict[str, dict], data_bytes: int) -> None:
    position, previous = 0, None
    for name, entry in sorted(tensors.items(), key=lambda item: (item[1]["begin"], item[1]["end"])):
        if entry["begin"] < position:
            raise CheckpointError(path, name, f"bytes [{entry['begin']}, {entry['end']}) overlap those of {previous!r}")
        if entry["begin"] > position:
            raise CheckpointError(
                path,
                name,
                f"starts at byte {entry['begin']} of the data, but bytes [{position}, "
                f"{entry['begin']}) belong to no tensor",
            )
        position, previous = entry["end"], name
    if position > data_bytes:
        raise CheckpointError(
            path,
            previous,
            f"ends at byte {position} of the data, but the file holds {data_bytes} bytes of data (truncated?)",
        )
    if position < data_bytes:
        raise CheckpointError(path, None, f"holds {data_bytes - position} bytes after its last tensor")


class SafetensorsReader:
    """Random access to the tensors of a checkpoint directory (or a single .safetensors file).

    Every file's header is checked against the file when the reader opens it (see
    ``_read_header``). ``get(name, shape)`` checks the shape and names the tensor in errors;
    ``unused()`` lists tensors never read (to catch checkpoints with extra weights).
    """

    def __init__(self, path: str):
        self.path = path
        weight_map = None
        if os.path.isdir(path):
            index = os.path.join(path, INDEX_NAME)
            if os.path.exists(index):
                weight_map = _read_index(index)
                files = sorted(set(weight_map.values()))
            elif os.path.exists(os.path.join(path, SINGLE_NAME)):
                files = [SINGLE_NAME]
            else:
                found = sorted(n for n in os.listdir(path) if n.endswith(".safetensors"))
                if not found:
                    raise CheckpointError(path, None, f"has no {SINGLE_NAME}, {INDEX_NAME} or *.safetensors file")
                files = found
            files = [os.path.join(path, name) for name in files]
        elif os.path.exists(path):
            files = [path]
        else:
            raise CheckpointError(path, None, "does not exist")
        self._where: dict[str, tuple[str, dict, int]] = {}
        for file in files:
            header, data_start = _read_header(file)
            for name, entry in header.items():
                if name in self._where:
                    raise CheckpointError(file, name, f"is also in {self._where[name][0]}")
                self._where[name] = (file, entry, data_start)
        if weight_map is not None:
            for name, file in weight_map.items():
                if self._where.get(name, (None,))[0] != os.path.join(path, file):
                    raise CheckpointError(os.path.join(path, INDEX_NAME), name, f"is listed in {file}, which lacks it")
        self._read: set[str] = set()

    def keys(self) -> list[str]:
        return sorted(self._where)

    def __contains__(self, name: str) -> bool:
        return name in self._where

    def get(self, name: str, shape: Iterable[int] | None = None) -> np.ndarray:
        """The tensor called ``name`` (memory-mapped); raises naming it if missing or misshapen."""
        if name not in self._where:
            expected = "" if shape is None else f" (expected shape {tuple(shape)})"
            raise CheckpointError(self.path, name, f"is missing{expected}")
        file, entry, data_start = self._where[name]
        if shape is not None and tuple(shape) != entry["shape"]:
            raise CheckpointError(file, name, f"has shape {entry['shape']}, expected {tuple(shape)}")
        self._read.add(name)
        if entry["begin"] == entry["end"]:  # a zero-size tensor (np.memmap refuses an empty map)
            return np.zeros(entry["shape"], entry["dtype"])
        return np.memmap(file, dtype=entry["dtype"], mode="r", offset=data_start + entry["begin"], shape=entry["shape"])

    def unused(self) -> list[str]:
        return sorted(set(self._where) - self._read)


def _read_index(index: str) -> dict[str, str]:
    """The weight map of a sharded checkpoint's index file: {tensor name: shard file name}."""
    try:
        with open(index) as f:
            weight_map = json.load(f)["weight_map"]
    except OSError as e:
        raise CheckpointError(index, None, f"cannot be read ({e.strerror or e})") from e
    except (ValueError, KeyError, TypeError) as e:
        raise CheckpointError(index, None, f"is not an index with a 'weight_map' object ({e!r})") from e
    if not isinstance(weight_map, dict) or not all(isinstance(v, str) and v for v in weight_map.values()):
        raise CheckpointError(index, None, "has a 'weight_map' that is not {tensor name: shard file name}")
    missing = sorted({f for f in weight_map.values() if not os.path.isfile(os.path.join(os.path.dirname(index), f))})
    if missing:
        raise CheckpointError(index, None, f"lists shard files that do not exist: {missing[:5]}")
    return weight_map


def write_safetensors(
    tensors: Mapping[str, np.ndarray], out_dir: str, max_shard_bytes: int = 5 * 2**30, metadata: dict | None = None
) -> list[str]:
    """Writes ``tensors`` as model.safetensors, or as shards + index past ``max_shard_bytes``."""
    os.makedirs(out_dir, exist_ok=True)
    shards: list[list[str]] = [[]]
    size = 0
    for name in tensors:
        nbytes = np.asarray(tensors[name]).nbytes
        if shards[-1] and size + nbytes > max_shard_bytes:
            shards.append([])
            size = 0
        shards[-1].append(name)
        size += nbytes
    if len(shards) == 1:
        file_names = [SINGLE_NAME]
    else:
        file_names = [f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors" for i in range(len(shards))]
    weight_map = {}
    for file_name, names in zip(file_names, shards):
        _write_file(os.path.join(out_dir, file_name), {n: tensors[n] for n in names}, metadata)
        weight_map.update({n: file_name for n in names})
    if len(shards) > 1:
        total = sum(np.asarray(t).nbytes for t in tensors.values())
        with open(os.path.join(out_dir, INDEX_NAME), "w") as f:
            json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f, indent=2)
    return [os.path.join(out_dir, n) for n in file_names]


def _write_file(path: str, tensors: Mapping[str, np.ndarray], metadata: dict | None) -> None:
    header: dict = {"__metadata__": {k: str(v) for k, v in (metadata or {"format": "pt"}).items()}}
    offset = 0
    arrays = {}
    for name, tensor in tensors.items():
        array = np.ascontiguousarray(np.asarray(tensor))
        if array.dtype not in _NAMES:
            raise CheckpointError(path, name, f"has dtype {array.dtype}, which safetensors cannot hold")
        header[name] = {
            "dtype": _NAMES[array.dtype],
            "shape": list(array.shape),
            "data_offsets": [offset, offset + array.nbytes],
        }
        offset += array.nbytes
        arrays[name] = array
    encoded = json.dumps(header, separators=(",", ":")).encode()
    encoded += b" " * (-len(encoded) % 8)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(encoded)))
        f.write(encoded)
        for array in arrays.values():
            f.write(array.tobytes())
    os.replace(tmp, path)
