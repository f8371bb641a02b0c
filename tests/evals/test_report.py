"""Per-example JSONL and the Markdown tables of each metric."""

import json

import pytest

from jaxspeech.evals.metrics import bleu, cer, exact_match, transcript_echo, wer
from jaxspeech.evals.report import metric_tables, write_per_example_jsonl, wer_table


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


def test_each_metric_gets_its_own_table_format():
    references, hypotheses = ["the cat sat on the mat", "yes"], ["the cat sat on a mat", "Yes."]
    scores = {
        "test WER": wer(references, hypotheses),
        "test BLEU": bleu(references, hypotheses),
        "test EXACT_MATCH": exact_match(references, hypotheses),
        "dev EXACT_MATCH": exact_match(["no"], ["no"]),
    }
    blocks = metric_tables(scores, ["exact_match", "cer", "bleu", "wer"])  # in the order asked; no CER scored
    assert [block.splitlines()[0] for block in blocks] == [
        "Exact match (normalised hypothesis equals normalised reference):",
        "BLEU (sacrebleu: 13a tokenisation of the raw text, one reference; higher is better):",
        "Word error rates:",
    ]
    exact = blocks[0].splitlines()[2:]
    assert exact == [
        "| set | examples | exact matches | exact match % |",
        "|---|---:|---:|---:|",
        "| test | 2 | 1 | 50.00 |",
        "| dev | 1 | 1 | 100.00 |",
    ]
    bleu_rows = blocks[1].splitlines()[2:]
    assert bleu_rows[0] == "| set | BLEU | 1/2/3/4-gram precision % | brevity penalty | hyp / ref tokens |"
    # 13a splits "Yes." into two tokens; n-gram matches 5/8, 3/6, 2/4, 1/3 (case-sensitive: "Yes" is not "yes").
    assert bleu_rows[2] == f"| test | {scores['test BLEU'].score:.2f} | 62.5/50.0/50.0/33.3 | 1.000 | 8 / 7 |"
    assert "| test | 2 | 7 | 1 | 0 | 0 | 14.29 |" in blocks[2]


def test_transcript_echo_gets_a_table_of_echoes():
    scores = {"test_rate TRANSCRIPT_ECHO": transcript_echo(["the cat sleeps", "call anna"], ["the cat sleeps", "fast"])}
    block = metric_tables(scores, ["transcript_echo"])[0].splitlines()
    assert block[0].startswith("Transcript echo (the hypothesis within the WER threshold of the utterance's transcript")
    assert block[2:] == [
        "| set | examples | WER threshold | transcript echoes | echo % |",
        "|---|---:|---:|---:|---:|",
        "| test_rate | 2 | 0.5 | 1 | 50.00 |",
    ]
