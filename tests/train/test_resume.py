"""Fault tolerance, end to end in subprocesses that train on audio files through the project's Grain
data pipeline: SIGKILL at random moments and resume gives bitwise the parameters of an
uninterrupted run; SIGTERM exits 0 within 5 s with a checkpoint at the last completed step;
resuming without the data iterator's state does NOT reproduce the run."""

import json
import os
import random
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from jaxspeech.train.checkpoint import Checkpointer

from jaxspeech.testing.pipeline_data import write_dataset

TESTS_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REPO_DIR = os.path.dirname(TESTS_DIR)
STEPS = 16


@pytest.fixture(scope="module")
def manifest(tmp_path_factory) -> str:
    return write_dataset(str(tmp_path_factory.mktemp("data")))


def _start(workdir, cache_dir, manifest, *extra, steps=STEPS) -> subprocess.Popen:
    """Starts the worker; its stderr goes to ``<workdir>.stderr`` (appended across restarts)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([REPO_DIR, TESTS_DIR, os.environ.get("PYTHONPATH", "")])}
    command = [sys.executable, "-m", "train.train_worker", str(workdir), "--manifest", manifest, "--steps", str(steps),
               "--cache-dir", cache_dir, *extra]
    with open(f"{workdir}.stderr", "a") as stderr:
        return subprocess.Popen(command, cwd=REPO_DIR, env=env, stdout=subprocess.PIPE, stderr=stderr, text=True)


def _finish(process: subprocess.Popen, timeout: float = 300) -> None:
    process.communicate(timeout=timeout)
    if process.returncode != 0:
        workdir = process.args[3]
        pytest.fail(f"worker exited with {process.returncode}:\n{open(f'{workdir}.stderr').read()[-3000:]}")


def _run(workdir, cache_dir, manifest, *extra, steps=STEPS) -> dict:
    _finish(_start(workdir, cache_dir, manifest, *extra, steps=steps))
    return _final_params(workdir)


def _final_params(workdir) -> dict:
    with np.load(os.path.join(workdir, "final_params.npz")) as data:
        return {key: data[key] for key in data.files}


def _bitwise_equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(a[k].tobytes() == b[k].tobytes() for k in a)


def _wait_for_batches(process: subprocess.Popen, count: int) -> bool:
    """Reads the worker's output until it has taken ``count`` more batches; False if it exited."""
    seen = 0
    while seen < count:
        line = process.stdout.readline()
        if not line:
            return False
        seen += line.strip() == "next"
    return True


@pytest.fixture(scope="module")
def reference(tmp_path_factory, compilation_cache, manifest) -> dict:
    """Final parameters of an uninterrupted run."""
    return _run(tmp_path_factory.mktemp("reference"), compilation_cache, manifest)


def _kill_and_resume(workdir, cache_dir, manifest, kills: int, seed: int) -> int:
    """SIGKILLs the worker ``kills`` times at random moments of training, restarting it each time,
    then lets it finish. Returns how many kills hit a running process."""
    rng = random.Random(seed)
    done_kills = 0
    for _ in range(kills):
        process = _start(workdir, cache_dir, manifest)
        if _wait_for_batches(process, rng.randint(1, 6)):
            time.sleep(rng.uniform(0.0, 0.05))
            process.send_signal(signal.SIGKILL)
            done_kills += 1
        process.communicate(timeout=300)
    _finish(_start(workdir, cache_dir, manifest))
    return done_kills


def test_sigkill_at_random_moments_then_resume_is_bitwise_identical(tmp_path, compilation_cache, manifest, reference):
    kills = _kill_and_resume(tmp_path / "run", compilation_cache, manifest, kills=3, seed=0)
    assert kills == 3
    assert _bitwise_equal(_final_params(tmp_path / "run"), reference)


@pytest.mark.slow
def test_sigkill_ten_times_then_resume_is_bitwise_identical(tmp_path, compilation_cache, manifest, reference):
    kills = _kill_and_resume(tmp_path / "run", compilation_cache, manifest, kills=12, seed=1)
    assert kills >= 10
    assert _bitwise_equal(_final_params(tmp_path / "run"), reference)


def test_sigterm_checkpoints_the_last_step_and_exits_zero_quickly(tmp_path, compilation_cache, manifest, reference):
    workdir = tmp_path / "run"
    process = _start(workdir, compilation_cache, manifest, "--delay", "0.05")
    assert _wait_for_batches(process, 5)
    sent = time.monotonic()
    process.send_signal(signal.SIGTERM)
    _finish(process, timeout=30)
    elapsed = time.monotonic() - sent
    assert elapsed <= 5.0, f"took {elapsed:.1f} s to stop after SIGTERM"

    result = json.load(open(workdir / "result.json"))
    assert result["stop_reason"] == "preempted" and 4 <= result["step"] < STEPS
    checkpointer = Checkpointer(workdir / "checkpoints")
    assert checkpointer.latest_step() == result["step"]
    checkpointer.close()

    # Mutation: resuming the model without the data position is a different run (the test has teeth).
    assert not _bitwise_equal(_run(workdir, compilation_cache, manifest, "--no-restore-data"), reference)
