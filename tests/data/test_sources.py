"""ManifestSource, LibriSpeechSource and TfdsSource, and decoding their records."""

import json
import os
import sys

import numpy as np
import pytest

from jaxspeech.errors import AudioError, ManifestError, RejectReason
from jaxspeech.data.sources import (
    ConcatSource,
    LibriSpeechSource,
    ManifestSource,
    TfdsSource,
    decode_record,
    source_durations,
)
from jaxspeech.testing import audio_files
from jaxspeech.testing.tfds_data import write_tiny_speech


def test_manifest_resolves_relative_and_absolute_paths(tmp_path):
    (tmp_path / "sub").mkdir()
    relative_duration = audio_files.write_clip(str(tmp_path / "sub" / "a.flac"), 0.3)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    absolute = str(elsewhere / "b.wav")
    absolute_duration = audio_files.write_clip(absolute, 0.2)
    manifest = audio_files.write_manifest(
        str(tmp_path / "m.jsonl"),
        [
            {
                "id": "a",
                "audio_filepath": "sub/a.flac",
                "duration": relative_duration,
                "text": "hello",
                "voice": "en-us",
            },
            {
                "audio_filepath": absolute,
                "duration": absolute_duration,
                "text": "x",
                "instruction": "ast",
                "target": "y",
                "language": "de",
            },
        ],
    )
    source = ManifestSource(manifest)
    assert len(source) == 2
    first, second = source[0], source[1]
    assert first["audio_filepath"] == str(tmp_path / "sub" / "a.flac") and first["voice"] == "en-us"
    assert second["audio_filepath"] == absolute and second["id"] == f"{manifest}:2"
    assert (second["instruction"], second["target"], second["language"]) == ("ast", "y", "de")
    np.testing.assert_allclose(source.durations(), [relative_duration, absolute_duration])
    assert decode_record(first).shape == (4800,)
    first["text"] = "mutated"
    assert source[0]["text"] == "hello"  # records are copies


def test_manifests_concatenate_in_order(tmp_path):
    one = audio_files.write_manifest(
        str(tmp_path / "1.jsonl"), [{"audio_filepath": "x.wav", "duration": 1, "text": "a"}]
    )
    two = audio_files.write_manifest(
        str(tmp_path / "2.jsonl"),
        [
            {"audio_filepath": "y.wav", "duration": 2.5, "text": "b"},
            {"audio_filepath": "z.wav", "duration": 3, "text": "c"},
        ],
    )
    source = ManifestSource([one, two])
    assert [source[i]["text"] for i in range(3)] == ["a", "b", "c"]
    assert source_durations(source).tolist() == [1.0, 2.5, 3.0]


@pytest.mark.parametrize(
    "line,expected",
    [
        ('{"audio_filepath": "a.wav", "duration": 1.0', "not valid JSON"),
        ('["a.wav", 1.0, "text"]', "expected a JSON object"),
        ('{"duration": 1.0, "text": "t"}', "'audio_filepath' is missing"),
        ('{"audio_filepath": "a.wav", "text": "t"}', "'duration' is missing"),
        ('{"audio_filepath": "a.wav", "duration": "1.0", "text": "t"}', "'duration' must be a finite number"),
        ('{"audio_filepath": "a.wav", "duration": -2, "text": "t"}', "'duration' must be a finite number"),
        ('{"audio_filepath": "a.wav", "duration": NaN, "text": "t"}', "'duration' must be a finite number"),
        ('{"audio_filepath": "a.wav", "duration": 1.0}', "'text' is missing"),
        ('{"audio_filepath": "a.wav", "duration": 1.0, "text": 5}', "'text' must be a string"),
        (
            '{"audio_filepath": "a.wav", "duration": 1.0, "text": "t", "instruction": 3}',
            "'instruction' must be a string",
        ),
        ('{"audio_filepath": "", "duration": 1.0, "text": "t"}', "'audio_filepath' must be a non-empty string"),
    ],
)
def test_malformed_manifest_lines_name_file_line_and_field(tmp_path, line, expected):
    path = str(tmp_path / "bad.jsonl")
    with open(path, "w") as f:
        f.write(json.dumps({"audio_filepath": "ok.wav", "duration": 1.0, "text": "fine"}) + "\n\n" + line + "\n")
    with pytest.raises(ManifestError) as info:
        ManifestSource(path)
    assert f"{path}:3" in str(info.value) and expected in str(info.value)


def test_missing_manifest_is_a_clear_error(tmp_path):
    with pytest.raises(ManifestError, match="cannot read the manifest"):
        ManifestSource(str(tmp_path / "nope.jsonl"))


def _librispeech(root):
    layout = {("19", "198"): ["NORTHANGER ABBEY", "THIS LITTLE WORK"], ("26", "495"): ["CHAPTER ONE"]}
    durations = {}
    for (speaker, chapter), texts in layout.items():
        folder = os.path.join(root, speaker, chapter)
        os.makedirs(folder)
        lines = []
        for n, text in enumerate(texts):
            utterance = f"{speaker}-{chapter}-{n:04d}"
            durations[utterance] = audio_files.write_clip(
                os.path.join(folder, utterance + ".flac"), 0.2 + 0.1 * n, seed=n
            )
            lines.append(f"{utterance} {text}\n")
        with open(os.path.join(folder, f"{speaker}-{chapter}.trans.txt"), "w") as f:
            f.writelines(lines)
    return durations


def test_librispeech_layout(tmp_path):
    durations = _librispeech(str(tmp_path))
    source = LibriSpeechSource(str(tmp_path))
    assert [source[i]["id"] for i in range(len(source))] == sorted(durations)
    assert source[1]["text"] == "THIS LITTLE WORK"
    assert source[1]["audio_filepath"] == str(tmp_path / "19" / "198" / "19-198-0001.flac")
    np.testing.assert_allclose(source.durations(), [durations[k] for k in sorted(durations)])
    assert decode_record(source[2]).shape == (3200,)


def test_librispeech_unreadable_header_gives_unknown_duration(tmp_path):
    _librispeech(str(tmp_path))
    with open(tmp_path / "26" / "495" / "26-495-0000.flac", "wb") as f:
        f.write(b"not flac")
    source = LibriSpeechSource(str(tmp_path))
    assert np.isnan(source.durations()[2]) and "duration" not in source[2]


def test_a_librispeech_folder_becomes_a_manifest_of_its_readable_utterances(tmp_path):
    from jaxspeech.recipes.build import manifest_file

    root = tmp_path / "LibriSpeech" / "dev-clean"
    durations = _librispeech(str(root))
    with open(root / "26" / "495" / "26-495-0000.flac", "wb") as f:
        f.write(b"not flac")
    path = manifest_file(str(tmp_path / "manifests"), str(root))  # a set name that is a LibriSpeech folder
    assert os.path.dirname(path) == str(tmp_path / "manifests") and os.path.basename(path).startswith("dev-clean-")
    source = ManifestSource(path)
    ids = [source[i]["id"] for i in range(len(source))]
    assert ids == [k for k in sorted(durations) if k != "26-495-0000"]  # the unreadable one is left out
    np.testing.assert_allclose(source.durations(), [durations[k] for k in ids])
    assert source[1]["text"] == "THIS LITTLE WORK" and os.path.isabs(source[1]["audio_filepath"])
    os.utime(path, (0, 0))
    assert manifest_file(str(tmp_path / "manifests"), str(root)) == path and os.path.getmtime(path) == 0  # kept
    other = tmp_path / "mirror" / "dev-clean"  # a second folder of the same name gets its own manifest
    _librispeech(str(other))
    other_path = manifest_file(str(tmp_path / "manifests"), str(other))
    assert other_path != path and len(ManifestSource(other_path)) == len(durations)


def test_librispeech_errors(tmp_path):
    with pytest.raises(ManifestError, match="no LibriSpeech transcripts"):
        LibriSpeechSource(str(tmp_path))
    _librispeech(str(tmp_path))
    with open(tmp_path / "19" / "198" / "19-198.trans.txt", "a") as f:
        f.write("20-198-0005 WRONG SPEAKER\n")
    with pytest.raises(ManifestError, match=r"19-198\.trans\.txt:3"):
        LibriSpeechSource(str(tmp_path))


def test_tfds_source_with_arrays_and_encoded_bytes(tmp_path):
    pytest.importorskip("tensorflow_datasets")
    data_dir = str(tmp_path / "tfds")
    write_tiny_speech(data_dir, str(tmp_path))

    arrays = TfdsSource("tiny_speech", "train", data_dir, sample_rate=16000)
    assert len(arrays) == 5 and arrays.audio_key == "speech"
    # TFDS stores examples in key-hash order: find each by its id.
    position = {arrays[i]["id"]: i for i in range(len(arrays))}
    assert sorted(position) == [f"utt-{i}" for i in range(5)]
    record = arrays[position["utt-2"]]
    assert (record["text"], record["target"], record["sample_rate"]) == ("utterance 2", "answer 2", 16000)
    durations = arrays.durations()
    for i in range(5):
        assert abs(durations[position[f"utt-{i}"]] - 0.1 * (i + 1)) < 1e-9
    np.testing.assert_allclose(decode_record(record), audio_files.tone(0.3, seed=2), atol=1.0 / 32767)

    encoded = TfdsSource("tiny_speech", "train", data_dir, audio_key="flac")
    record = encoded[position["utt-1"]]
    assert "audio_bytes" in record and abs(record["duration"] - 0.2) < 1e-4
    assert decode_record(record).shape == (3200,)  # resampled from 22.05 kHz

    with pytest.raises(ManifestError, match="has no sample_rate"):
        TfdsSource("tiny_speech", "train", data_dir)[0]
    with pytest.raises(ManifestError, match="no audio feature 'wave'"):
        TfdsSource("tiny_speech", "train", data_dir, audio_key="wave")


def test_decode_record_reports_records_without_audio():
    with pytest.raises(AudioError) as info:
        decode_record({"id": "x", "text": "t", "duration": 1.0})
    assert info.value.reason == RejectReason.UNREADABLE and info.value.path == "<x>"
    with pytest.raises(AudioError, match="no 'sample_rate'"):
        decode_record({"id": "y", "audio": np.zeros(10, np.float32)})
    short_record = {"id": "z", "audio": np.zeros(160, np.float32), "sample_rate": 16000, "duration": 0.5}
    with pytest.raises(AudioError) as info:
        decode_record(short_record)
    assert info.value.reason == RejectReason.DURATION_MISMATCH


def test_concat_source_reads_its_sources_one_after_another():
    first = [{"id": "a", "duration": 1.0}, {"id": "b", "duration": 2.0}]
    second = [{"id": "c", "duration": 3.0}]
    source = ConcatSource([first, [], second])
    assert len(source) == 3 and [source[i]["id"] for i in range(3)] == ["a", "b", "c"]
    np.testing.assert_array_equal(source.durations(), [1.0, 2.0, 3.0])
    with pytest.raises(IndexError, match="record 3 of 3"):
        source[3]


def test_tfds_without_tensorflow_datasets_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorflow_datasets", None)  # as if not installed
    with pytest.raises(ManifestError, match=r"TFDS tiny_speech/train: .*pip install 'jaxspeech\[tfds\]'"):
        TfdsSource("tiny_speech", "train")
