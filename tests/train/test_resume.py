"""Fault tolerance, end to end in subprocesses that train on audio files through the project's Grain
data pipeline: SIGKILL at random moments and resume gives bitwise the parameters of an
uninterrupted run, and every restart that had a committed checkpoint resumed from the newest one
(read from the trainer's log); SIGTERM exits 0 within 5 s with a checkpoint at the last completed
step, also when it arrives inside the first compilation, inside an asynchronous save or inside a
restore, and the run continues bit for bit; resuming without the data iterator's state does NOT
reproduce the run."""

import json
import os
import random
import re
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
SLOW_STEPS = 40  # room for 10 resumes


@pytest.fixture(scope="module")
def manifest(tmp_path_factory) -> str:
    return write_dataset(str(tmp_path_factory.mktemp("data")))


def _start(workdir, cache_dir, manifest, *extra, steps=STEPS, log=None) -> subprocess.Popen:
    """Starts the worker; its stderr goes to ``log`` (default ``<workdir>.stderr``, appended across restarts)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([REPO_DIR, TESTS_DIR, os.environ.get("PYTHONPATH", "")])}
    command = [
        sys.executable,
        "-m",
        "train.train_worker",
        str(workdir),
        "--manifest",
        manifest,
        "--steps",
        str(steps),
        "--cache-dir",
        cache_dir,
        *extra,
    ]
    with open(log or f"{workdir}.stderr", "a") as stderr:
        return subprocess.Popen(command, cwd=REPO_DIR, env=env, stdout=subprocess.PIPE, stderr=stderr, text=True)


def _finish(process: subprocess.Popen, timeout: float = 300, log=None) -> str:
    """Waits for the worker; fails showing its log unless it exited 0. Returns its stdout."""
    out, _ = process.communicate(timeout=timeout)
    if process.returncode != 0:
        log = log or f"{process.args[3]}.stderr"
        pytest.fail(f"worker exited with {process.returncode}:\n{open(log).read()[-3000:]}")
    return out


def _committed_steps(workdir) -> list[int]:
    """Steps of the committed checkpoints (orbax's temporary folders of unfinished saves excluded)."""
    folder = os.path.join(workdir, "checkpoints")
    return sorted(int(name) for name in os.listdir(folder) if name.isdigit()) if os.path.isdir(folder) else []


def _resumed_from(log: str) -> int | None:
    """The step a worker resumed from, by the trainer's log line (None: it started afresh)."""
    found = re.findall(r"resumed from (\S+)", open(log).read())
    assert len(found) <= 1, found
    return int(os.path.basename(found[0])) if found else None


def _run(workdir, cache_dir, manifest, *extra, steps=STEPS) -> dict:
    os.makedirs(os.path.dirname(workdir), exist_ok=True)
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


def _kill_and_resume(workdir, cache_dir, manifest, resumes: int, seed: int, steps: int = STEPS) -> list[tuple]:
    """SIGKILLs the worker at random moments of training and restarts it, until ``resumes``
    restarts have found a committed checkpoint, then lets it finish. Returns, per start: (committed
    steps when it started, the step its log says it resumed from, whether it was killed)."""
    rng = random.Random(seed)
    starts = []
    while sum(1 for committed, _, killed in starts if committed and killed) < resumes:
        assert len(starts) < 4 * resumes + 4, f"too few resumes in {len(starts)} starts: {starts}"
        committed, log = _committed_steps(workdir), f"{workdir}.start{len(starts)}.stderr"
        # A checkpoint every step (3 kept): restarts find several committed steps and often a save cut short.
        process = _start(workdir, cache_dir, manifest, "--checkpoint-every", "1", steps=steps, log=log)
        killed = _wait_for_batches(process, rng.randint(2, 6))
        if killed:
            time.sleep(rng.uniform(0.0, 0.05))
            process.send_signal(signal.SIGKILL)
        process.communicate(timeout=300)
        assert killed, f"the run finished before {resumes} resumes: {starts}"
        starts.append((committed, _resumed_from(log), killed))
    log = f"{workdir}.final.stderr"
    committed = _committed_steps(workdir)
    _finish(_start(workdir, cache_dir, manifest, steps=steps, log=log), log=log)
    return starts + [(committed, _resumed_from(log), False)]


def _check_resumes(starts: list[tuple], resumes: int) -> None:
    """Every start resumed from the newest committed checkpoint it found (a start that found none began afresh)."""
    for index, (committed, resumed, _) in enumerate(starts):
        assert resumed == (committed[-1] if committed else None), (index, starts)
    assert sum(1 for committed, _, killed in starts if committed and killed) >= resumes


def test_sigkill_at_random_moments_then_resume_is_bitwise_identical(tmp_path, compilation_cache, manifest, reference):
    starts = _kill_and_resume(tmp_path / "run", compilation_cache, manifest, resumes=3, seed=0)
    _check_resumes(starts, 3)
    assert _bitwise_equal(_final_params(tmp_path / "run"), reference)


@pytest.mark.slow
def test_sigkill_until_ten_resumes_then_resume_is_bitwise_identical(tmp_path, compilation_cache, manifest):
    reference = _run(tmp_path / "reference", compilation_cache, manifest, steps=SLOW_STEPS)
    starts = _kill_and_resume(tmp_path / "run", compilation_cache, manifest, resumes=10, seed=1, steps=SLOW_STEPS)
    _check_resumes(starts, 10)
    assert _bitwise_equal(_final_params(tmp_path / "run"), reference)


def test_sigterm_inside_compile_restore_and_async_save_each_leaves_a_checkpoint_to_continue_from(
    tmp_path, compilation_cache, manifest, reference
):
    """SIGTERM arriving inside the first compilation, inside a restore, and just after an
    asynchronous save started (still writing): each run exits 0, preempted, with its last completed
    step committed; the next start resumes from it (its digests checked), and the run ends bitwise
    equal to the uninterrupted one."""
    workdir = tmp_path / "run"
    for phase in ("compile", "restore", "save"):
        log = f"{workdir}.{phase}.stderr"
        before = _committed_steps(workdir)
        out = _finish(_start(workdir, compilation_cache, manifest, "--sigterm-in", phase, log=log), log=log)
        assert f"sigterm in {phase}" in out
        if phase == "save":
            assert "(writing: True)" in out  # the signal came while orbax was still writing
        result = json.load(open(workdir / "result.json"))
        assert result["stop_reason"] == "preempted" and result["step"] < STEPS, (phase, result)
        assert _committed_steps(workdir)[-1] == result["step"] > (before[-1] if before else 0), phase
        assert _resumed_from(log) == (before[-1] if before else None), phase
    log = f"{workdir}.final.stderr"
    last = _committed_steps(workdir)[-1]
    _finish(_start(workdir, compilation_cache, manifest, log=log), log=log)
    assert _resumed_from(log) == last
    assert _bitwise_equal(_final_params(workdir), reference)


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
    checkpointer = Checkpointer(workdir / "checkpoints", read_only=True)
    assert checkpointer.latest_step() == result["step"]
    checkpointer.close()

    # Mutation: resuming the model without the data position is a different run (the test has teeth).
    assert not _bitwise_equal(_run(workdir, compilation_cache, manifest, "--no-restore-data"), reference)
