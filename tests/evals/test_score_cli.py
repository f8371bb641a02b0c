"""``jaxspeech score`` end to end on small files."""

import argparse
import json

import pytest

from jaxspeech.cli import score
from jaxspeech.errors import UsageError


def run_score(argv):
    parser = argparse.ArgumentParser()
    score.register(parser.add_subparsers())
    args = parser.parse_args(["score", *argv])
    return args.func(args)


def test_score_pairs_jsonl(tmp_path, capsys):
    pairs = tmp_path / "decoded.jsonl"
    pairs.write_text(
        "\n".join(
            json.dumps(r)
            for r in [
                {"id": "u1", "reference": "The cat sat down.", "hypothesis": "the cat sit down"},
                {"id": "u2", "reference": "Hello world", "hypothesis": "hello"},
            ]
        )
        + "\n"
    )
    out = tmp_path / "scored.jsonl"
    assert run_score(["--pairs", str(pairs), "--per-example", str(out), "--name", "dev"]) == 0
    assert "| dev | 2 | 6 | 1 | 1 | 0 | 33.33 |" in capsys.readouterr().out
    assert [json.loads(line)["id"] for line in out.read_text().splitlines()] == ["u1", "u2"]


def test_score_text_files(tmp_path, capsys):
    (tmp_path / "refs.txt").write_text("abcd\nthe cat sat on the mat\n")
    (tmp_path / "hyps.txt").write_text("abed\nthe cat sat on a mat\n")
    files = ["--references", str(tmp_path / "refs.txt"), "--hypotheses", str(tmp_path / "hyps.txt")]
    run_score([*files, "--metric", "cer"])
    assert "CER %" in capsys.readouterr().out
    run_score([*files, "--metric", "bleu"])
    assert capsys.readouterr().out.startswith("BLEU ")
    run_score([*files, "--metric", "exact_match", "--name", "dev"])
    assert "| dev | 2 | 0 | 0.00 |" in capsys.readouterr().out
    (tmp_path / "hyps.txt").write_text("ABCD!\nthe cat sat on a mat\n")
    run_score([*files, "--metric", "exact_match", "--name", "dev"])
    assert "| dev | 2 | 1 | 50.00 |" in capsys.readouterr().out  # after the basic normalizer


def test_score_errors(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"reference": "a"}\n')
    with pytest.raises(UsageError, match="bad.jsonl:1: expected a JSON object with 'reference' and 'hypothesis'"):
        run_score(["--pairs", str(bad)])
    (tmp_path / "r.txt").write_text("a\nb\n")
    (tmp_path / "h.txt").write_text("a\n")
    with pytest.raises(UsageError, match="has 2 lines but"):
        run_score(["--references", str(tmp_path / "r.txt"), "--hypotheses", str(tmp_path / "h.txt")])
