"""The on-disk corpus: determinism, manifests that match the generator and the files, split
hygiene, idempotence, resuming an interrupted build, refusing foreign folders, and the CLI."""

import json
import os
import re

import numpy as np
import pytest
import soundfile as sf

from jaxspeech.corpus.sentences import SPLITS, open_vocab_words
from jaxspeech.corpus.utterances import CORPUS_VERSION, CorpusConfig, utterance_spec
from jaxspeech.corpus.build import (
    BUILD_MARKER,
    CORPUS_JSON,
    CorpusFolderError,
    build_corpus,
    manifest_path,
    read_manifest,
)

TINY = CorpusConfig(
    train_hours=0.012,
    dev_utterances=6,
    test_utterances=6,
    held_out_utterances=4,
    open_vocab_utterances=3,
    open_vocab_held_out_utterances=2,
)


def manifests(folder):
    return {split: read_manifest(manifest_path(folder, split)) for split in SPLITS}


def flac_bytes(folder):
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.glob("*/*.flac"))}


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny")
    summary = build_corpus(folder, TINY, workers=2, tokenizer_vocab=64, progress=False)
    return folder, summary


def test_layout_counts_and_summary(built):
    folder, summary = built
    assert summary.built and (folder / CORPUS_JSON).exists() and not (folder / BUILD_MARKER).exists()
    records = manifests(folder)
    assert {k: len(v) for k, v in records.items()} == summary.counts
    assert summary.counts["dev"] == 6 and summary.counts["test"] == 10 and summary.held_out_counts["test"] == 4
    train_seconds = sum(r["duration"] for r in records["train"])
    assert train_seconds >= TINY.train_hours * 3600 > train_seconds - records["train"][-1]["duration"]
    info = json.loads((folder / CORPUS_JSON).read_text())
    assert info["config"] == TINY.to_json() and info["counts"] == summary.counts
    assert info["tokenizer"]["vocab_size"] == 64 and (folder / "tokenizer.model").exists()
    assert sorted(p.name for p in (folder / "train").iterdir()) == sorted(
        os.path.basename(r["audio_filepath"]) for r in records["train"]
    )


def test_manifest_matches_generator_and_files(built):
    folder, _ = built
    for split, records in manifests(folder).items():
        for index, record in enumerate(records):
            spec = utterance_spec(TINY, split, index)
            assert record["id"] == spec.id and record["text"] == spec.text and record["voice"] == spec.voice
            assert (record["rate"], record["pitch"], record["split"]) == (spec.rate, spec.pitch, split)
            assert re.fullmatch(r"[a-z]+( [a-z]+)*", record["text"])
            audio, rate = sf.read(folder / record["audio_filepath"], dtype="float32")
            assert rate == 16000 and audio.ndim == 1 and audio.size == record["num_samples"]
            assert record["duration"] == pytest.approx(audio.size / 16000, abs=1e-4)
            assert np.all(np.isfinite(audio)) and np.sqrt(np.mean(audio**2)) > 1e-3


def test_splits_disjoint_and_held_out_voice_only_in_test_sets(built):
    folder, _ = built
    records = manifests(folder)
    texts = {split: {r["text"] for r in rs} for split, rs in records.items()}
    for i, first in enumerate(SPLITS):
        for second in SPLITS[i + 1 :]:
            assert not texts[first] & texts[second], (first, second)
    for split in ("train", "dev"):
        assert all(r["voice"] != TINY.held_out_voice and "held_out_voice" not in r for r in records[split])
    for split in ("test", "open_vocab"):
        for record in records[split]:
            assert record["held_out_voice"] == (record["voice"] == TINY.held_out_voice)
    assert [r["held_out_voice"] for r in records["open_vocab"]] == [False] * 3 + [True] * 2


def test_open_vocab_words_only_in_the_open_vocab_manifest(built):
    folder, summary = built
    records = manifests(folder)
    held_out = open_vocab_words()
    for split in ("train", "dev", "test"):
        assert not {w for r in records[split] for w in r["text"].split()} & held_out, split
    for record in records["open_vocab"]:
        assert record["open_vocab_words"] == sorted(set(record["text"].split()) & held_out) != []
    assert summary.counts["open_vocab"] == 5 and summary.held_out_counts == {
        "train": 0,
        "dev": 0,
        "test": 4,
        "open_vocab": 2,
    }


def test_a_corpus_of_an_older_version_is_rebuilt(tmp_path):
    config = CorpusConfig(
        train_hours=0.001,
        dev_utterances=1,
        test_utterances=1,
        held_out_utterances=0,
        open_vocab_utterances=1,
        open_vocab_held_out_utterances=0,
    )
    folder = tmp_path / "old"
    build_corpus(folder, config, workers=1, progress=False)
    info = json.loads((folder / CORPUS_JSON).read_text())
    old_config = {k: v for k, v in info["config"].items() if not k.startswith("open_vocab")}
    (folder / CORPUS_JSON).write_text(json.dumps({**info, "version": "corpus-1/sentences-1", "config": old_config}))
    manifest_path(folder, "open_vocab").unlink()
    (folder / "dev" / "dev-0000000.flac").write_bytes(b"an old rendering")
    summary = build_corpus(folder, config, workers=1, progress=False)
    assert summary.built and json.loads((folder / CORPUS_JSON).read_text())["version"] == CORPUS_VERSION
    assert manifest_path(folder, "open_vocab").exists()
    assert sf.info(folder / "dev" / "dev-0000000.flac").frames > 0


def test_deterministic_for_a_seed_and_different_for_another(built, tmp_path):
    folder, _ = built
    again = build_corpus(tmp_path / "again", TINY, workers=1, progress=False)
    assert flac_bytes(again.out_dir) == flac_bytes(folder)  # byte-identical, other worker count
    assert manifests(again.out_dir) == manifests(folder)
    other_seed = CorpusConfig(
        seed=1,
        train_hours=0.001,
        dev_utterances=2,
        test_utterances=2,
        held_out_utterances=1,
        open_vocab_utterances=1,
        open_vocab_held_out_utterances=1,
    )
    other = build_corpus(tmp_path / "other", other_seed, workers=1, progress=False)
    assert not {r["text"] for r in manifests(other.out_dir)["dev"]} & {r["text"] for r in manifests(folder)["dev"]}
    assert flac_bytes(other.out_dir)["dev/dev-0000000.flac"] != flac_bytes(folder)["dev/dev-0000000.flac"]


def test_rerun_is_a_no_op(built):
    folder, _ = built
    stamps = {p: p.stat().st_mtime_ns for p in folder.rglob("*")}
    summary = build_corpus(folder, TINY, workers=2, tokenizer_vocab=64, progress=False)
    assert not summary.built
    assert {p: p.stat().st_mtime_ns for p in folder.rglob("*")} == stamps


def test_interrupted_build_is_completed(tmp_path):
    config = CorpusConfig(
        train_hours=0.003,
        dev_utterances=3,
        test_utterances=2,
        held_out_utterances=1,
        open_vocab_utterances=1,
        open_vocab_held_out_utterances=1,
    )
    folder = tmp_path / "partial"
    build_corpus(folder, config, workers=1, progress=False)
    reference = flac_bytes(folder)
    # Simulate a kill mid-build: marker present, no corpus.json, a missing file, a stray partial.
    (folder / CORPUS_JSON).unlink()
    (folder / BUILD_MARKER).write_text(json.dumps({"version": CORPUS_VERSION, "config": config.to_json()}))
    (folder / "dev" / "dev-0000001.flac").unlink()
    (folder / "train" / "train-0000000.flac.123.partial").write_bytes(b"half a file")
    summary = build_corpus(folder, config, workers=1, progress=False)
    assert summary.built and flac_bytes(folder) == reference
    assert not list(folder.glob("*/*.partial")) and (folder / CORPUS_JSON).exists()
    # A complete folder with a file deleted afterwards is repaired, not trusted.
    (folder / "test" / "test-0000002.flac").unlink()
    assert build_corpus(folder, config, workers=1, progress=False).built and flac_bytes(folder) == reference


def test_foreign_or_different_folders_are_refused(tmp_path, built):
    folder, _ = built
    with pytest.raises(CorpusFolderError, match="other settings.*seed"):
        build_corpus(
            folder,
            CorpusConfig(seed=5, train_hours=0.012, open_vocab_utterances=1, open_vocab_held_out_utterances=0),
            progress=False,
        )
    stranger = tmp_path / "stranger"
    (stranger / "train").mkdir(parents=True)
    (stranger / "train" / "mine.flac").write_bytes(b"not ours")
    with pytest.raises(CorpusFolderError, match="not a corpus built by this tool"):
        build_corpus(stranger, TINY, progress=False)
    small = CorpusConfig(
        train_hours=0.001,
        dev_utterances=1,
        test_utterances=1,
        held_out_utterances=1,
        open_vocab_utterances=1,
        open_vocab_held_out_utterances=1,
    )
    assert build_corpus(stranger, small, workers=1, overwrite=True, progress=False).built
    assert not (stranger / "train" / "mine.flac").exists()


def test_bad_manifest_line_is_named(tmp_path):
    path = tmp_path / "broken.jsonl"
    path.write_text('{"id": "a"}\n{not json\n')
    with pytest.raises(ValueError, match=r"broken.jsonl:2"):
        read_manifest(path)


def test_cli_end_to_end(tmp_path, capsys):
    from jaxspeech.cli import main

    out = tmp_path / "cli"
    argv = [
        "prepare-data",
        "tiny",
        "--out",
        str(out),
        "--hours",
        "0.002",
        "--dev",
        "2",
        "--test",
        "2",
        "--held-out",
        "1",
        "--open-vocab",
        "2",
        "--open-vocab-held-out",
        "0",
        "--workers",
        "1",
        "--no-progress",
        "--seed",
        "3",
    ]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "built in" in printed and "train.jsonl" in printed and "1 with held-out voice" in printed
    info = json.loads((out / CORPUS_JSON).read_text())
    assert info["config"]["seed"] == 3 and info["counts"]["test"] == 3 and info["counts"]["open_vocab"] == 2
    assert main(argv) == 0 and "nothing to do" in capsys.readouterr().out
    assert main(argv[:-1] + ["4"]) == 2 and "other settings" in capsys.readouterr().err
