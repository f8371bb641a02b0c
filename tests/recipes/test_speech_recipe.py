"""The main job end to end on the debug config: train -> checkpoints -> eval -> report; resume;
``jaxspeech eval`` and ``jaxspeech transcribe --checkpoint`` on the finished run."""

import json
import os
import pathlib

import numpy as np
import pytest

from jaxspeech.cli import main

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# These tests build or read data/tiny_debug in the checkout: under pytest -n they share one worker.
pytestmark = pytest.mark.xdist_group("repo_data")
CONFIG = "configs/tiny_asr.py"


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    os.chdir(REPO)  # the debug corpus is built (once) in data/tiny_debug
    workdir = tmp_path_factory.mktemp("tiny_debug_run")
    assert main(["train", "--config", f"{CONFIG}:debug", "--workdir", str(workdir), "--no-progress"]) == 0
    return workdir


def _metrics(workdir):
    return [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]


def test_debug_run_trains_evaluates_and_reports(run_dir):
    losses = [m["train/loss"] for m in _metrics(run_dir) if "train/loss" in m]
    assert len(losses) == 3 and all(np.isfinite(losses))
    report = (run_dir / "report.md").read_text()
    assert "| set | examples | ref words | S | D | I | WER % |" in report
    assert "| test | 4 |" in report and "| dev |" not in report  # dev is decoded on demand (below)
    assert "## Timings" in report and "## Learning curves" in report
    decoded = [json.loads(line) for line in (run_dir / "eval" / "test.jsonl").read_text().splitlines()]
    assert len(decoded) == 4 and all(d["reference"] and "hypothesis" in d and "wer" in d for d in decoded)
    assert (run_dir / "tokenizer.model").exists()  # the run is self-contained
    saved = json.loads((run_dir / "config.json").read_text())
    assert saved["data"]["tokenizer"] == str(run_dir / "tokenizer.model")
    lexicon = set((run_dir / "lexicon.txt").read_text().split())  # the training transcripts' words
    assert saved["eval"]["lexicon"] == str(run_dir / "lexicon.txt")
    train = [json.loads(line) for line in pathlib.Path(REPO, "data/tiny_debug/train.jsonl").read_text().splitlines()]
    assert lexicon == {word for record in train for word in record["text"].split()}
    for words in (d["hypothesis"].split() for d in decoded):  # the last word may be cut by max_new_tokens
        assert set(words[:-1]) <= lexicon and (not words or any(w.startswith(words[-1]) for w in lexicon)), words


def test_rerun_resumes_from_the_last_checkpoint(run_dir, tmp_path):
    assert main(["train", "--config", f"{CONFIG}:debug", "--workdir", str(run_dir), "--no-progress",
                 "--set", "train.total_steps=4", "--set", "train.optimizer.decay_steps=4"]) == 0
    steps = [m["step"] for m in _metrics(run_dir) if "train/loss" in m]
    assert steps == [1, 2, 3, 4]  # steps 1-3 from the first run, 4 after resuming at 3
    assert "4" in os.listdir(run_dir / "checkpoints")


def test_eval_and_transcribe_reopen_the_run(run_dir, capsys):
    assert main(["eval", "--workdir", str(run_dir), "--max-examples", "2", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "checkpoint step" in out and "| test | 2 |" in out and "| dev |" not in out
    assert main(["eval", "--workdir", str(run_dir), "--sets", "dev", "--max-examples", "3", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "| dev | 3 |" in out and "| test |" not in out
    files = sorted(str(p) for p in pathlib.Path(REPO, "data/tiny_debug/test").glob("*.flac"))[:2]
    assert main(["transcribe", "--checkpoint", str(run_dir), *files]) == 0
    lines = capsys.readouterr().out.strip().split("\n")
    assert [line.split("\t")[0] for line in lines] == files


def test_bad_config_keys_are_named(tmp_path):
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['num_layerz'\] in model.llm"):
        main(["train", "--config", f"{CONFIG}:debug", "--workdir", str(tmp_path), "--set", "model.llm.num_layerz=2"])
    with pytest.raises(KeyError, match="unknown config key 'model.lm'"):
        main(["train", "--config", f"{CONFIG}:debug", "--workdir", str(tmp_path), "--set", "model.lm.num_layers=2"])
    with pytest.raises(ValueError, match="takes no argument or 'debug'"):
        main(["train", "--config", f"{CONFIG}:huge", "--workdir", str(tmp_path)])
