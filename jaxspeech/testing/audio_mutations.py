"""Seeded mutations of valid WAV, FLAC and OGG files for the audio fuzzer: header fields set to
extremes (sizes, sample counts, rates, channels, granule positions), random bit flips, overwritten
runs, truncations, insertions and duplicated stretches of the body."""

from __future__ import annotations

import io
import random
import struct

import numpy as np
import soundfile as sf

# (container, subtype, sample rate, channels)
BASES = (
    ("WAV", "PCM_16", 16000, 1),
    ("WAV", "FLOAT", 22050, 2),
    ("WAV", "PCM_U8", 8000, 1),
    ("FLAC", "PCM_16", 16000, 1),
    ("FLAC", "PCM_24", 44100, 2),
    ("OGG", "VORBIS", 16000, 1),
    ("OGG", "OPUS", 48000, 1),
)
EXTREMES_32 = (0, 1, 0x7FFFFFFF, 0xFFFFFFFF, 0x80000000, 0xFFFFFFFE, 65535)

# Byte ranges of header fields worth breaking, per container: (offset, size, byte order).
_WAV_FIELDS = (
    (4, 4, "<"),
    (16, 4, "<"),
    (22, 2, "<"),
    (24, 4, "<"),
    (28, 4, "<"),
    (32, 2, "<"),
    (34, 2, "<"),
    (40, 4, "<"),
)
_FLAC_FIELDS = ((8, 2, ">"), (10, 2, ">"), (12, 3, ">"), (15, 3, ">"), (18, 4, ">"), (21, 5, ">"), (5, 3, ">"))


def encode(container: str, subtype: str, rate: int, channels: int, seconds: float, seed: int) -> bytes:
    """A valid file: a chirp plus noise of ``seconds`` seconds."""
    rng = np.random.default_rng(seed)
    n = int(seconds * rate)
    t = np.arange(n) / rate
    audio = np.stack(
        [
            0.3 * np.sin(2 * np.pi * (200 + 100 * c + 300 * t) * t) + 0.01 * rng.standard_normal(n)
            for c in range(channels)
        ],
        axis=1,
    ).astype(np.float32)
    buffer = io.BytesIO()
    sf.write(buffer, audio, rate, format=container, subtype=subtype)
    return buffer.getvalue()


def _ogg_page_offsets(data: bytes) -> list[int]:
    offsets, position = [], data.find(b"OggS")
    while position >= 0:
        offsets.append(position)
        position = data.find(b"OggS", position + 4)
    return offsets


def _set_field(data: bytearray, offset: int, size: int, order: str, value: int) -> None:
    if offset + size <= len(data):
        value &= (1 << (8 * size)) - 1
        data[offset : offset + size] = value.to_bytes(size, "little" if order == "<" else "big")


def _header_fields(container: str, data: bytes) -> list[tuple[int, int, str]]:
    if container == "WAV":
        fields = list(_WAV_FIELDS)
        data_chunk = data.find(b"data")
        if data_chunk >= 0:
            fields.append((data_chunk + 4, 4, "<"))
        return fields
    if container == "FLAC":
        return list(_FLAC_FIELDS)
    fields = []
    for page in _ogg_page_offsets(data)[:4] + _ogg_page_offsets(data)[-2:]:
        fields += [(page + 6, 4, "<"), (page + 10, 4, "<"), (page + 26, 1, "<"), (page + 27, 1, "<")]
    for marker, fields_after in ((b"\x01vorbis", ((11, 1), (12, 4), (28, 1))), (b"OpusHead", ((9, 1), (12, 4)))):
        start = data.find(marker)
        if start >= 0:
            fields += [(start + offset, size, "<") for offset, size in fields_after]
    return fields


def mutate(container: str, data: bytes, rng: random.Random) -> tuple[bytes, list[str]]:
    """``data`` with 1 to 3 mutations; returns (mutated bytes, what was done)."""
    data = bytearray(data)
    done = []
    for _ in range(rng.randint(1, 3)):
        kind = rng.choice(("field", "field", "flip", "overwrite", "truncate", "insert", "duplicate"))
        if kind == "field":
            offset, size, order = rng.choice(_header_fields(container, bytes(data)))
            value = rng.choice(EXTREMES_32 + (rng.getrandbits(8 * size), (1 << 36) - 1, 2 * len(data)))
            _set_field(data, offset, size, order, value)
            done.append(f"field@{offset}={value:#x}")
        elif kind == "flip" and data:
            for _ in range(rng.randint(1, 8)):
                position = rng.randrange(len(data)) if rng.random() < 0.5 else rng.randrange(min(len(data), 96))
                data[position] ^= 1 << rng.randrange(8)
            done.append("flip")
        elif kind == "overwrite" and data:
            start = rng.randrange(len(data))
            length = rng.randint(1, 64)
            filler = rng.choice((b"\x00", b"\xff", None))
            data[start : start + length] = filler * length if filler else rng.randbytes(length)
            done.append(f"overwrite@{start}+{length}")
        elif kind == "truncate" and data:
            keep = rng.randrange(len(data))
            del data[keep:]
            done.append(f"truncate@{keep}")
        elif kind == "insert":
            position = rng.randrange(len(data) + 1)
            data[position:position] = rng.randbytes(rng.randint(1, 32))
            done.append(f"insert@{position}")
        elif kind == "duplicate" and len(data) > 2:
            start = rng.randrange(len(data) - 1)
            stretch = data[start : start + rng.randint(1, 4096)]
            data[start:start] = stretch * rng.randint(1, 4)
            done.append(f"duplicate@{start}")
    return bytes(data), done


def lying_flac(total_samples: int = (1 << 36) - 1) -> bytes:
    """A valid short FLAC whose STREAMINFO claims ``total_samples`` samples (the header lies)."""
    data = bytearray(encode("FLAC", "PCM_16", 16000, 1, 0.2, seed=0))
    # STREAMINFO: 8-byte marker+block header, then 10 bytes, then 20 bits rate | 3 channels-1 | 5 bps-1 | 36 samples.
    packed = struct.unpack(">Q", bytes(data[18:26]))[0]
    packed = (packed & ~((1 << 36) - 1)) | (total_samples & ((1 << 36) - 1))
    data[18:26] = struct.pack(">Q", packed)
    return bytes(data)
