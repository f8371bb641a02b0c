"""Multi-process setup: when to call jax.distributed.initialize, host batches -> global arrays,
and (slow) two processes training like one."""

import os
import socket
import subprocess
import sys

import jax
import numpy as np
import pytest

from jaxspeech.sharding import multihost
from jaxspeech.sharding.mesh import make_mesh
from jaxspeech.sharding.multihost import DistributedConfig, initialize_arguments
from jaxspeech.train.config import train_config_from_dict
from jaxspeech.train.loop import train
from jaxspeech.train.metrics import read_log
from jaxspeech.train.step import batch_shardings, global_batch_shapes

from jaxspeech.testing.tiny_task import TinyTask, loop_config, make_batch

TESTS_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REPO_DIR = os.path.dirname(TESTS_DIR)
ENV = {"JAX_COORDINATOR_ADDRESS": "10.0.0.1:1234", "JAX_NUM_PROCESSES": "4", "JAX_PROCESS_ID": "3"}


def test_single_process_needs_no_initialization():
    assert initialize_arguments(DistributedConfig(), {}) is None
    assert initialize_arguments(DistributedConfig(num_processes=1, process_id=0), {}) is None
    assert multihost.initialize(DistributedConfig(), {}) is False


def test_settings_come_from_config_or_environment():
    expected = {
        "coordinator_address": "10.0.0.1:1234",
        "num_processes": 4,
        "process_id": 3,
        "initialization_timeout": 300,
    }
    assert initialize_arguments(DistributedConfig(), ENV) == expected
    from_config = initialize_arguments(DistributedConfig(coordinator_address="h:1", num_processes=2, process_id=1), ENV)
    assert (from_config["coordinator_address"], from_config["num_processes"], from_config["process_id"]) == (
        "h:1",
        2,
        1,
    )
    assert initialize_arguments(DistributedConfig(cluster_detection=True), {}) == {"initialization_timeout": 300}


def test_partial_or_invalid_settings_are_errors():
    with pytest.raises(ValueError, match="also set num_processes / JAX_NUM_PROCESSES, process_id / JAX_PROCESS_ID"):
        initialize_arguments(DistributedConfig(), {"JAX_COORDINATOR_ADDRESS": "h:1"})
    with pytest.raises(ValueError, match="0 <= process_id < num_processes"):
        initialize_arguments(DistributedConfig(), {**ENV, "JAX_PROCESS_ID": "4"})
    with pytest.raises(ValueError, match="JAX_NUM_PROCESSES='four' is not an integer"):
        initialize_arguments(DistributedConfig(), {**ENV, "JAX_NUM_PROCESSES": "four"})


def test_host_batch_becomes_a_global_array_split_over_the_batch_axes():
    mesh = make_mesh({"data": 2, "fsdp": 2, "tensor": 2})
    host = {"x": np.arange(32, dtype=np.float32).reshape(8, 4), "ids": np.arange(8, dtype=np.int64)}
    shapes = global_batch_shapes(host)
    assert shapes["ids"].dtype == np.int32 and shapes["x"].shape == (8, 4)
    placed = multihost.to_global(host, batch_shardings(shapes, mesh))
    assert placed["x"].sharding.spec == jax.sharding.PartitionSpec(("data", "fsdp"), None)
    assert placed["ids"].dtype == np.int32
    np.testing.assert_array_equal(placed["x"], host["x"])
    with pytest.raises(ValueError, match=r"batch leaf \['x'\] of shape \(6, 4\) cannot be split .* multiple of 4"):
        batch_shardings(global_batch_shapes({"x": host["x"][:6]}), mesh)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def _run_two_processes(workdir, steps, cache_dir):
    port = _free_port()
    processes = []
    for index in range(2):
        env = {
            **os.environ,
            "XLA_FLAGS": "--xla_force_host_platform_device_count=2",
            "JAX_COORDINATOR_ADDRESS": f"localhost:{port}",
            "JAX_NUM_PROCESSES": "2",
            "JAX_PROCESS_ID": str(index),
            "PYTHONPATH": os.pathsep.join([REPO_DIR, TESTS_DIR]),
        }
        command = [
            sys.executable,
            "-m",
            "train.multihost_worker",
            str(workdir),
            "--steps",
            str(steps),
            "--cache-dir",
            cache_dir,
        ]
        processes.append(
            subprocess.Popen(
                command, cwd=REPO_DIR, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
            )
        )
    for process in processes:
        output, _ = process.communicate(timeout=600)
        assert process.returncode == 0, output[-3000:]
        assert f"finished {steps} completed" in output


class _GlobalBatches:
    def __init__(self):
        self.position = 0

    def __iter__(self):
        return self

    def __next__(self):
        self.position += 1
        return make_batch(8, offset=8 * (self.position - 1))


@pytest.mark.slow
def test_two_processes_train_and_resume_like_one(tmp_path, compilation_cache):
    """2 processes x 2 devices, 3 steps, then a resume to 5 (each process restores its own data
    position) give the losses of 1 process with 4 devices on the same global batches."""
    _run_two_processes(tmp_path / "multi", 3, compilation_cache)
    data_files = sorted(f for f in os.listdir(tmp_path / "multi" / "checkpoints" / "3" / "data") if f.endswith(".json"))
    assert data_files == ["process_0-of-2.json", "process_1-of-2.json"]
    _run_two_processes(tmp_path / "multi", 5, compilation_cache)

    config = train_config_from_dict(loop_config(total_steps=5, mesh={"data": 2, "fsdp": 2}))
    train(
        TinyTask(),
        config,
        _GlobalBatches(),
        tmp_path / "single",
        mesh=make_mesh({"data": 2, "fsdp": 2}, jax.devices()[:4]),
    )
    multi_steps, multi = read_log(tmp_path / "multi")["train/loss"]
    single_steps, single = read_log(tmp_path / "single")["train/loss"]
    assert multi_steps.tolist() == single_steps.tolist() == [1, 2, 3, 4, 5]
    np.testing.assert_allclose(multi, single, rtol=1e-5)
