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


class CheckpointError(ValueError):
    """A checkpoint does not match what the model expects (names the tensor or file)."""


def _read_header(path: str) -> tuple[dict, int]:
    try:
        with open(path, "rb") as f:
            (size,) = struct.unpack("<Q", f.read(8))
            header = json.loads(f.read(size))
    except (OSError, struct.error, json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{path}: not a readable safetensors file ({e})") from e
    return header, 8 + size


class SafetensorsReader:
    """Random access to the tensors of a checkpoint directory (or a single .safetensors file).

    ``get(name, shape)`` checks the shape and names the tensor in errors; ``unused()`` lists
    tensors never read (to catch checkpoints with extra weights).
    """

    def __init__(self, path: str):
        self.path = path
        if os.path.isdir(path):
            index = os.path.join(path, INDEX_NAME)
            if os.path.exists(index):
                with open(index) as f:
                    weight_map = json.load(f)["weight_map"]
                files = sorted(set(weight_map.values()))
            elif os.path.exists(os.path.join(path, SINGLE_NAME)):
                files = [SINGLE_NAME]
            else:
                found = sorted(n for n in os.listdir(path) if n.endswith(".safetensors"))
                if not found:
                    raise CheckpointError(f"{path}: no {SINGLE_NAME}, {INDEX_NAME} or *.safetensors file")
                files = found
            files = [os.path.join(path, name) for name in files]
        else:
            files = [path]
        self._where: dict[str, tuple[str, dict, int]] = {}
        for file in files:
            header, data_start = _read_header(file)
            for name, info in header.items():
                if name != "__metadata__":
                    self._where[name] = (file, info, data_start)
        self._read: set[str] = set()

    def keys(self) -> list[str]:
        return sorted(self._where)

    def __contains__(self, name: str) -> bool:
        return name in self._where

    def get(self, name: str, shape: Iterable[int] | None = None) -> np.ndarray:
        """The tensor called ``name`` (memory-mapped); raises naming it if missing or misshapen."""
        if name not in self._where:
            raise CheckpointError(f"{self.path}: missing tensor {name!r}")
        file, info, data_start = self._where[name]
        dtype = _DTYPES.get(info["dtype"])
        if dtype is None:
            raise CheckpointError(f"{file}: tensor {name!r} has unsupported dtype {info['dtype']}")
        found = tuple(info["shape"])
        if shape is not None and tuple(shape) != found:
            raise CheckpointError(f"{file}: tensor {name!r} has shape {found}, expected {tuple(shape)}")
        begin, end = info["data_offsets"]
        if end - begin != math.prod(found) * dtype.itemsize:
            raise CheckpointError(f"{file}: tensor {name!r} byte range does not match its shape {found}")
        self._read.add(name)
        return np.memmap(file, dtype=dtype, mode="r", offset=data_start + begin, shape=found)

    def unused(self) -> list[str]:
        return sorted(set(self._where) - self._read)


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
            raise CheckpointError(f"tensor {name!r}: dtype {array.dtype} cannot be written to safetensors")
        header[name] = {"dtype": _NAMES[array.dtype], "shape": list(array.shape), "data_offsets": [offset, offset + array.nbytes]}
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
