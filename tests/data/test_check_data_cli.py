"""``jaxspeech check-data`` on a small manifest with a broken file and a lying header."""

import json
import os

from jaxspeech.cli import main
from jaxspeech.testing import audio_files
from jaxspeech.testing.audio_mutations import lying_flac


def test_check_data_counts_and_reports_rejects(tmp_path, capsys):
    entries = []
    for i, seconds in enumerate((0.3, 0.7, 1.4)):
        duration = audio_files.write_clip(str(tmp_path / f"{i}.flac"), seconds, seed=i)
        entries.append({"id": f"u{i}", "audio_filepath": f"{i}.flac", "duration": duration, "text": "x"})
    with open(tmp_path / "broken.flac", "wb") as f:
        f.write(b"not audio" * 50)
    entries.append({"id": "bad", "audio_filepath": "broken.flac", "duration": 0.5, "text": "x"})
    with open(tmp_path / "lying.flac", "wb") as f:  # its header claims 2^36 - 1 samples (256 GiB as float32)
        f.write(lying_flac())
    entries.append({"id": "liar", "audio_filepath": "lying.flac", "duration": 0.2, "text": "x"})
    manifest = audio_files.write_manifest(str(tmp_path / "m.jsonl"), entries)
    report = str(tmp_path / "rejects.json")

    status = main(["check-data", manifest, "--buckets", "100", "200", "--frame-budget", "400", "--report", report])

    assert status == 1
    printed = capsys.readouterr().out
    assert "3 of 5 examples usable" in printed and "rejected unsupported_format: 1" in printed
    assert "rejected corrupt: 1, e.g. " + os.path.join(str(tmp_path), "lying.flac") in printed
    assert "bucket   100 frames" in printed and "bucket   200 frames" in printed
    with open(report) as f:
        rejects = json.load(f)
    assert rejects == [
        {
            "example_id": 3,
            "id": "bad",
            "path": os.path.join(str(tmp_path), "broken.flac"),
            "reason": "unsupported_format",
            "message": rejects[0]["message"],
        },
        {
            "example_id": 4,
            "id": "liar",
            "path": os.path.join(str(tmp_path), "lying.flac"),
            "reason": "corrupt",
            "message": rejects[1]["message"],
        },
    ]
    assert "Format not recognised" in rejects[0]["message"]
    assert f"header declares {2**36 - 1} frames" in rejects[1]["message"]


def test_check_data_clean_dataset_exits_zero(small_manifest, capsys):
    assert main(["check-data", small_manifest, "--buckets", "200"]) == 0
    assert "48 of 48 examples usable" in capsys.readouterr().out
