"""The main job end to end on the debug config: train -> checkpoints -> eval -> report; resume;
``jaxspeech eval`` and ``jaxspeech transcribe --checkpoint`` on the finished run."""

import json
import os
import pathlib
import shutil

import numpy as np
import pytest

from jaxspeech.cli import main
from jaxspeech.testing.debug_runs import train_debug_run

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# These tests build or read data/tiny_debug in the checkout: under pytest -n they share one worker.
pytestmark = pytest.mark.xdist_group("repo_data")
CONFIG = "configs/tiny_asr.py"


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    return train_debug_run(REPO, CONFIG, tmp_path_factory.mktemp("tiny_debug_run"))


def _metrics(workdir):
    return [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]


def test_debug_run_trains_evaluates_and_reports(run_dir):
    losses = [m["train/loss"] for m in _metrics(run_dir) if "train/loss" in m]
    assert len(losses) == 3 and all(np.isfinite(losses))
    report = (run_dir / "report.md").read_text()
    assert "| set | examples | ref words | S | D | I | WER % |" in report
    assert "| set | voices | utterances | LLM alone WER % | CTC head alone WER % | joint WER % |" in report
    for name in ("test", "open_vocab"):
        assert f"| {name} | training voices | 4 |" in report
        assert all(f"| {name}/{decoder} | 4 |" in report for decoder in ("llm", "ctc", "joint"))
    assert "| dev" not in report  # dev is decoded on demand (below)
    assert "## Timings" in report and "## Learning curves" in report and "| decoding open_vocab/ctc |" in report
    dormancy = [m for m in _metrics(run_dir) if "dormancy/attention_on_audio" in m]
    assert [m["step"] for m in dormancy] == [2, 3]  # eval.dormancy_every = 2, and after the last step
    for m in dormancy:
        assert m["dormancy/audio_text_rms_ratio"] > 0 and 0 < m["dormancy/attention_on_audio"] < 1
        assert m["dormancy/attention_on_audio"] + m["dormancy/attention_on_instruction"] <= 1 + 1e-6
    assert "| step | audio/text embedding RMS | LLM attention on audio |" in report
    assert (run_dir / "plots" / "attention_on_audio.png").exists()
    decoded = [json.loads(line) for line in (run_dir / "eval" / "test.joint.jsonl").read_text().splitlines()]
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
    assert (
        main(
            [
                "train",
                "--config",
                f"{CONFIG}:debug",
                "--workdir",
                str(run_dir),
                "--no-progress",
                "--set",
                "train.total_steps=4",
                "--set",
                "train.optimizer.decay_steps=4",
            ]
        )
        == 0
    )
    steps = [m["step"] for m in _metrics(run_dir) if "train/loss" in m]
    assert steps == [1, 2, 3, 4]  # steps 1-3 from the first run, 4 after resuming at 3
    assert "4" in os.listdir(run_dir / "checkpoints")


def test_eval_and_transcribe_reopen_the_run(run_dir, capsys):
    assert main(["eval", "--workdir", str(run_dir), "--max-examples", "2", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "checkpoint step" in out and "| test/joint | 2 |" in out and "| dev" not in out
    argv = ["eval", "--workdir", str(run_dir), "--max-examples", "2", "--decoders", "ctc", "--no-progress"]
    assert main([*argv, "--metrics", "exact_match,bleu"]) == 0
    out = capsys.readouterr().out
    assert "| set | examples | exact matches | exact match % |" in out and "| test/ctc | 2 |" in out
    assert "| set | BLEU | 1/2/3/4-gram precision % |" in out and "WER %" not in out
    decoded = [json.loads(line) for line in (run_dir / "eval" / "test.ctc.jsonl").read_text().splitlines()]
    assert len(decoded) == 2 and all(isinstance(d["exact_match"], bool) and "wer" not in d for d in decoded)
    assert main(["eval", "--workdir", str(run_dir), "--sets", "dev", "--max-examples", "3", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "| dev/joint | 3 |" in out and "| test" not in out
    files = sorted(str(p) for p in pathlib.Path(REPO, "data/tiny_debug/test").glob("*.flac"))[:2]
    assert main(["transcribe", "--checkpoint", str(run_dir), *files]) == 0
    lines = capsys.readouterr().out.strip().split("\n")
    assert [line.split("\t")[0] for line in lines] == files


def test_bad_config_keys_are_named(tmp_path, capsys):
    def error(*argv):
        assert main(["train", "--config", *argv, "--workdir", str(tmp_path)]) == 2
        return capsys.readouterr().err

    assert error(f"{CONFIG}:debug", "--set", "model.llm.num_layerz=2").startswith(
        "error: model.llm.num_layerz: unknown key(s) ['num_layerz'] in model.llm"
    )
    assert error(f"{CONFIG}:debug", "--set", "model.lm.num_layers=2").startswith("error: model.lm: unknown config key")
    assert error(f"{CONFIG}:huge") == (
        f"error: {CONFIG}:huge: configs/tiny_asr.py takes no argument, 'debug', 'staged' or "
        "'staged_debug', got 'huge'\n"
    )


def _checkpoint_listing(workdir) -> dict[str, int]:
    """Every path of the run's checkpoints (and any sibling folder named after them) with its mtime."""
    entries = {}
    for top in sorted(p for p in os.listdir(workdir) if p.startswith("checkpoints")):
        for root, dirs, files in os.walk(os.path.join(workdir, top)):
            for name in dirs + files:
                path = os.path.join(root, name)
                entries[os.path.relpath(path, workdir)] = os.stat(path).st_mtime_ns
    return entries


def _damage(step_directory, seed: int) -> None:
    """Flips 20 random bits in each file of the step's array data (values, not the index): eval
    reads only the parameters, about a third of the state, so many flips land there."""
    rng = np.random.default_rng(seed)
    for path in pathlib.Path(step_directory, "state").glob("ocdbt.process_*/d/*"):
        data = bytearray(path.read_bytes())
        if len(data) >= 4096:
            for _ in range(20):
                data[int(rng.integers(len(data)))] ^= 1 << int(rng.integers(8))
            path.write_bytes(bytes(data))


def test_read_only_commands_never_move_or_write_checkpoints(run_dir, tmp_path, capsys):
    from jaxspeech.recipes.restore import restore

    workdir = tmp_path / "run"
    shutil.copytree(run_dir, workdir)
    steps = sorted(int(s) for s in os.listdir(workdir / "checkpoints") if s.isdigit())
    newest, previous = steps[-1], steps[-2]
    _damage(workdir / "checkpoints" / str(newest), seed=0)
    audio = sorted(str(p) for p in pathlib.Path(REPO, "data/tiny_debug/test").glob("*.flac"))[:1]
    before = _checkpoint_listing(workdir)

    assert main(["eval", "--workdir", str(workdir), "--max-examples", "1", "--no-progress"]) == 0
    assert f"checkpoint step {previous}" in capsys.readouterr().out  # the damaged newest one is skipped
    assert main(["transcribe", "--checkpoint", str(workdir), *audio]) == 0
    assert main(["plot", str(workdir)]) == 0
    assert restore(str(workdir))[2] == previous  # what the notebook calls
    assert _checkpoint_listing(workdir) == before

    _damage(workdir / "checkpoints" / str(previous), seed=1)  # now no checkpoint restores
    before = _checkpoint_listing(workdir)
    for command in (
        ["eval", "--workdir", str(workdir), "--no-progress"],
        ["transcribe", "--checkpoint", str(workdir), *audio],
    ):
        assert main(command) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"error: {workdir / 'checkpoints'}: no checkpoint passes its integrity check (")
        assert err.count("\n") == 1 and str(workdir / "checkpoints" / str(newest)) in err
    assert _checkpoint_listing(workdir) == before


def test_train_on_checkpoints_that_do_not_fit_or_are_all_damaged_names_them_and_moves_nothing(
    run_dir, tmp_path, capsys
):
    """Resuming a run whose checkpoints no longer fit the config (a changed shape), or of which none
    passes its integrity check: one line naming the checkpoint, exit 2; nothing under checkpoints/
    moves and the run's own files (config.json, tokenizer, word list) are not rewritten."""
    workdir = tmp_path / "run"
    shutil.copytree(run_dir, workdir)
    size = json.loads((workdir / "config.json").read_text())["model"]["llm"]["intermediate_size"]
    kept = {name: os.stat(workdir / name).st_mtime_ns for name in ("config.json", "tokenizer.model", "lexicon.txt")}
    train = ["train", "--config", f"{CONFIG}:debug", "--workdir", str(workdir), "--no-progress"]
    before = _checkpoint_listing(workdir)
    assert main([*train, "--set", f"model.llm.intermediate_size={size + 8}"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {workdir / 'checkpoints'}/") and "does not fit the model" in err, err
    assert err.count("\n") == 1 and f", {size + 8}]" in err
    assert _checkpoint_listing(workdir) == before
    assert {name: os.stat(workdir / name).st_mtime_ns for name in kept} == kept

    for step in sorted(int(s) for s in os.listdir(workdir / "checkpoints") if s.isdigit()):
        _damage(workdir / "checkpoints" / str(step), seed=step)
    before = _checkpoint_listing(workdir)
    assert main(train) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {workdir / 'checkpoints'}: no checkpoint passes its integrity check ("), err
    assert err.count("\n") == 1 and _checkpoint_listing(workdir) == before


def test_eval_errors_of_a_run_name_what_is_wrong(run_dir, tmp_path, capsys):
    """No checkpoint, and a config that no longer fits the checkpoint: one line each, exit 2, nothing moved."""
    workdir = tmp_path / "run"
    shutil.copytree(run_dir, workdir)
    config = json.loads((workdir / "config.json").read_text())
    config["model"]["llm"]["intermediate_size"] = config["model"]["llm"].get("intermediate_size", 512) + 8
    (workdir / "config.json").write_text(json.dumps(config))
    before = _checkpoint_listing(workdir)
    assert main(["eval", "--workdir", str(workdir), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert (
        err.startswith(f"error: {workdir / 'checkpoints'}/")
        and "does not fit the model" in err
        and err.count("\n") == 1
    )
    assert _checkpoint_listing(workdir) == before
    shutil.rmtree(workdir / "checkpoints")
    for command in (
        ["eval", "--workdir", str(workdir), "--no-progress"],
        ["transcribe", "--checkpoint", str(workdir), "x.flac"],
    ):
        assert main(command) == 2
        assert capsys.readouterr().err == f"error: {workdir / 'checkpoints'}: holds no checkpoint\n"
