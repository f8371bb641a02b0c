"""Staged runs (``config.stages``, recipes/stages.py): stage sections merge over the config's and
name earlier stages; every stage is checked before the first trains; a stage SIGKILLed mid-way
resumes inside its own time budget and the next stage starts from its final parameters bit for
bit; finished stages are skipped (and refused when the config changed); the report has a section
per stage. The debug variants of configs/slam_asr.py (projector -> LoRA) and configs/tiny_asr.py
(ctc -> text -> connector -> finetune) run here."""

import json
import os
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest
from flax import traverse_util

from jaxspeech.config_dict import load_config_file, override
from jaxspeech.errors import ConfigError, UsageError
from jaxspeech.recipes.restore import restore
from jaxspeech.recipes.run import train_and_evaluate
from jaxspeech.recipes.stages import stage_configs
from jaxspeech.sharding.mesh import make_mesh
from jaxspeech.train.checkpoint import Checkpointer
from jaxspeech.train.state import build_layout

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
pytestmark = pytest.mark.xdist_group("repo_data")  # builds / reads data/tiny_debug in the checkout


def staged(name: str):
    os.chdir(REPO)
    return load_config_file(f"configs/{name}")


def flat(params) -> dict:
    return traverse_util.flatten_dict(jax.device_get(params), sep="/")


def params_at(folder: str, step: int | None = None) -> dict:
    """The parameters of checkpoint ``step`` (default: the newest) of the run in ``folder``."""
    run, params, newest = restore(folder)
    if step is None or step == newest:
        return flat(params)
    layout = build_layout(run.task, run.example_batch(), run.train.optimizer, make_mesh({"data": 1}, jax.devices()[:1]))
    checkpointer = Checkpointer(os.path.join(folder, "checkpoints"), read_only=True)
    try:
        restored = checkpointer.restore(step, {"params": layout.abstract["params"]}, with_data=False, partial=True)
    finally:
        checkpointer.close()
    return flat(restored.state["params"])


def committed(folder: str) -> dict[int, dict]:
    """{step: meta} of the committed checkpoints in ``folder`` (unfinished saves have no plain step name)."""
    directory = os.path.join(folder, "checkpoints")
    metas = {}
    for name in os.listdir(directory) if os.path.isdir(directory) else ():
        path = os.path.join(directory, name, "meta", "metadata")
        if name.isdigit() and os.path.exists(path):
            with open(path) as f:
                metas[int(name)] = json.load(f)
    return metas


def test_stages_merge_over_the_config_and_name_earlier_stages():
    config = staged("tiny_asr.py:staged_debug")
    override(config, "stages.ctc.train.total_steps", 5)  # --set reaches a stage by its name
    stages = dict(stage_configs(config, "runs/x"))
    assert list(stages) == ["ctc", "text", "connector", "finetune"]
    # Another task kind replaces the task section whole; every other section merges key by key.
    assert stages["ctc"].task.to_dict() == {"kind": "ctc_encoder", "spec_augment": config.task.spec_augment.to_dict()}
    assert stages["ctc"].train.total_steps == 5 and stages["text"].train.total_steps == 3
    assert stages["ctc"].train.optimizer.to_dict() == config.train.optimizer.to_dict()
    assert stages["finetune"].task.to_dict() == config.task.to_dict()
    assert stages["connector"].train.optimizer.lr_rules[0] == (r"encoder/.*", None)
    assert stages["connector"].train.optimizer.decay_steps == config.train.optimizer.decay_steps
    assert stages["connector"].init.from_run.to_dict() == {
        "encoder": "runs/x/ctc",
        "ctc_head": "runs/x/ctc",
        "llm": "runs/x/text",
    }
    assert stages["finetune"].init.from_run == "runs/x/connector"
    assert "stages" not in stages["finetune"]
    with pytest.raises(ConfigError, match=r"stages.ctx: no entry of that name; its names are \['ctc', 'text'"):
        override(config, "stages.ctx.train.total_steps", 5)


def test_a_wrong_stage_fails_before_any_stage_trains(tmp_path):
    config = staged("tiny_asr.py:staged_debug")
    config.stages[3]["train"]["optimizer"]["learning_rat"] = 1e-3
    with pytest.raises(
        ConfigError,
        match=r"stages\[3\] \(finetune\) .*learning_rat: unknown key\(s\) "
        r"\['learning_rat'\]",
    ):
        train_and_evaluate(config, str(tmp_path / "run"))
    assert not (tmp_path / "run").exists()
    config = staged("tiny_asr.py:staged_debug")
    config.stages[1]["init"] = dict(from_run=dict(llm="connector:llm"))
    with pytest.raises(
        ConfigError,
        match=r"stages\[1\] \(text\).init.from_run: names stage 'connector', which "
        r"does not come before it \(earlier stages: \['ctc'\]\)",
    ):
        stage_configs(config, str(tmp_path))
    config = staged("tiny_asr.py:staged_debug")
    config.stages[2]["name"] = "ctc"
    with pytest.raises(ConfigError, match=r"stages\[2\].name: 'ctc' is used twice"):
        stage_configs(config, str(tmp_path))
    config.stages[2]["name"] = "a/b"
    with pytest.raises(ConfigError, match=r"stages\[2\].name: expected a folder name"):
        stage_configs(config, str(tmp_path))
    config = staged("tiny_asr.py:staged_debug")
    config.stages[0]["optimizer"] = {}
    with pytest.raises(ConfigError, match=r"unknown key\(s\) \['optimizer'\] in stages\[0\]"):
        stage_configs(config, str(tmp_path))


def test_slam_asr_lora_debug_stages_projector_then_lora(tmp_path):
    """The projector stage trains the connector alone; the LoRA stage starts from its final
    parameters (its frozen encoder and LLM weights stay those, bit for bit), adds fresh adapters
    and trains them with the connector. A second start skips both; a changed stage is refused."""
    workdir = str(tmp_path / "slam")
    summary = train_and_evaluate(staged("slam_asr.py:lora_debug"), workdir, progress=False)
    assert [s["name"] for s in summary["stages"]] == ["projector", "lora"] and summary["step"] == 3
    projector, lora = params_at(os.path.join(workdir, "projector")), params_at(os.path.join(workdir, "lora"))
    adapters = [p for p in lora if "lora_" in p]
    assert adapters and not any("lora_" in p for p in projector)
    assert set(lora) - set(adapters) == set(projector)
    for path, value in projector.items():
        same = np.array_equal(lora[path], value)
        assert same == (not path.startswith("connector/")), path  # frozen: bit for bit; the connector trained
        assert lora[path].dtype == value.dtype
    assert any(not np.array_equal(lora[p], 0) for p in adapters if "lora_b" in p)  # the adapters trained
    report = open(summary["report"]).read()
    assert "## Stage projector (speech_llm)" in report and "## Stage lora (speech_llm)" in report
    assert f"Initialised from init.from_run: all <- {workdir}/projector." in report
    assert "| dev WER |" in report and "| test WER |" in report

    before = os.path.getmtime(os.path.join(workdir, "lora", "stage.json"))
    again = train_and_evaluate(staged("slam_asr.py:lora_debug"), workdir, progress=False)
    assert (
        again["scores"] == summary["scores"] and os.path.getmtime(os.path.join(workdir, "lora", "stage.json")) == before
    )
    changed = staged("slam_asr.py:lora_debug")
    override(changed, "stages.lora.task.lora.rank", 4)
    with pytest.raises(
        UsageError,
        match=r"lora/stage.json: this stage finished with another config \(sections "
        r"\['task'\] differ\)",
    ):
        train_and_evaluate(changed, workdir, progress=False)


BUDGET = 20.0  # seconds of training in the SIGKILLed stage

KILLED_CONFIG = f"""
from jaxspeech.config_dict import load_config_file


def get_config(arg=None):
    c = load_config_file({os.path.join(REPO, "configs", "tiny_asr.py:staged_debug")!r})
    ctc = c.stages[0]
    ctc["train"] = dict(total_steps=100_000, time_budget_s={BUDGET}, checkpoint=dict(every_steps=1, max_to_keep=None))
    more = dict(name="more", task=ctc["task"], init=dict(from_run=dict(encoder="ctc", ctc_head="ctc")),
                train=dict(total_steps=2, checkpoint=dict(max_to_keep=None)))
    c.stages = (ctc, more)
    c.eval.max_examples = 2
    return c
"""


def test_a_killed_stage_resumes_inside_its_budget_and_the_next_starts_from_its_final_parameters(tmp_path):
    config_file, workdir = tmp_path / "killed.py", str(tmp_path / "run")
    config_file.write_text(KILLED_CONFIG)
    command = [
        sys.executable,
        "-m",
        "jaxspeech",
        "train",
        "--config",
        str(config_file),
        "--workdir",
        workdir,
        "--no-progress",
    ]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([REPO, os.environ.get("PYTHONPATH", "")])}
    ctc = os.path.join(workdir, "ctc")
    with open(tmp_path / "log", "a") as log:
        first = subprocess.Popen(command, cwd=REPO, env=env, stdout=log, stderr=log)
        deadline = time.monotonic() + 300
        while first.poll() is None and time.monotonic() < deadline:
            if any(meta["trained_seconds"] >= 0.5 * BUDGET for meta in committed(ctc).values()):
                break
            time.sleep(0.2)
        assert first.poll() is None, open(tmp_path / "log").read()[-3000:]
        first.send_signal(signal.SIGKILL)
        first.wait()
        killed = committed(ctc)
        last_before = max(killed)
        assert killed[last_before]["trained_seconds"] < BUDGET and not os.path.exists(os.path.join(workdir, "more"))
        second = subprocess.run(command, cwd=REPO, env=env, stdout=log, stderr=log, timeout=600)
    assert second.returncode == 0, open(tmp_path / "log").read()[-3000:]

    metas = committed(ctc)
    after = sorted(step for step in metas if step > last_before)
    assert after, "the resumed start saved no checkpoint"
    seconds_before = killed[last_before]["trained_seconds"]
    # It counted on from the checkpoint's seconds, and stopped once the stage's whole budget was spent ...
    assert all(metas[s]["trained_seconds"] > seconds_before for s in after)
    final = metas[after[-1]]
    # A checkpoint every step: the longest wall time between two of them bounds one step's share.
    step_time = max((metas[b]["time"] - metas[a]["time"] for a, b in zip(after, after[1:])), default=0.0)
    assert BUDGET <= final["trained_seconds"] < BUDGET + step_time + 1.0
    # ... so the resumed start trained for what was left of it (at most half the budget), not a
    # budget of its own (its first checkpoint came one step in), by the wall clock.
    assert final["time"] - metas[after[0]]["time"] < BUDGET - seconds_before + step_time
    stage = json.load(open(os.path.join(ctc, "stage.json")))
    assert stage["stop_reason"] == "time_budget" and stage["step"] == after[-1]

    trained = params_at(ctc)
    started = params_at(os.path.join(workdir, "more"), step=0)
    assert set(started) == set(trained) and any(p.startswith("encoder/") for p in started)
    for path, value in started.items():
        assert value.dtype == trained[path].dtype and np.array_equal(value, trained[path]), path
    report = open(os.path.join(workdir, "report.md")).read()
    assert f"| ctc | ctc_encoder | {after[-1]} | time_budget |" in report and "## Stage more (ctc_encoder)" in report


@pytest.mark.slow
def test_tiny_asr_staged_debug_runs_every_stage(tmp_path):
    """ctc -> text -> connector (encoder, CTC head and LLM frozen: their final values are the earlier
    stages', bit for bit) -> finetune; each stage reports its own metric."""
    workdir = str(tmp_path / "tiny")
    summary = train_and_evaluate(staged("tiny_asr.py:staged_debug"), workdir, progress=False)
    stages = {s["name"]: s for s in summary["stages"]}
    assert list(stages) == ["ctc", "text", "connector", "finetune"]
    assert "test WER" in stages["ctc"]["scores"] and any(k.endswith(" PPL") for k in stages["text"]["scores"])
    assert "test WER" in stages["connector"]["scores"] and "test WER" in stages["finetune"]["scores"]
    ctc, text, connector = (params_at(os.path.join(workdir, name)) for name in ("ctc", "text", "connector"))
    for path, value in connector.items():
        source = ctc if path.startswith(("encoder/", "ctc_head/")) else text if path.startswith("llm/") else None
        if source is not None:
            assert np.array_equal(value, source[path]), path
