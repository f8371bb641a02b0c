"""``jaxspeech plot WORKDIR`` writes learning-curve PNGs from metrics.jsonl."""

import json

import pytest

from jaxspeech.cli import main
from jaxspeech.train.metrics import MetricsLogger, read_log


def _write_log(workdir):
    with MetricsLogger(workdir, tensorboard=False) as logger:
        for step in range(1, 9):
            logger.write(step, {"train/loss": 3.0 / step, "train/accuracy": step / 10, "train/learning_rate": 1e-3})
        logger.write(4, {"eval/loss": 1.0, "eval/dev/held_out_WER": 0.5, "eval/dev_CER": 0.3})
        logger.write(8, {"eval/loss": 0.5, "eval/dev/held_out_WER": 0.25, "eval/dev_CER": 0.1})
        logger.write(6, {"train/loss": 0.123})  # a resumed run logs step 6 again: the later value wins
    with open(workdir / "metrics.jsonl", "a") as f:
        f.write('{"step": 9, "train/lo')  # the half line a killed run leaves


def test_read_log_keeps_the_last_record_per_step_and_skips_a_cut_line(tmp_path):
    _write_log(tmp_path)
    steps, values = read_log(tmp_path)["train/loss"]
    assert steps.tolist() == list(range(1, 9)) and values[5] == pytest.approx(0.123)
    MetricsLogger(tmp_path, tensorboard=False).close()  # reopening ends the cut line
    with open(tmp_path / "metrics.jsonl", "a") as f:
        f.write(json.dumps({"step": 10, "train/loss": 0.1}) + "\n")
    assert read_log(tmp_path)["train/loss"][0].tolist() == list(range(1, 9)) + [10]


def test_cli_writes_one_png_per_logged_curve(tmp_path, capsys):
    _write_log(tmp_path)
    assert main(["plot", str(tmp_path)]) == 0
    written = sorted(p.name for p in (tmp_path / "plots").iterdir())
    assert written == ["accuracy.png", "cer.png", "learning_rate.png", "loss.png", "wer.png"]
    for name in written:
        header = (tmp_path / "plots" / name).read_bytes()[:8]
        assert header == b"\x89PNG\r\n\x1a\n"
    assert capsys.readouterr().out.count(".png") == 5


def test_cli_without_a_metrics_log_names_the_file(tmp_path, capsys):
    assert main(["plot", str(tmp_path), "--out", str(tmp_path / "figures")]) == 2
    assert (
        capsys.readouterr().err
        == f"error: {tmp_path / 'metrics.jsonl'}: no metrics log: is {tmp_path} a training workdir?\n"
    )
    assert not (tmp_path / "figures").exists()
