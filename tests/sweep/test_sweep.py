"""``jaxspeech sweep``: the grid's cells, up-front checks, the results table with its spread over
seeds, and resuming after SIGKILL without redoing a finished cell."""

import json
import os
import re
import signal
import subprocess
import sys
import time

import matplotlib.image
import numpy as np
import pytest

from jaxspeech.cli import main
from jaxspeech.errors import UsageError
from jaxspeech.sweep.grid import axis_from_text, load_grid, split_values
from jaxspeech.sweep.plots import plot_results
from jaxspeech.sweep.results import group_records, markdown, write_results
from jaxspeech.sweep.runner import training_metrics

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIG = "configs/tiny_asr.py:debug"


def test_values_split_only_outside_brackets_and_quotes():
    assert split_values("linear,qformer") == ["linear", "qformer"]
    assert split_values("(1, 2),[3,4],'a,b', None") == ["(1, 2)", "[3,4]", "'a,b'", "None"]
    axis = axis_from_text("data.pipeline.bucket_frames=(320, 400),(768,)")
    assert axis.choices == (
        ("(320, 400)", {"data.pipeline.bucket_frames": (320, 400)}),
        ("(768,)", {"data.pipeline.bucket_frames": (768,)}),
    )
    with pytest.raises(UsageError, match="--grid: expected KEY=VALUE1,VALUE2"):
        axis_from_text("train.seed")


def test_cells_are_the_product_of_the_axes_with_joint_axes_from_a_grid_file(tmp_path):
    grid_file = tmp_path / "grid.py"
    grid_file.write_text(
        f"CONFIG = {CONFIG!r}\nSETS = ['train.total_steps=2']\n"
        "GRID = {'fusion': {'plain': {'model.fusion': 'decoder_only'},\n"
        "                   'tagged': {'model.fusion': 'decoder_only', 'task.prompt.chunk_tags': True}}}\n"
    )
    grid = load_grid(None, ["train.seed=0,1"], str(grid_file), ["eval.max_examples=2"])
    assert grid.config == CONFIG and grid.sets == ("train.total_steps=2", "eval.max_examples=2")
    cells = grid.cells()
    assert [c.name for c in cells] == [
        "fusion=plain__train.seed=0",
        "fusion=plain__train.seed=1",
        "fusion=tagged__train.seed=0",
        "fusion=tagged__train.seed=1",
    ]
    assert cells[3].overrides == {"model.fusion": "decoder_only", "task.prompt.chunk_tags": True, "train.seed": 1}
    config = grid.cell_config(cells[3])
    assert (config.train.seed, config.train.total_steps, config.eval.max_examples) == (1, 2, 2)
    assert config.task.prompt.chunk_tags is True
    assert [axis.is_seed for axis in grid.axes] == [False, True]
    with pytest.raises(UsageError, match=r"axes \['train.seed'\] are given more than once"):
        load_grid(CONFIG, ["train.seed=0,1", "train.seed=2"], None, [])
    with pytest.raises(UsageError, match=r"same cell folder\(s\) \['task.prompt.system=a-b'\]"):
        load_grid(CONFIG, ["task.prompt.system=a b,a-b"], None, [])


def test_a_grid_file_with_an_argument_calls_its_get_grid(tmp_path):
    grid_file = tmp_path / "grid.py"
    grid_file.write_text(
        "def get_grid(arg):\n"
        "    if arg not in (None, 'debug'):\n"
        "        raise ValueError(f'takes no argument or debug, got {arg!r}')\n"
        "    config = 'configs/tiny_asr.py' + (':debug' if arg else '')\n"
        "    return {'CONFIG': config, 'SETS': [f'train.total_steps={2 if arg else 9}'], 'GRID': {'train.seed': [0, 1]}}\n"
    )
    debug = load_grid(None, [], f"{grid_file}:debug", [])
    assert (debug.config, debug.sets, len(debug.cells())) == (CONFIG, ("train.total_steps=2",), 2)
    assert load_grid(None, [], str(grid_file), []).sets == ("train.total_steps=9",)
    with pytest.raises(UsageError, match=r"grid.py:large: takes no argument or debug, got 'large'"):
        load_grid(None, [], f"{grid_file}:large", [])
    plain = tmp_path / "plain.py"
    plain.write_text(f"CONFIG = {CONFIG!r}\nGRID = {{'train.seed': [0]}}\n")
    with pytest.raises(UsageError, match=r"plain.py:debug: takes no argument \(it defines no get_grid"):
        load_grid(None, [], f"{plain}:debug", [])


@pytest.mark.parametrize(
    "item, message",
    [
        (
            "model.llm.num_layerz=1,2",
            r"model.llm.num_layerz: unknown key\(s\) \['num_layerz'\] in model.llm.*"
            r"\(sweep cell model.llm.num_layerz=1__train.seed=0 of ",
        ),
        ("model.lm.num_layers=1,2", r"model.lm: unknown config key"),
        (
            "model.fusion=decoder_only,fused",
            r"model: fusion must be one of .*\(sweep cell model.fusion=fused__train.seed=0 ",
        ),
    ],
)
def test_a_bad_key_or_value_is_refused_before_any_cell_runs(tmp_path, capsys, item, message):
    os.chdir(REPO)
    workdir = tmp_path / "sweep"
    assert (
        main(["sweep", "--config", CONFIG, "--grid", item, "--grid", "train.seed=0,1", "--workdir", str(workdir)]) == 2
    )
    assert re.search("^error: " + message, capsys.readouterr().err)
    assert not workdir.exists()  # nothing ran, nothing was written


def _record(name, labels, wer, step_time):
    return {
        "name": name,
        "labels": labels,
        "overrides": {},
        "scores": {"test WER": wer},
        "step": 3,
        "stop_reason": "completed",
        "timings": {},
        "report": f"{name}/report.md",
        "metrics": {"step_time_s": step_time, "flops_per_step": 2e9, "step_memory_bytes": 3 * 2**20},
    }


def test_the_table_groups_over_seeds_with_mean_and_sample_spread(tmp_path):
    grid = load_grid(CONFIG, ["model.connector.stack=2,4", "train.seed=0,1,2"], None, [])
    wers = {("2", "0"): 0.30, ("2", "1"): 0.20, ("2", "2"): 0.25, ("4", "0"): 0.5}
    names = {tuple(cell.labels.values()): cell.name for cell in grid.cells()}
    records = [
        _record(names[key], {"model.connector.stack": key[0], "train.seed": key[1]}, wer, 0.1 * int(key[0]))
        for key, wer in wers.items()
    ]
    groups = group_records(grid, records)
    assert [g["labels"] for g in groups] == [{"model.connector.stack": "2"}, {"model.connector.stack": "4"}]
    first, second = (g["metrics"]["test WER"] for g in groups)
    assert (
        first["n"] == 3
        and np.isclose(first["mean"], 0.25)
        and np.isclose(first["std"], np.std([0.3, 0.2, 0.25], ddof=1))
    )
    assert second["n"] == 1 and second["std"] is None
    assert groups[0]["metrics"]["step_time_s"]["mean"] == pytest.approx(0.2)
    pending = ["model.connector.stack=4__train.seed=1", "model.connector.stack=4__train.seed=2"]
    table = markdown(grid, groups, records, pending)
    assert "| 2 | 3 | 25.00 ± 5.00 | 2 ± 0 | 0.200 ± 0.000 | 3.0 ± 0.0 |" in table
    assert "| 4 | 1 | 50.00 | 2 | 0.400 | 3.0 |" in table
    assert "4 of 6 cells finished" in table and f"Not finished yet: {', '.join(pending)}" in table

    paths = write_results(grid, records, str(tmp_path))
    saved = json.loads(open(paths["json"]).read())
    assert [c["name"] for c in saved["cells"]] == [r["name"] for r in records]
    assert saved["pending"] == pending and saved["groups"] == json.loads(json.dumps(groups))
    plots = plot_results(paths["json"], str(tmp_path / "plots"))
    assert list(plots) == ["test WER"] and plots["test WER"].endswith("test_WER.png")
    assert matplotlib.image.imread(plots["test WER"]).ndim == 3  # a readable PNG


def test_a_cell_records_its_last_dormancy_diagnostics_and_the_table_shows_them(tmp_path):
    lines = [
        {"step": 25, "train/steps_per_s": 2.0, "train/flops_per_step": 1e9, "train/step_memory_bytes": 2**20},
        {"step": 100, "dormancy/audio_text_rms_ratio": 80.0, "dormancy/attention_on_audio": 0.2},
        {"step": 50, "train/steps_per_s": 4.0},
        {"step": 200, "dormancy/audio_text_rms_ratio": 1.5, "dormancy/attention_on_audio": 0.35},
    ]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    metrics = training_metrics(str(tmp_path))
    assert metrics["dormancy/audio_text_rms_ratio"] == 1.5 and metrics["dormancy/attention_on_audio"] == 0.35
    assert "dormancy/attention_on_instruction" not in metrics  # never logged: no column value
    assert metrics["step_time_s"] == pytest.approx(1 / 3.0)

    grid = load_grid(CONFIG, ["train.seed=0,1"], None, [])
    records = [dict(_record(cell.name, cell.labels, 0.2, 0.1)) for cell in grid.cells()]
    for record, ratio in zip(records, (1.5, 2.5)):
        record["metrics"] = {
            **record["metrics"],
            "dormancy/audio_text_rms_ratio": ratio,
            "dormancy/attention_on_audio": 0.35,
        }
    table = markdown(grid, group_records(grid, records), records, [])
    assert "| audio/text embedding RMS | LLM attention on audio |" in table
    assert "| 2 ± 0.707 | 0.350 ± 0.000 |" in table  # a ratio and a share, not percentages
    paths = write_results(grid, records, str(tmp_path))
    assert list(plot_results(paths["json"], str(tmp_path / "plots"))) == ["test WER"]  # diagnostics are not plotted


def _starts(workdir):
    lines = (workdir / "sweep.log").read_text().splitlines()
    return [line.split()[2] for line in lines if line.split()[1] == "start"]


@pytest.mark.slow
def test_sweep_resumes_after_sigkill_without_redoing_finished_cells(tmp_path):
    """Two seeds of the debug config; the sweep is killed once the second cell has a checkpoint and
    run again: the first cell is not rerun, the second resumes, the table has both with a spread."""
    workdir = tmp_path / "sweep"
    command = [
        sys.executable,
        "-m",
        "jaxspeech",
        "sweep",
        "--config",
        CONFIG,
        "--grid",
        "train.seed=0,1",
        "--set",
        "train.total_steps=6",
        "--set",
        "train.optimizer.decay_steps=6",
        "--set",
        "eval.max_examples=2",
        "--workdir",
        str(workdir),
        "--no-progress",
    ]
    env = {**os.environ, "PYTHONPATH": REPO}
    second = workdir / "train.seed=1"
    process = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 1800  # a loaded 2-core machine takes minutes a cell
        while not (second / "checkpoints" / "2").is_dir():
            assert process.poll() is None, "the sweep ended before its second cell had a checkpoint"
            assert time.monotonic() < deadline
            time.sleep(0.2)
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    assert (workdir / "train.seed=0" / "cell.json").exists() and not (second / "cell.json").exists()
    assert _starts(workdir) == ["train.seed=0", "train.seed=1"]

    subprocess.run(command, cwd=REPO, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    assert _starts(workdir) == ["train.seed=0", "train.seed=1", "train.seed=1"]  # the finished cell is not redone
    logged = [json.loads(line) for line in (second / "metrics.jsonl").read_text().splitlines()]
    steps = [m["step"] for m in logged if "train/loss" in m]
    assert steps[-1] == 6 and steps.count(1) == 1  # resumed from its checkpoint, not from step 0

    results = json.loads((workdir / "results.json").read_text())
    assert [c["name"] for c in results["cells"]] == ["train.seed=0", "train.seed=1"] and not results["pending"]
    (group,) = results["groups"]
    wer = group["metrics"]["test/joint WER"]  # tiny_asr decodes with eval.decoders llm, ctc, joint
    assert wer["n"] == 2 and wer["std"] is not None and 0 <= wer["mean"]
    for name in ("step_time_s", "flops_per_step", "step_memory_bytes"):
        assert group["metrics"][name]["n"] == 2 and group["metrics"][name]["mean"] > 0, name
    table = (workdir / "results.md").read_text()
    assert "| train.seed=0 | 6 | completed |" in table and "| train.seed=1 | 6 | completed |" in table
    plots = {p.name for p in (workdir / "plots").iterdir()}
    assert {"test_joint_WER.png", "test_llm_CER.png"} <= plots and all(p.endswith(".png") for p in plots)
