"""Per-example JSONL and the Markdown WER table."""

import json

import pytest

from jaxspeech.evals.metrics import cer, wer
from jaxspeech.evals.report import write_per_example_jsonl, wer_table


def test_per_example_jsonl(tmp_path):
    result = wer(["The cat sat down.", "Hello world"], ["the cat sit down", "hello"], ids=["a", "b"])
    path = tmp_path / "examples.jsonl"
    assert write_per_example_jsonl(path, result) == 2
    records = [json.loads(line) for line in path.read_text().splitlines()]
    assert records[0] == {
        "id": "a",
        "reference": "The cat sat down.",
        "hypothesis": "the cat sit down",
        "reference_normalized": "the cat sat down",
        "hypothesis_normalized": "the cat sit down",
        "substitutions": 1,
        "deletions": 0,
        "insertions": 0,
        "reference_words": 4,
        "wer": 0.25,
    }
    assert records[1]["deletions"] == 1 and records[1]["wer"] == 0.5
    assert not (tmp_path / "examples.jsonl.partial").exists()


def test_jsonl_of_plain_records_and_cer(tmp_path):
    path = tmp_path / "x.jsonl"
    assert write_per_example_jsonl(path, [{"id": "1", "note": "é"}]) == 1
    assert json.loads(path.read_text()) == {"id": "1", "note": "é"}
    assert write_per_example_jsonl(path, cer(["ab"], ["ac"])) == 1
    assert json.loads(path.read_text())["cer"] == 0.5
    with pytest.raises(TypeError, match="record 0 is str"):
        write_per_example_jsonl(path, ["not a mapping"])


def test_wer_table():
    results = {
        "clean": wer(["the cat sat down", "hello world"], ["the cat sit down", "hello"]),
        "other": wer(["a b c"], ["a b c d"]),
    }
    assert wer_table(results) == (
        "| set | examples | ref words | S | D | I | WER % |\n"
        "|---|---:|---:|---:|---:|---:|---:|\n"
        "| clean | 2 | 6 | 1 | 1 | 0 | 33.33 |\n"
        "| other | 1 | 3 | 0 | 0 | 1 | 33.33 |\n"
    )
    assert wer_table({"x": cer(["ab"], ["ac"])}).startswith("| set | examples | ref chars | S | D | I | CER % |")
