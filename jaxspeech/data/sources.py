"""Random-access speech sources (Grain's ``RandomAccessDataSource`` protocol: ``len`` and ``[i]``).

Every record is a dict with ``id`` (str), ``duration`` (seconds), ``text`` (str) and the audio as
one of ``audio_filepath`` (absolute path), ``audio`` (samples array) + ``sample_rate``, or
``audio_bytes`` (an encoded file in memory); optional ``instruction``, ``prompt``, ``target``,
``language``, plus whatever else a manifest line carries. ``durations()`` returns every record's
duration without decoding audio, which is what duration bucketing plans with.
"""

from __future__ import annotations

import glob
import io
import json
import logging
import math
import os
import posixpath
from typing import Any, Sequence

import numpy as np
import soundfile as sf

from jaxspeech import paths as path_lib
from jaxspeech.data import audio as audio_lib
from jaxspeech.errors import AudioError, ManifestError, RejectReason

log = logging.getLogger(__name__)

OPTIONAL_TEXT_FIELDS = ("instruction", "prompt", "target", "language")
# A record's audio held in memory: never copied into metadata or written out.
AUDIO_FIELDS = ("audio", "audio_bytes")


def answer_text(record) -> str:
    """What a model should output for ``record``: its ``target`` (a prompted task's answer: a
    translation, a question's answer) when it has a non-empty one, else its transcript ``text``."""
    return record.get("target") or record["text"]


def record_name(record: dict) -> str:
    """The file path of a record's audio, or a label for in-memory audio (used in error reports)."""
    return record.get("audio_filepath") or f"<{record.get('id', '?')}>"


def decode_record(
    record: dict,
    *,
    target_sample_rate: int = audio_lib.DEFAULT_SAMPLE_RATE,
    duration_tolerance: float = audio_lib.DEFAULT_DURATION_TOLERANCE,
    max_seconds: float | None = None,
) -> np.ndarray:
    """A record's audio as validated mono f32[N] at ``target_sample_rate`` (raises ``AudioError``)."""
    options = dict(
        target_sample_rate=target_sample_rate,
        expected_duration=record.get("duration"),
        duration_tolerance=duration_tolerance,
        max_seconds=max_seconds,
    )
    if "audio_filepath" in record:
        return audio_lib.load_audio(record["audio_filepath"], **options)
    if "audio_bytes" in record:
        return audio_lib.decode_audio_bytes(record["audio_bytes"], name=record_name(record), **options)
    if "audio" in record:
        if "sample_rate" not in record:
            raise AudioError(
                record_name(record), RejectReason.UNSUPPORTED_FORMAT, "record has 'audio' but no 'sample_rate'"
            )
        return audio_lib.prepare_waveform(record["audio"], record["sample_rate"], name=record_name(record), **options)
    raise AudioError(
        record_name(record), RejectReason.UNREADABLE, "record has none of 'audio_filepath', 'audio_bytes', 'audio'"
    )


def source_durations(source: Sequence[dict]) -> np.ndarray:
    """f64[N] durations of any source: its ``durations()`` if it has one, else each record's ``duration``."""
    if hasattr(source, "durations"):
        return np.asarray(source.durations(), dtype=np.float64)
    return np.asarray([source[i]["duration"] for i in range(len(source))], dtype=np.float64)


def _field_error(where: str, field: str, problem: str) -> ManifestError:
    return ManifestError(f"{where}: field {field!r} {problem}")


def _parse_manifest_line(line: str, where: str, base_dir: str) -> dict:
    try:
        entry = json.loads(line)
    except json.JSONDecodeError as e:
        raise ManifestError(f"{where}: not valid JSON ({e.msg} at column {e.colno})") from None
    if not isinstance(entry, dict):
        raise ManifestError(f"{where}: expected a JSON object, got {type(entry).__name__}")
    path = entry.get("audio_filepath")
    if not isinstance(path, str) or not path:
        raise _field_error(where, "audio_filepath", "is missing" if path is None else "must be a non-empty string")
    duration = entry.get("duration")
    if duration is None:
        raise _field_error(where, "duration", "is missing")
    if (
        isinstance(duration, bool)
        or not isinstance(duration, (int, float))
        or not math.isfinite(duration)
        or duration < 0
    ):
        raise _field_error(where, "duration", f"must be a finite number of seconds >= 0, got {duration!r}")
    text = entry.get("text")
    if not isinstance(text, str):
        raise _field_error(
            where, "text", "is missing" if text is None else f"must be a string, got {type(text).__name__}"
        )
    for field in OPTIONAL_TEXT_FIELDS:
        if field in entry and not isinstance(entry[field], str):
            raise _field_error(where, field, f"must be a string, got {type(entry[field]).__name__}")
    record_id = entry.get("id", where)
    if not isinstance(record_id, (str, int)) or isinstance(record_id, bool):
        raise _field_error(where, "id", f"must be a string, got {type(record_id).__name__}")
    record = dict(entry)
    record["id"] = str(record_id)
    record["audio_filepath"] = _audio_path(base_dir, path)
    record["duration"] = float(duration)
    return record


def _audio_path(base_dir: str, path: str) -> str:
    """A manifest's audio path made absolute: relative paths are under the manifest's folder (local
    or bucket alike); a bucket URI stays as written."""
    if not path_lib.is_local(path):
        return path
    if path_lib.is_local(base_dir):
        return os.path.normpath(os.path.join(base_dir, os.path.expanduser(path)))
    return path_lib.join(base_dir, posixpath.normpath(path))


class ManifestSource:
    """Records of one or more JSONL manifests, concatenated in the order given.

    Each non-blank line is a JSON object with ``audio_filepath`` (relative to the manifest's
    folder, or absolute), ``duration`` (s), ``text`` and optionally ``id`` (default
    ``"<manifest>:<line>"``), ``instruction``, ``prompt``, ``target``, ``language``. A malformed line
    raises ``ManifestError`` naming ``file:line`` and the field.
    """

    def __init__(self, paths: str | os.PathLike | Sequence[str | os.PathLike]):
        paths = [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)
        if not paths:
            raise ManifestError("ManifestSource needs at least one manifest path")
        self.paths = tuple(path_lib.absolute(p) for p in paths)
        self._records: list[dict] = []
        for path in self.paths:
            self._records.extend(self._read(path))

    @staticmethod
    def _read(path: str) -> list[dict]:
        base_dir = os.path.dirname(path)
        try:
            lines = path_lib.read_text(path).split("\n")
        except (OSError, UnicodeDecodeError) as e:
            raise ManifestError(f"{path}: cannot read the manifest ({e})") from None
        return [
            _parse_manifest_line(line, f"{path}:{number}", base_dir)
            for number, line in enumerate(lines, start=1)
            if line.strip()
        ]

    def __len__(self) -> int:
        return len(self._records)

    def __getitem__(self, index: int) -> dict:
        return dict(self._records[index])

    def durations(self) -> np.ndarray:
        return np.asarray([r["duration"] for r in self._records], dtype=np.float64)

    def __repr__(self) -> str:
        return f"ManifestSource({len(self)} records from {len(self.paths)} manifest(s))"


class LibriSpeechSource:
    """A LibriSpeech-layout folder: ``root/<speaker>/<chapter>/<speaker>-<chapter>.trans.txt``
    with lines ``<speaker>-<chapter>-<utt> TRANSCRIPT`` and ``<speaker>-<chapter>-<utt>.flac`` beside it.

    Durations come from the FLAC headers (read once, on the first ``durations()`` call); a file
    whose header cannot be read gets a NaN duration, which the pipeline counts as unreadable.
    """

    def __init__(self, root: str | os.PathLike, audio_extension: str = ".flac"):
        self.root = os.path.abspath(os.fspath(root))
        pattern = os.path.join(self.root, "*", "*", "*.trans.txt")
        transcripts = sorted(glob.glob(pattern))
        if not transcripts:
            raise ManifestError(f"{self.root}: no LibriSpeech transcripts found (expected {pattern})")
        self._records: list[dict] = []
        for path in transcripts:
            self._records.extend(self._read_transcript(path, audio_extension))
        self._durations: np.ndarray | None = None

    @staticmethod
    def _read_transcript(path: str, audio_extension: str) -> list[dict]:
        folder = os.path.dirname(path)
        prefix = os.path.basename(path)[: -len(".trans.txt")] + "-"
        records = []
        with open(path, encoding="utf-8") as f:
            for number, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                utterance, _, text = line.strip().partition(" ")
                if not utterance.startswith(prefix) or not text.strip():
                    raise ManifestError(
                        f"{path}:{number}: expected '{prefix}<utt> TRANSCRIPT', got {line.strip()[:80]!r}"
                    )
                records.append(
                    {
                        "id": utterance,
                        "audio_filepath": os.path.join(folder, utterance + audio_extension),
                        "text": text.strip(),
                    }
                )
        return records

    def durations(self) -> np.ndarray:
        if self._durations is None:
            self._durations = np.asarray(
                [_header_duration(r["audio_filepath"]) for r in self._records], dtype=np.float64
            )
        return self._durations

    def __len__(self) -> int:
        return len(self._records)

    def __getitem__(self, index: int) -> dict:
        record = dict(self._records[index])
        duration = float(self.durations()[index])
        if math.isfinite(duration):
            record["duration"] = duration
        return record

    def __repr__(self) -> str:
        return f"LibriSpeechSource({len(self)} utterances under {self.root})"


def write_manifest(source: Sequence[dict], path: str | os.PathLike) -> int:
    """Writes the records of ``source`` (e.g. a ``LibriSpeechSource``) as the JSONL manifest
    ``path`` that ``ManifestSource`` reads: ``id``, ``audio_filepath`` (absolute), ``duration``,
    ``text`` and the optional text fields. Records whose duration is unknown (an unreadable audio
    header) are left out with a warning naming the first. The file appears whole or not at all
    (written beside it, then renamed). Returns the number of records written."""
    path = os.fspath(path)
    keep = ("id", "audio_filepath", "duration", "text", *OPTIONAL_TEXT_FIELDS)
    records = [source[i] for i in range(len(source))]
    unreadable = [r for r in records if not math.isfinite(r.get("duration", math.nan))]
    if unreadable:
        log.warning(
            "%s: %d record(s) left out, their audio header is unreadable (first: %s)",
            path,
            len(unreadable),
            record_name(unreadable[0]),
        )
    written = [r for r in records if math.isfinite(r.get("duration", math.nan))]
    path_lib.make_dirs(os.path.dirname(path_lib.absolute(path)))
    lines = (json.dumps({k: record[k] for k in keep if k in record}, ensure_ascii=False) + "\n" for record in written)
    path_lib.write_whole(path, "".join(lines))
    return len(written)


def _header_duration(path: str) -> float:
    try:
        info = sf.info(path)
    except (sf.LibsndfileError, RuntimeError, OSError):
        return math.nan
    return info.frames / info.samplerate if info.samplerate > 0 else math.nan


def _as_text(value: Any) -> str:
    if isinstance(value, np.ndarray) and value.shape == ():
        value = value.item()
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


class TfdsSource:
    """A prepared TFDS dataset read through ``tfds.data_source`` (array_record files).

    ``audio_key`` (default: ``speech`` or ``audio``, whichever exists) holds either a samples array
    (int PCM or float) or encoded file bytes. ``sample_rate`` defaults to the feature's own
    ``sample_rate`` (``tfds.features.Audio``); plain tensor features need it passed. Durations are
    measured by reading every record once, on the first ``durations()`` call.
    """

    def __init__(
        self,
        name: str,
        split: str,
        data_dir: str | os.PathLike | None = None,
        *,
        audio_key: str | None = None,
        text_key: str = "text",
        id_key: str | None = "id",
        sample_rate: int | None = None,
    ):
        try:
            import tensorflow_datasets as tfds  # optional dependency: the [tfds] extra
        except ImportError as e:
            raise ManifestError(
                f"TFDS {name}/{split}: reading a TFDS dataset needs tensorflow-datasets and array-record "
                f"(pip install 'jaxspeech[tfds]'): {e}"
            ) from None

        self.name, self.split = name, split
        self._source = tfds.data_source(name, split=split, data_dir=None if data_dir is None else os.fspath(data_dir))
        features = self._source.dataset_info.features
        keys = list(features.keys())
        if audio_key is None:
            audio_key = next((k for k in ("speech", "audio") if k in keys), None)
        if audio_key not in keys:
            raise ManifestError(f"TFDS {name}/{split}: no audio feature {audio_key!r}; features are {keys}")
        if text_key not in keys:
            raise ManifestError(f"TFDS {name}/{split}: no text feature {text_key!r}; features are {keys}")
        self.audio_key, self.text_key = audio_key, text_key
        self.id_key = id_key if id_key in keys else None
        self.sample_rate = sample_rate or getattr(features[audio_key], "sample_rate", None)
        self._durations: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self._source)

    def _to_record(self, index: int, raw: dict) -> dict:
        record = {
            "id": _as_text(raw[self.id_key]) if self.id_key else f"{self.name}/{self.split}/{index}",
            "text": _as_text(raw[self.text_key]),
        }
        value = raw[self.audio_key]
        if isinstance(value, (bytes, np.bytes_)) or (isinstance(value, np.ndarray) and value.dtype == object):
            data = bytes(value.item() if isinstance(value, np.ndarray) else value)
            record["audio_bytes"] = data
            record["duration"] = _bytes_duration(data)
        else:
            if not self.sample_rate:
                raise ManifestError(
                    f"TFDS {self.name}/{self.split}: feature {self.audio_key!r} has no sample_rate; pass sample_rate="
                )
            samples = np.asarray(value)
            record["audio"] = samples
            record["sample_rate"] = int(self.sample_rate)
            record["duration"] = samples.shape[0] / self.sample_rate
        for field in OPTIONAL_TEXT_FIELDS:
            if field in raw:
                record[field] = _as_text(raw[field])
        if not math.isfinite(record["duration"]):
            del record["duration"]
        return record

    def __getitem__(self, index: int) -> dict:
        return self._to_record(index, self._source[index])

    def durations(self) -> np.ndarray:
        if self._durations is None:
            self._durations = np.asarray(
                [self[i].get("duration", math.nan) for i in range(len(self))], dtype=np.float64
            )
        return self._durations

    def __repr__(self) -> str:
        return f"TfdsSource({self.name}/{self.split}, {len(self)} records)"


class ConcatSource:
    """Random-access sources one after another (``len`` and ``[i]`` over all of them)."""

    def __init__(self, sources: Sequence[Sequence[dict]]):
        self.sources = list(sources)
        self._starts = np.cumsum([0] + [len(s) for s in self.sources])

    def __len__(self) -> int:
        return int(self._starts[-1])

    def __getitem__(self, index: int) -> dict:
        if not 0 <= index < len(self):
            raise IndexError(f"record {index} of {len(self)}")
        k = int(np.searchsorted(self._starts, index, side="right")) - 1
        return self.sources[k][index - int(self._starts[k])]

    def durations(self) -> np.ndarray:
        return np.concatenate([source_durations(s) for s in self.sources])

    def __repr__(self) -> str:
        return f"ConcatSource({', '.join(map(repr, self.sources))})"


def _bytes_duration(data: bytes) -> float:
    try:
        info = sf.info(io.BytesIO(data))
    except (sf.LibsndfileError, RuntimeError):
        return math.nan
    return info.frames / info.samplerate if info.samplerate > 0 else math.nan
