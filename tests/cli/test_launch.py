"""``jaxspeech launch --dry-run`` prints the Cloud TPU VM steps of a plan (nothing reaches the cloud)."""

import json
import shlex

import pytest

from jaxspeech.cli import main
from jaxspeech.cloud.tpu_vm import launch_steps, run_steps

# The fields of a plan.json that launching reads: a 64-chip v5p slice on 16 hosts.
PLAN = {
    "version": 1,
    "topology": "v5p:4x4x4",
    "devices": 64,
    "hosts": 16,
    "device_kind": "TPU v5",
    "settings": {"train.mesh": {"data": 1, "fsdp": 64, "tensor": 1}},
}


@pytest.fixture
def plan_file(tmp_path):
    path = tmp_path / "plan.json"
    path.write_text(json.dumps(PLAN))
    return str(path)


def test_dry_run_prints_every_step(plan_file, capsys):
    code = main(
        [
            "launch",
            "--plan",
            plan_file,
            "--config",
            "configs/slam_asr_8b.py",
            "--name",
            "slam8b",
            "--zone",
            "us-east5-a",
            "--workdir",
            "gs://bucket/runs/slam8b",
            "--set",
            "init.llm_dir=gs://bucket/llm",
            "--dry-run",
        ]
    )
    assert code == 0
    lines = [shlex.split(line[2:]) for line in capsys.readouterr().out.splitlines()]
    assert lines[0][:2] == ["git", "archive"]
    create, scp, install, train, delete = lines[1:]
    assert create == [
        "gcloud",
        "compute",
        "tpus",
        "tpu-vm",
        "create",
        "slam8b",
        "--zone=us-east5-a",
        "--accelerator-type=v5p-128",
        "--version=v2-alpha-tpuv5",
    ]
    assert scp[4] == "scp" and "slam8b:~/" in scp
    for step in (scp, install, train):
        assert "--worker=all" in step
    assert "pip install" in install[-1] and "jaxspeech[tpu]" in install[-1]
    command = shlex.split(train[-1].partition("&& ")[2])
    assert command[:4] == ["jaxspeech", "train", "--config", "configs/slam_asr_8b.py"]
    assert command[command.index("--plan") + 1] == "../plan.json"
    assert command[command.index("--workdir") + 1] == "gs://bucket/runs/slam8b"
    assert "init.llm_dir=gs://bucket/llm" in command and "train.distributed.cluster_detection=True" in command
    assert delete[4:6] == ["delete", "slam8b"]


def test_a_run_folder_the_workers_cannot_share_is_refused():
    with pytest.raises(ValueError, match="every worker must see the run folder"):
        launch_steps(PLAN, name="x", zone="z", project=None, config="c.py", workdir="runs/slam8b")


def test_a_failed_step_still_deletes_the_slice():
    steps = launch_steps(PLAN, name="x", zone="z", project="p", config="c.py", workdir="gs://b/r")
    ran = []

    def fake_gcloud(command):  # the train step fails
        ran.append(command)
        return 1 if "train" in " ".join(command) else 0

    assert run_steps(steps, echo=lambda _: None, run=fake_gcloud) == 1
    assert [c[4] if c[0] == "gcloud" else c[0] for c in ran] == ["git", "create", "scp", "ssh", "ssh", "delete"]
