"""Hooks of the training loop: what runs between steps (levanter's ``add_hook(fn, every=N)``).

The loop (``loop.py``) steps and, after every step, gives each hook whose ``every`` divides the step
a ``StepContext``: the step, the train state (a hook may replace it), the step's metrics and the
loop's clock (``ctx.seconds()``: seconds trained so far, over every start of the run, compilation
excluded; ``ctx.run_seconds()``: in this start alone). A hook stops the run after this step with
``ctx.stop(reason)``;
``finish(ctx)``, if a hook has it, runs once after the last step. Logging, evaluation,
checkpointing and the time budget are hooks below; ``default_hooks`` builds them from a
``TrainConfig``, and callers add their own (``train(..., hooks=[...])``), e.g. diagnostics
logged every few hundred steps.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any, Callable, Mapping, Protocol

import jax
import numpy as np
from jax.experimental import multihost_utils

from jaxspeech.train import metrics as metrics_lib
from jaxspeech.train import optim
from jaxspeech.train.config import TrainConfig

log = logging.getLogger(__name__)

EvalFn = Callable[[Any, int], Mapping[str, float]]  # (params, step) -> {name: value}


@dataclasses.dataclass
class StepContext:
    """What a hook sees after step ``step`` (see the module docstring)."""

    step: int
    state: Any
    step_metrics: Mapping[str, Any]
    first_step: int
    total_steps: int
    logger: metrics_lib.MetricsLogger
    clock: Callable[[], float]  # the loop's time.monotonic
    train_start: float  # the clock when training began, moved past every compilation
    stop_reason: str | None = None
    seconds_before: float = 0.0  # trained by earlier starts of the run (saved with the checkpoints)

    def run_seconds(self) -> float:
        """Seconds of training in this start of the run (compilation excluded)."""
        return self.clock() - self.train_start

    def seconds(self) -> float:
        """Seconds of training so far, earlier starts of the run included (compilation excluded)."""
        return self.seconds_before + self.run_seconds()

    def stop(self, reason: str) -> None:
        """Ends the run after this step's hooks, with ``reason`` as its stop reason."""
        self.stop_reason = self.stop_reason or reason


class Hook(Protocol):
    every: int  # runs after steps divisible by it (0: never between steps)

    def __call__(self, ctx: StepContext) -> None: ...


@dataclasses.dataclass
class FunctionHook:
    """``fn(ctx)`` every ``every`` steps."""

    fn: Callable[[StepContext], None]
    every: int = 1

    def __call__(self, ctx: StepContext) -> None:
        self.fn(ctx)


def due(step: int, every: int) -> bool:
    return every > 0 and step % every == 0


class LogTrain:
    """Logs the mean step metrics, throughput (``<count>_per_s``), MFU, FLOPs per step and the step's
    memory (``flops_per_step``, ``step_memory_bytes``: per device, see ``CompiledStep``; the memory is
    the largest of the window's programs) of the steps since the last log every ``every`` steps and
    after the last step; ``add`` is called after every step."""

    def __init__(self, every: int, peak_flops: float | None, on_log: Callable[[int, dict], None] = lambda s, m: None):
        self.every, self.peak_flops, self.on_log = every, peak_flops, on_log
        self.window: list = []
        self.counts: dict[str, float] = {}
        self.flops: float | None = 0.0
        self.memory_bytes: int | None = None
        self.start: float | None = None
        self.last: dict[str, float] = {}

    def add(
        self,
        step_metrics,
        counts: Mapping[str, float],
        flops: float | None,
        now: float,
        memory_bytes: int | None = None,
    ) -> None:
        if self.start is None:
            self.start = now
        if memory_bytes is not None:
            self.memory_bytes = max(memory_bytes, self.memory_bytes or 0)
        self.window.append(step_metrics)
        for name, value in counts.items():
            self.counts[name] = self.counts.get(name, 0.0) + value
        self.flops = None if flops is None or self.flops is None else self.flops + flops

    def pause(self, seconds: float) -> None:
        """Leaves ``seconds`` (a compilation) out of the window's throughput."""
        if self.start is not None:
            self.start += seconds

    def __call__(self, ctx: StepContext) -> None:
        if not self.window:
            return
        seconds = ctx.clock() - self.start
        scalars = metrics_lib.mean_metrics(self.window)
        scalars["steps_per_s"] = len(self.window) / seconds if seconds > 0 else 0.0
        for name, total in self.counts.items():
            scalars[f"{name}_per_s"] = total / seconds if seconds > 0 else 0.0
        utilisation = metrics_lib.mfu(self.flops, seconds, self.peak_flops)
        if utilisation is not None:
            scalars["mfu"] = utilisation
        if self.flops is not None:
            scalars["flops_per_step"] = self.flops / len(self.window)
        if self.memory_bytes is not None:
            scalars["step_memory_bytes"] = float(self.memory_bytes)
        self.last = {f"train/{k}": v for k, v in scalars.items()}
        ctx.logger.write(ctx.step, self.last)
        self.window, self.counts, self.flops, self.memory_bytes, self.start = [], {}, 0.0, None, ctx.clock()
        self.on_log(ctx.step, self.last)

    finish = __call__


class Evaluate:
    """``eval_fn(params, step)`` every ``every`` steps and after the last one (unless it was just
    evaluated, or the run was preempted), logged with the ``eval/`` prefix."""

    def __init__(self, eval_fn: EvalFn, every: int):
        self.eval_fn, self.every = eval_fn, every
        self.last: dict[str, float] = {}

    def __call__(self, ctx: StepContext) -> None:
        results = {f"eval/{k}": float(v) for k, v in self.eval_fn(ctx.state["params"], ctx.step).items()}
        ctx.logger.write(ctx.step, results)
        self.last = results

    def finish(self, ctx: StepContext) -> None:
        if ctx.stop_reason != "preempted" and not due(ctx.step, self.every):
            self(ctx)


class SaveCheckpoint:
    """Saves the state every ``every`` steps and after the last one (``save(step, state)`` skips a
    step already saved)."""

    def __init__(self, save: Callable[[int, Any], None], every: int):
        self.save, self.every = save, every

    def __call__(self, ctx: StepContext) -> None:
        self.save(ctx.step, ctx.state)

    finish = __call__


def fitted_decay_steps(
    step: int, steps_run: int, seconds_run: float, config: TrainConfig, seconds_before: float = 0.0
) -> int:
    """The step the time budget is expected to end at: ``step`` plus the budget's remaining seconds
    (after ``seconds_before`` of earlier starts and ``seconds_run`` of this one) over the mean
    seconds per step of the ``steps_run`` steps of this start, kept within (warmup_steps, total_steps]."""
    seconds_per_step = seconds_run / steps_run
    remaining = max(0.0, config.time_budget_s - seconds_before - seconds_run)
    horizon = step + int(round(remaining / seconds_per_step))
    return min(config.total_steps, max(horizon, config.optimizer.warmup_steps + 1))


class FitDecayToBudget:
    """Every ``every`` steps after warmup, moves the end of the cosine decay to the step the time
    budget is expected to end at (``fitted_decay_steps``), so the learning rate reaches its floor
    when the time runs out on a slow machine as on a fast one. The horizon lives in the optimizer
    state (checkpointed); a resumed run fits it to the budget left, at the speed of its own steps."""

    def __init__(self, config: TrainConfig, every: int):
        self.config, self.every = config, every

    def __call__(self, ctx: StepContext) -> None:
        if ctx.step <= self.config.optimizer.warmup_steps:
            return
        horizon = fitted_decay_steps(
            ctx.step, ctx.step - ctx.first_step, ctx.run_seconds(), self.config, ctx.seconds_before
        )
        if jax.process_count() > 1:  # the value of process 0 on every host, whose clocks differ
            horizon = int(multihost_utils.broadcast_one_to_all(np.int32(horizon)))
        ctx.state = {**ctx.state, "opt_state": optim.with_decay_horizon(ctx.state["opt_state"], horizon)}


class StopAtTimeBudget:
    """Ends the run once ``budget_s`` seconds of training have passed, over every start of the run
    (checked after logging and evaluation, so their time counts; a checkpoint's own time counts at
    the next step)."""

    every = 1

    def __init__(self, budget_s: float):
        self.budget_s = budget_s

    def __call__(self, ctx: StepContext) -> None:
        if ctx.step < ctx.total_steps and ctx.seconds() >= self.budget_s:
            ctx.stop("time_budget")


def default_hooks(
    config: TrainConfig, log_train: LogTrain, save: Callable[[int, Any], None], evaluate: Evaluate | None
) -> list:
    """The hooks a ``TrainConfig`` asks for, in the order they run after a step: logging, fitting
    the decay to the time budget (on the logged window), evaluation, the budget's stop, checkpoints
    (last: the checkpoint of the step the budget ran out at records at least the whole budget, so a
    run resumed from it trains no further)."""
    hooks: list = [log_train]
    if config.fit_decay_to_budget:
        hooks.append(FitDecayToBudget(config, every=config.metrics.log_every))
    if evaluate is not None:
        hooks.append(evaluate)
    if config.time_budget_s is not None:
        hooks.append(StopAtTimeBudget(config.time_budget_s))
    hooks.append(SaveCheckpoint(save, config.checkpoint.every_steps))
    return hooks
