"""Writes the embedded corpus to disk: FLAC files, JSONL manifests, ``corpus.json``, a tokenizer.

Layout of ``DIR``::

    DIR/train/train-0000000.flac ...     16 kHz mono, 16-bit FLAC
    DIR/{train,dev,test,open_vocab}.jsonl  one record per line; ``audio_filepath`` is relative to
                                         the manifest's folder (DIR), e.g. "train/train-0000000.flac"
    DIR/corpus.json                      config, version, counts and hours per split (written last)
    DIR/tokenizer.model                  optional sentencepiece model trained on the train text

Record fields: ``id, audio_filepath, duration, num_samples, text, voice, rate, pitch,
pitch_range, word_gap, peak_db, noise, snr_db, split``; in test and open_vocab ``held_out_voice``,
in open_vocab ``open_vocab_words`` (its held-out words).

Safety: each FLAC is written to a temporary name and renamed, manifests are written only after
every file they list exists, and ``corpus.json`` marks a complete build. A build in progress is
marked by ``.build.json`` holding its config, so an interrupted build is resumed (existing
files are kept: they are complete by construction) and a folder built with other settings is
never mixed into. Re-running a complete build with the same config does nothing; a corpus of an
older ``CORPUS_VERSION`` (other sentences or splits) is rebuilt in place. The train
split holds utterances ``0 .. n-1`` with ``n`` the smallest count reaching ``train_hours``.

Same config -> byte-identical FLAC files (synthesis, resampling and FLAC encoding are
deterministic), whatever the number of workers.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import multiprocessing
import os
import shutil
import time
from pathlib import Path
from typing import Any, Iterable

import soundfile as sf

from jaxspeech import paths
from jaxspeech.errors import KnownError, UsageError
from jaxspeech.corpus.utterances import (
    CORPUS_VERSION,
    SAMPLE_RATE,
    CorpusConfig,
    render_utterance,
    utterance_id,
    utterance_spec,
)
from jaxspeech.corpus.sentences import SPLITS

log = logging.getLogger(__name__)

CORPUS_JSON = "corpus.json"
BUILD_MARKER = ".build.json"
TOKENIZER_MODEL = "tokenizer.model"
_BUILD_ORDER = ("dev", "test", "open_vocab", "train")  # held-out splits first: their durations size the train batches


class CorpusFolderError(KnownError, RuntimeError):
    """The output folder holds something this build must not overwrite or mix with."""


@dataclasses.dataclass(frozen=True)
class BuildSummary:
    out_dir: Path
    built: bool  # False when the folder was already complete
    seconds: float
    counts: dict[str, int]
    hours: dict[str, float]
    held_out_counts: dict[str, int]  # utterances with the held-out voice, per split
    tokenizer: Path | None


def manifest_path(out_dir: str | os.PathLike, split: str) -> Path:
    return Path(out_dir) / f"{split}.jsonl"


def read_manifest(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Records of a JSONL manifest, with a clear error naming the file and line on bad JSON."""
    records = []
    with open(path, encoding="utf-8") as f:
        for line_number, line in enumerate(f, 1):
            if line.strip():
                try:
                    records.append(json.loads(line))
                except json.JSONDecodeError as e:
                    raise ValueError(f"{path}:{line_number}: not a JSON record ({e.msg})") from None
    return records


def _write_atomic(path: Path, text: str) -> None:
    partial = path.with_name(path.name + ".partial")
    partial.write_text(text, encoding="utf-8")
    os.replace(partial, path)


def _render_to_file(task: tuple[CorpusConfig, str, int, str]) -> dict[str, Any]:
    """Worker: renders one utterance to ``path`` unless a complete file is already there."""
    config, split, index, path = task
    spec = utterance_spec(config, split, index)
    if os.path.exists(path):
        num_samples = sf.info(path).frames
    else:
        audio = render_utterance(spec)
        partial = f"{path}.{os.getpid()}.partial"
        sf.write(partial, audio, SAMPLE_RATE, subtype="PCM_16", format="FLAC")
        os.replace(partial, path)
        num_samples = audio.shape[0]
    return {"index": index, "num_samples": num_samples, **spec.metadata()}


class _Renderer:
    """Maps render tasks over a process pool (or inline for one worker), in index order."""

    def __init__(self, workers: int):
        # spawn: the caller may hold threads (JAX, tqdm) that a forked child must not inherit.
        self.pool = multiprocessing.get_context("spawn").Pool(workers) if workers > 1 else None

    def map(self, tasks: list[tuple]) -> Iterable[dict[str, Any]]:
        if self.pool is None:
            return map(_render_to_file, tasks)
        return self.pool.imap(_render_to_file, tasks, chunksize=4)

    def close(self) -> None:
        if self.pool is not None:
            self.pool.terminate()
            self.pool.join()


def _record(split: str, result: dict[str, Any]) -> dict[str, Any]:
    record = {k: v for k, v in result.items() if k != "index"}
    record["audio_filepath"] = f"{split}/{result['id']}.flac"
    record["duration"] = round(result["num_samples"] / SAMPLE_RATE, 4)
    order = ("id", "audio_filepath", "duration", "num_samples", "text")
    return {**{k: record[k] for k in order}, **{k: v for k, v in record.items() if k not in order}}


def _check_folder(out_dir: Path, config: CorpusConfig, overwrite: bool) -> bool:
    """True if ``out_dir`` already holds this exact corpus; raises if it holds another one."""
    wanted = {"version": CORPUS_VERSION, "config": config.to_json()}
    for marker in (CORPUS_JSON, BUILD_MARKER):
        path = out_dir / marker
        if not path.exists():
            continue
        try:
            found = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError:
            found = {}
        if found.get("version") != CORPUS_VERSION and str(found.get("version")).startswith("corpus-"):
            log.warning(
                "%s holds corpus version %s: rebuilding it as %s", out_dir, found.get("version"), CORPUS_VERSION
            )
            _remove_corpus(out_dir)
            return False
        same = {k: found.get(k) for k in wanted} == wanted
        if not same:
            if not overwrite:
                differing = sorted(k for k, v in wanted["config"].items() if found.get("config", {}).get(k) != v)
                raise CorpusFolderError(
                    f"{out_dir}: holds a corpus built with other settings (version {found.get('version')!r}, "
                    f"differing config keys {differing}); choose another folder or pass overwrite=True "
                    "(--overwrite) to delete it"
                )
            _remove_corpus(out_dir)
            return False
        # Same settings: a finished corpus is complete if all its files are there; a marked
        # build in progress is resumed.
        return marker == CORPUS_JSON and _files_complete(out_dir)
    if any((out_dir / split).exists() or manifest_path(out_dir, split).exists() for split in SPLITS):
        if overwrite:
            _remove_corpus(out_dir)
            return False
        raise CorpusFolderError(
            f"{out_dir}: has split folders or manifests but no {CORPUS_JSON} or {BUILD_MARKER}: not a corpus "
            "built by this tool; choose another folder or pass overwrite=True (--overwrite)"
        )
    return False


def _files_complete(out_dir: Path) -> bool:
    for split in SPLITS:
        path = manifest_path(out_dir, split)
        if not path.exists():
            return False
        if any(not (out_dir / r["audio_filepath"]).exists() for r in read_manifest(path)):
            return False
    return True


def _remove_corpus(out_dir: Path) -> None:
    """Deletes only what a build writes."""
    for split in SPLITS:
        shutil.rmtree(out_dir / split, ignore_errors=True)
        manifest_path(out_dir, split).unlink(missing_ok=True)
    for name in (CORPUS_JSON, BUILD_MARKER, TOKENIZER_MODEL):
        (out_dir / name).unlink(missing_ok=True)


def _build_split(
    out_dir: Path, config: CorpusConfig, split: str, renderer: _Renderer, progress, mean_duration: float
) -> list[dict[str, Any]]:
    folder = out_dir / split
    folder.mkdir(parents=True, exist_ok=True)

    def task(index: int) -> tuple[CorpusConfig, str, int, str]:
        return config, split, index, str(folder / f"{utterance_id(split, index)}.flac")

    fixed = config.split_size(split)
    records: list[dict[str, Any]] = []
    if fixed is not None:
        for result in renderer.map([task(i) for i in range(fixed)]):
            records.append(_record(split, result))
            progress.update(1)
    else:
        target = config.train_hours * 3600.0
        total, next_index = 0.0, 0
        while total < target:
            # Enough tasks for the remaining hours plus 3%; results come back in index order.
            batch = max(8, math.ceil((target - total) / mean_duration * 1.03))
            progress.total = (progress.total or 0) + batch
            # Every result is consumed, even past the target, so that no worker is still writing
            # when the surplus files are deleted below.
            for result in renderer.map([task(i) for i in range(next_index, next_index + batch)]):
                if total < target:
                    record = _record(split, result)
                    records.append(record)
                    total += record["duration"]
                progress.update(1)
            next_index += batch
            if total >= target:
                progress.total = progress.n
    listed = {Path(r["audio_filepath"]).name for r in records}
    for path in folder.iterdir():  # files past the train cut-off, leftovers of a killed build
        if path.name not in listed:
            path.unlink()
    _write_atomic(manifest_path(out_dir, split), "".join(json.dumps(r) + "\n" for r in records))
    return records


def _summary_from_manifests(
    out_dir: Path, config: CorpusConfig, seconds: float, built: bool, tokenizer: Path | None
) -> BuildSummary:
    counts, hours, held_out = {}, {}, {}
    for split in SPLITS:
        records = read_manifest(manifest_path(out_dir, split))
        counts[split] = len(records)
        hours[split] = sum(r["duration"] for r in records) / 3600.0
        held_out[split] = sum(bool(r.get("held_out_voice")) for r in records)
    return BuildSummary(out_dir, built, seconds, counts, hours, held_out, tokenizer)


def build_corpus(
    out_dir: str | os.PathLike,
    config: CorpusConfig = CorpusConfig(),
    *,
    workers: int | None = None,
    tokenizer_vocab: int | None = None,
    overwrite: bool = False,
    progress: bool = True,
) -> BuildSummary:
    """Builds (or completes) the corpus in ``out_dir``; see the module docstring for the layout."""
    from tqdm import tqdm

    if not paths.is_local(out_dir):
        raise UsageError(
            os.fspath(out_dir),
            "the eSpeak corpus is built in a local folder (data.dir); build it there, copy it to the "
            "bucket and set data.build_corpus=False to train from the copy",
        )
    start = time.perf_counter()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    complete = _check_folder(out_dir, config, overwrite)
    built = not complete
    if not complete:
        (out_dir / CORPUS_JSON).unlink(missing_ok=True)
        _write_atomic(out_dir / BUILD_MARKER, json.dumps({"version": CORPUS_VERSION, "config": config.to_json()}))
        renderer = _Renderer(workers or os.cpu_count() or 1)
        bar = tqdm(
            total=sum(config.split_size(split) for split in SPLITS if split != "train"),
            unit="utt",
            disable=not progress,
            desc=f"synthesising {out_dir}",
        )
        try:
            durations: list[float] = []
            for split in _BUILD_ORDER:
                records = _build_split(out_dir, config, split, renderer, bar, _mean(durations))
                durations.extend(r["duration"] for r in records)
        finally:
            bar.close()
            renderer.close()
    tokenizer, trained = _ensure_tokenizer(out_dir, tokenizer_vocab) if tokenizer_vocab else (None, False)
    summary = _summary_from_manifests(out_dir, config, time.perf_counter() - start, built, tokenizer)
    if built or trained:
        _write_corpus_json(out_dir, config, summary, tokenizer_vocab)
    (out_dir / BUILD_MARKER).unlink(missing_ok=True)
    return summary


def _mean(values: list[float], default: float = 3.0) -> float:
    return sum(values) / len(values) if values else default


def _ensure_tokenizer(out_dir: Path, vocab_size: int) -> tuple[Path, bool]:
    """(path, trained now): trains ``tokenizer.model`` on the train text unless one of that size is there."""
    path = out_dir / TOKENIZER_MODEL
    info_path = out_dir / CORPUS_JSON
    if path.exists() and info_path.exists():
        recorded = json.loads(info_path.read_text(encoding="utf-8")).get("tokenizer") or {}
        if recorded.get("vocab_size") == vocab_size:
            return path, False
    from jaxspeech.data.sentencepiece_training import train_sentencepiece

    texts = [r["text"] for r in read_manifest(manifest_path(out_dir, "train"))]
    train_sentencepiece(texts, vocab_size, path)
    return path, True


def _write_corpus_json(out_dir: Path, config: CorpusConfig, summary: BuildSummary, tokenizer_vocab: int | None) -> None:
    info_path = out_dir / CORPUS_JSON
    previous = json.loads(info_path.read_text(encoding="utf-8")) if info_path.exists() else {}
    info = {
        "version": CORPUS_VERSION,
        "config": config.to_json(),
        "sample_rate": SAMPLE_RATE,
        "manifests": {split: manifest_path(".", split).name for split in SPLITS},
        "counts": summary.counts,
        "hours": {k: round(v, 4) for k, v in summary.hours.items()},
        "held_out_counts": summary.held_out_counts,
        "voices": {"train": list(config.train_voices), "held_out": config.held_out_voice},
        "build_seconds": round(summary.seconds, 1) if summary.built else previous.get("build_seconds"),
        "tokenizer": {"path": TOKENIZER_MODEL, "vocab_size": tokenizer_vocab}
        if tokenizer_vocab
        else previous.get("tokenizer"),
    }
    _write_atomic(info_path, json.dumps(info, indent=2) + "\n")
