"""The safetensors reader checks every header against its file: truncated files, text files,
headers that claim more bytes than the file holds, overlapping or gapped byte ranges, unknown
dtypes and bad shapes raise ``CheckpointError(path, tensor, what)``; the reference library
(``safetensors``) refuses the same files and writes files we read back exactly."""

import json
import os
import struct

import ml_dtypes
import numpy as np
import pytest
from safetensors import SafetensorError
from safetensors.numpy import load_file, save_file

from jaxspeech.convert.safetensors_io import INDEX_NAME, CheckpointError, SafetensorsReader, write_safetensors

TENSORS = {
    "a": np.arange(12, dtype=np.float32).reshape(3, 4),
    "b": np.arange(5, dtype=np.int64),
    "c": np.ones((2, 2), ml_dtypes.bfloat16),
    "empty": np.zeros((0, 3), np.float32),
}


def _raw(path, header: dict, data: bytes, header_size: int | None = None) -> str:
    """Writes a safetensors file byte by byte (so that it can lie)."""
    encoded = json.dumps(header).encode()
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(encoded) if header_size is None else header_size))
        f.write(encoded)
        f.write(data)
    return str(path)


def _good_header() -> dict:
    return {
        "x": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 16]},
        "y": {"dtype": "I32", "shape": [2], "data_offsets": [16, 24]},
    }


def _refused(path, match: str, tensor: str | None = None) -> CheckpointError:
    with pytest.raises(CheckpointError, match=match) as info:
        SafetensorsReader(str(path))
    error = info.value
    assert error.path == str(path) and str(path) in str(error) and "\n" not in str(error)
    assert error.tensor == tensor
    with pytest.raises(SafetensorError):  # the reference implementation refuses the file too
        load_file(str(path))
    return error


def test_files_written_by_either_side_read_back_exactly(tmp_path):
    paths = write_safetensors(TENSORS, str(tmp_path / "ours"))
    theirs = tmp_path / "theirs.safetensors"
    plain = {k: v for k, v in TENSORS.items() if k != "c"}  # numpy has no bfloat16 for the reference to use
    save_file(plain, str(theirs))
    for name, value in load_file(write_safetensors(plain, str(tmp_path / "plain"))[0]).items():
        assert np.array_equal(value, plain[name]) and value.dtype == plain[name].dtype
    for path, expected in ((paths[0], TENSORS), (str(theirs), {k: v for k, v in TENSORS.items() if k != "c"})):
        reader = SafetensorsReader(path)
        assert reader.keys() == sorted(expected)
        for name, value in expected.items():
            got = reader.get(name, value.shape)
            assert got.dtype == value.dtype and np.array_equal(got, value)


def test_truncated_files_are_refused_naming_the_file_and_tensor(tmp_path):
    whole = open(write_safetensors({"a": TENSORS["a"], "b": TENSORS["b"]}, str(tmp_path / "whole"))[0], "rb").read()
    header_end = 8 + struct.unpack("<Q", whole[:8])[0]
    for cut, match, tensor in (
        (0, "is 0 bytes, too short", None),
        (5, "is 5 bytes, too short", None),
        (header_end - 3, "declares a .*-byte header, but the file is", None),
        (header_end + 10, "ends at byte .* of the data, but the file holds 10 bytes", "b"),
        (len(whole) - 1, "ends at byte 88 of the data, but the file holds 87 bytes", "b"),
    ):
        path = tmp_path / f"cut{cut}.safetensors"
        path.write_bytes(whole[:cut])
        _refused(path, match, tensor)


def test_a_text_file_is_refused(tmp_path):
    path = tmp_path / "model.safetensors"
    path.write_text("version https://git-lfs.github.com/spec/v1\noid sha256:0123\nsize 123456\n")  # an LFS pointer
    _refused(path, "declares a .*-byte header, but the file is 71 bytes")


def test_a_header_that_claims_more_than_the_file_holds_is_refused(tmp_path):
    header = _good_header()
    header["y"]["data_offsets"] = [16, 24]
    _refused(
        _raw(tmp_path / "short.safetensors", header, bytes(20)),
        r"ends at byte 24 of the data, but the file holds 20",
        "y",
    )
    huge = {"x": {"dtype": "F32", "shape": [1 << 20, 1 << 20], "data_offsets": [0, 1 << 42]}}
    _refused(_raw(tmp_path / "huge.safetensors", huge, bytes(16)), "ends at byte 4398046511104", "x")
    _refused(
        _raw(tmp_path / "size.safetensors", _good_header(), bytes(24), header_size=1 << 40),
        "declares a 1099511627776-byte header",
    )


def test_overlapping_and_gapped_ranges_are_refused(tmp_path):
    overlap = _good_header()
    overlap["y"]["data_offsets"] = [8, 16]
    _refused(_raw(tmp_path / "overlap.safetensors", overlap, bytes(16)), r"bytes \[8, 16\) overlap those of 'x'", "y")
    gap = _good_header()
    gap["y"]["data_offsets"] = [20, 28]
    _refused(_raw(tmp_path / "gap.safetensors", gap, bytes(28)), r"bytes \[16, 20\) belong to no tensor", "y")


@pytest.mark.parametrize(
    "entry, match",
    [
        ({"dtype": "F8_E9M9", "shape": [4], "data_offsets": [0, 4]}, "unsupported dtype 'F8_E9M9'"),
        (
            {"dtype": "F32", "shape": [-1, 4], "data_offsets": [0, 16]},
            r"shape \[-1, 4\], expected a list of non-negative",
        ),
        ({"dtype": "F32", "shape": [3], "data_offsets": [0, 16]}, r"has 16 bytes, but shape \(3,\) of F32 needs 12"),
        ({"dtype": "F32", "shape": [4], "data_offsets": [16, 0]}, r"data_offsets \[16, 0\], expected \[begin, end\]"),
        ({"dtype": "F32", "shape": [4]}, "without exactly dtype, shape and data_offsets"),
    ],
    ids=["dtype", "negative shape", "size", "reversed offsets", "no offsets"],
)
def test_bad_entries_are_refused_naming_the_tensor(tmp_path, entry, match):
    _refused(_raw(tmp_path / "bad.safetensors", {"x": entry}, bytes(16)), match, "x")


def test_a_header_that_is_not_json_is_refused(tmp_path):
    path = tmp_path / "garbage.safetensors"
    path.write_bytes(struct.pack("<Q", 6) + b"\xff\xfe{}}]" + bytes(8))
    _refused(path, "has no JSON header")


def test_sharded_checkpoints_check_their_index(tmp_path):
    folder = tmp_path / "sharded"
    write_safetensors(TENSORS, str(folder), max_shard_bytes=32)
    index = json.loads((folder / INDEX_NAME).read_text())
    assert len(set(index["weight_map"].values())) > 1
    reader = SafetensorsReader(str(folder))
    assert all(np.array_equal(reader.get(k), v) for k, v in TENSORS.items())

    shard = index["weight_map"]["a"]
    (folder / INDEX_NAME).write_text(json.dumps({"weight_map": {**index["weight_map"], "ghost": shard}}))
    with pytest.raises(CheckpointError, match=f"tensor 'ghost' is listed in {shard}, which lacks it") as info:
        SafetensorsReader(str(folder))
    assert info.value.path == os.path.join(folder, INDEX_NAME)
    (folder / INDEX_NAME).write_text(json.dumps({"weight_map": {**index["weight_map"], "a": "gone.safetensors"}}))
    with pytest.raises(CheckpointError, match=r"lists shard files that do not exist: \['gone.safetensors'\]"):
        SafetensorsReader(str(folder))
    (folder / INDEX_NAME).write_text("{")
    with pytest.raises(CheckpointError, match="is not an index with a 'weight_map' object"):
        SafetensorsReader(str(folder))


def test_missing_and_misshapen_tensors_are_named(tmp_path):
    reader = SafetensorsReader(write_safetensors(TENSORS, str(tmp_path))[0])
    with pytest.raises(CheckpointError, match=r"tensor 'zz' is missing \(expected shape \(2,\)\)"):
        reader.get("zz", (2,))
    with pytest.raises(CheckpointError, match=r"tensor 'a' has shape \(3, 4\), expected \(4, 3\)"):
        reader.get("a", (4, 3))
