"""The training loop: logs, eval, checkpoints, resume, the time budget and the non-finite limit."""

import glob
import json

import jax
import numpy as np
import pytest

from jaxspeech.sharding.mesh import make_mesh
from jaxspeech.train import optim
from jaxspeech.train.checkpoint import Checkpointer
from jaxspeech.train.config import train_config_from_dict
from jaxspeech.train import loop as loop_module
from jaxspeech.train.hooks import FunctionHook, fitted_decay_steps
from jaxspeech.train.loop import NonFiniteError, train
from jaxspeech.train.metrics import read_log
from jaxspeech.train.state import build_layout

from jaxspeech.testing.tiny_task import (
    FREEZE_OPTIMIZER,
    IndexedBatches,
    StatefulTinyTask,
    TinyTask,
    grain_iterator,
    loop_config,
    make_batch,
)


def _one_device():
    return make_mesh({"data": 1}, jax.devices()[:1])


class _TaskWithFlops(TinyTask):
    """The tiny task declaring its FLOPs (as a task with scanned layers should)."""

    def train_flops(self, batch):
        return 1e6 * batch["tokens"].shape[0]


def test_logs_evaluates_checkpoints_and_resumes(tmp_path):
    evaluated = []

    def eval_fn(params, step):
        evaluated.append(step)
        return {"wer": 1.0 / step, "param_norm": float(_norm(params))}

    config = loop_config(
        total_steps=6,
        eval_every=3,
        checkpoint={"every_steps": 3},
        metrics={"log_every": 2, "tensorboard": True, "peak_flops_per_device": 1e9},
    )
    result = train(
        _TaskWithFlops(),
        train_config_from_dict(config),
        grain_iterator(8),
        tmp_path,
        eval_fn=eval_fn,
        mesh=_one_device(),
    )
    assert (result.step, result.stop_reason) == (6, "completed")
    assert evaluated == [3, 6]
    assert result.compile_seconds > 0

    log = read_log(tmp_path)
    assert log["train/loss"][0].tolist() == [2, 4, 6] and log["eval/wer"][0].tolist() == [3, 6]
    for key in (
        "accuracy",
        "grad_norm",
        "learning_rate",
        "examples_per_s",
        "tokens_per_s",
        "steps_per_s",
        "mfu",
        "skipped_steps",
    ):
        assert np.all(np.isfinite(log[f"train/{key}"][1])), key
    # MFU = 8e6 declared FLOPs per step x steps/s / 1e9 peak.
    np.testing.assert_allclose(log["train/mfu"][1], 8e6 * log["train/steps_per_s"][1] / 1e9, rtol=1e-6)
    np.testing.assert_allclose(log["train/flops_per_step"][1], 8e6)
    assert np.all(log["train/step_memory_bytes"][1] > 0)
    assert np.all(log["train/examples_per_s"][1] > 0)
    optimizer = train_config_from_dict(config).optimizer
    np.testing.assert_allclose(
        log["train/learning_rate"][1][0], np.mean([optim.learning_rate(s, optimizer) for s in (0, 1)]), rtol=1e-6
    )
    assert glob.glob(str(tmp_path / "tensorboard" / "events.out.tfevents.*"))
    checkpointer = Checkpointer(tmp_path / "checkpoints")
    assert checkpointer.all_steps() == [3, 6]
    checkpointer.close()

    resumed = train(
        _TaskWithFlops(),
        train_config_from_dict({**config, "total_steps": 8}),
        grain_iterator(8),
        tmp_path,
        eval_fn=eval_fn,
        mesh=_one_device(),
    )
    assert (resumed.step, resumed.stop_reason) == (8, "completed")
    assert evaluated == [3, 6, 8]  # eval runs at the end when the last step is not an eval step
    assert read_log(tmp_path)["train/loss"][0].tolist() == [2, 4, 6, 8]


def _norm(tree):
    return np.sqrt(sum(np.sum(np.square(np.asarray(x))) for x in jax.tree.leaves(tree)))


def test_time_budget_stops_and_checkpoints(tmp_path):
    config = train_config_from_dict(loop_config(total_steps=1000, time_budget_s=0.0))
    result = train(TinyTask(), config, grain_iterator(8), tmp_path, mesh=_one_device())
    assert (result.step, result.stop_reason) == (1, "time_budget")
    checkpointer = Checkpointer(tmp_path / "checkpoints")
    assert checkpointer.latest_step() == 1
    checkpointer.close()


def test_data_exhausted_stops_and_checkpoints(tmp_path):
    batches = iter([make_batch(8, offset=8 * i) for i in range(3)])
    result = train(
        TinyTask(), train_config_from_dict(loop_config(total_steps=10)), batches, tmp_path, mesh=_one_device()
    )
    assert (result.step, result.stop_reason) == (3, "data_exhausted")


def test_too_many_non_finite_steps_stop_with_an_error_and_a_finite_last_checkpoint(tmp_path):
    """From the 5th batch on every gradient is NaN: steps 5 and 6 are skipped (limit 2), step 7
    raises. The checkpoint of step 6 holds the parameters of step 4, all finite."""

    config = train_config_from_dict(
        loop_config(
            total_steps=20, optimizer=FREEZE_OPTIMIZER, max_consecutive_skipped_steps=2, checkpoint={"every_steps": 2}
        )
    )
    with pytest.raises(NonFiniteError, match=r"3 consecutive steps up to step 7 .* last checkpoint: step 6"):
        train(StatefulTinyTask(), config, IndexedBatches(8, poisoned_steps=range(5, 100)), tmp_path, mesh=_one_device())

    log = read_log(tmp_path)
    assert log["train/skipped_steps"][1][log["train/skipped_steps"][0].tolist().index(6)] == 2
    layout = build_layout(StatefulTinyTask(), next(IndexedBatches(8)), config.optimizer, _one_device())
    checkpointer = Checkpointer(tmp_path / "checkpoints")
    assert checkpointer.latest_step() == 6
    at_6, at_4 = (checkpointer.restore(step, layout.abstract).state for step in (6, 4))
    checkpointer.close()
    assert int(at_6["skipped_steps"]) == 2
    for a, b in zip(jax.tree.leaves(at_6["params"]), jax.tree.leaves(at_4["params"])):
        assert np.all(np.isfinite(a)) and np.asarray(a).tobytes() == np.asarray(b).tobytes()
    assert json.loads(open(tmp_path / "metrics.jsonl").readlines()[-1])["step"] >= 6


def test_stateful_task_keeps_checkpoints_and_resumes_its_model_state(tmp_path):
    """Batch-norm statistics (a StatefulTask's model state) change every step, stay put on a
    skipped step (3) and survive checkpoints: 2 steps + a resume to 4 == 4 steps, bitwise."""
    task, mesh = StatefulTinyTask(), _one_device()
    config = lambda steps: train_config_from_dict(
        loop_config(total_steps=steps, optimizer=FREEZE_OPTIMIZER, checkpoint={"every_steps": 1, "max_to_keep": None})
    )
    whole = train(task, config(4), IndexedBatches(8, poisoned_steps=[3]), tmp_path / "whole", mesh=mesh)
    train(task, config(2), IndexedBatches(8, poisoned_steps=[3]), tmp_path / "split", mesh=mesh)
    resumed = train(task, config(4), IndexedBatches(8, poisoned_steps=[3]), tmp_path / "split", mesh=mesh)
    for a, b in zip(jax.tree.leaves(whole.state), jax.tree.leaves(resumed.state), strict=True):
        assert np.asarray(a).tobytes() == np.asarray(b).tobytes()

    layout = build_layout(task, next(IndexedBatches(8)), config(4).optimizer, mesh)
    checkpointer = Checkpointer(tmp_path / "whole" / "checkpoints")
    means = [
        np.asarray(checkpointer.restore(s, layout.abstract).state["model_state"]["batch_stats"]["encoder_norm"]["mean"])
        for s in (1, 2, 3, 4)
    ]
    checkpointer.close()
    assert np.abs(means[0]).max() > 0  # moved from its zero init
    assert not np.array_equal(means[0], means[1]) and not np.array_equal(means[2], means[3])
    assert means[1].tobytes() == means[2].tobytes()  # step 3 was skipped


def test_fitted_decay_steps_is_where_the_budget_ends():
    config = train_config_from_dict(loop_config(total_steps=1000, time_budget_s=100.0, fit_decay_to_budget=True))
    assert (
        fitted_decay_steps(step=30, steps_run=20, seconds_run=40.0, config=config) == 30 + 30
    )  # 60 s left at 2 s a step
    assert fitted_decay_steps(step=30, steps_run=20, seconds_run=0.5, config=config) == 1000  # capped at total_steps
    assert fitted_decay_steps(step=30, steps_run=30, seconds_run=150.0, config=config) == 30  # the budget is spent
    # Resumed after 60 s of earlier starts: 40 s left at 1 s a step.
    assert fitted_decay_steps(step=30, steps_run=10, seconds_run=10.0, config=config, seconds_before=50.0) == 30 + 40
    with pytest.raises(ValueError, match="fit_decay_to_budget needs time_budget_s"):
        train_config_from_dict(loop_config(fit_decay_to_budget=True))


class _FakeClock:
    """``time`` for the loop module: every ``monotonic()`` call advances one second."""

    def __init__(self):
        self.now = 0.0

    def monotonic(self):
        self.now += 1.0
        return self.now


def test_decay_is_fitted_to_the_time_budget(tmp_path, monkeypatch):
    # The decay guess (1000 steps) is far beyond the steps the budget gives: fitted, the learning
    # rate still reaches its floor when the budget runs out; unfitted, it stays near its peak.
    monkeypatch.setattr(loop_module, "time", _FakeClock())
    overrides = dict(
        total_steps=1000,
        time_budget_s=150.0,
        metrics={"log_every": 4},
        optimizer={"learning_rate": 1e-2, "warmup_steps": 1, "decay_steps": 1000, "end_lr_fraction": 0.1},
    )
    last_rates = {}
    for fit in (True, False):
        workdir = tmp_path / str(fit)
        config = train_config_from_dict(loop_config(**overrides, fit_decay_to_budget=fit))
        result = train(TinyTask(), config, grain_iterator(8), workdir, mesh=_one_device())
        assert result.stop_reason == "time_budget" and 20 < result.step < 100
        horizon = int(optim.decay_horizon(result.state["opt_state"]))
        last_rates[fit] = read_log(workdir)["train/learning_rate"][1][-1] / 1e-2
        if fit:
            assert abs(horizon - result.step) <= 4, (horizon, result.step)
    assert last_rates[True] < 0.15 and last_rates[False] > 0.95, last_rates


def test_the_time_budget_spans_restarts(tmp_path, monkeypatch):
    """A run killed at step 10 of its 200-s budget (its last checkpoint at step 8) trains only what
    is left after resuming: the seconds trained are saved with every checkpoint."""
    monkeypatch.setattr(loop_module, "time", _FakeClock())
    config = train_config_from_dict(loop_config(total_steps=1000, time_budget_s=200.0, checkpoint={"every_steps": 4}))
    seen, kill = [], [True]

    class Killed(Exception):
        pass

    def record(ctx):
        seen.append((ctx.step, ctx.seconds(), ctx.run_seconds()))
        if ctx.step == 10 and kill.pop():
            raise Killed  # after step 10; the checkpoint of step 8 survives

    with pytest.raises(Killed):
        train(TinyTask(), config, grain_iterator(8), tmp_path, mesh=_one_device(), hooks=[FunctionHook(record)])
    checkpointer = Checkpointer(tmp_path / "checkpoints")
    saved = checkpointer.restore(
        8, build_layout(TinyTask(), next(grain_iterator(8)), config.optimizer, _one_device()).abstract
    ).meta["trained_seconds"]
    checkpointer.close()
    totals = {step: total for step, total, _ in seen}
    assert totals[7] < saved <= totals[8]  # the seconds of step 8 (its own hooks' calls to the clock aside)
    seen.clear()
    kill.append(False)
    resumed = train(TinyTask(), config, grain_iterator(8), tmp_path, mesh=_one_device(), hooks=[FunctionHook(record)])
    assert resumed.stop_reason == "time_budget" and seen[0][0] == 9
    first_total, first_run = seen[0][1:]
    assert first_total == pytest.approx(saved + first_run, abs=2)  # counting on from the checkpoint's seconds (the
    # fake clock ticks at every reading)
    last_total, last_run = seen[-1][1:]
    assert 200.0 <= last_total < 200.0 + (last_total - seen[-2][1]) + 1e-9  # stops once the whole budget is spent
    assert saved > 20 and last_run < 200.0 - saved + 10  # the resumed start gets what was left, not 200 s
    # A run resumed from the checkpoint that spent the budget does not train another step.
    again = train(TinyTask(), config, grain_iterator(8), tmp_path, mesh=_one_device())
    assert (again.step, again.stop_reason) == (resumed.step, "time_budget")


def test_hooks_run_every_n_steps_see_the_state_and_can_stop_the_run(tmp_path):
    seen = []

    def record(ctx):
        seen.append((ctx.step, int(jax.device_get(ctx.state["step"]))))

    def stop_at_five(ctx):
        if ctx.step == 5:
            ctx.stop("enough")

    config = train_config_from_dict(loop_config(total_steps=100, checkpoint={"every_steps": 100}))
    hooks = [FunctionHook(record, every=2), FunctionHook(stop_at_five)]
    result = train(TinyTask(), config, grain_iterator(8), tmp_path, mesh=_one_device(), hooks=hooks)
    assert (result.step, result.stop_reason) == (5, "enough")
    assert seen == [(2, 2), (4, 4)]
    checkpointer = Checkpointer(tmp_path / "checkpoints")
    assert checkpointer.latest_step() == 5  # the last step is checkpointed whatever stopped the run
    checkpointer.close()


def test_the_progress_bar_shows_the_time_budget_and_the_steps(tmp_path, capsys):
    config = train_config_from_dict(loop_config(total_steps=3, time_budget_s=600.0, progress_bar=True))
    train(TinyTask(), config, grain_iterator(8), tmp_path, mesh=_one_device())
    bar = capsys.readouterr().err
    assert "/600 s of the time budget" in bar and "step=3" in bar, bar
