"""The training loop: restore or init, then step through the data with logging, eval and checkpoints.

``train(task, config, data, workdir)`` runs until ``total_steps``, the time budget, the end of the
data, or SIGTERM (which checkpoints the last completed step and returns normally), and raises
``NonFiniteError`` once more than ``max_consecutive_skipped_steps`` steps in a row had a
non-finite loss or gradient. It resumes from the newest readable checkpoint in
``<workdir>/<checkpoint.subdir>`` including the data iterator's position, so a killed run
restarted with the same config continues bit for bit.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import time
from typing import Any, Callable, Iterable, Iterator, Mapping

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh
from tqdm.auto import tqdm

from jaxspeech.sharding import multihost
from jaxspeech.sharding.mesh import make_mesh
from jaxspeech.train import metrics as metrics_lib
from jaxspeech.train import optim
from jaxspeech.train.checkpoint import Checkpointer
from jaxspeech.train.config import TrainConfig
from jaxspeech.train.signals import StopOnSigterm
from jaxspeech.train.state import State, build_layout, init_state
from jaxspeech.train.step import CompiledStep
from jaxspeech.train.task import Task
from jaxspeech.types import HostBatch

log = logging.getLogger(__name__)

EvalFn = Callable[[Any, int], Mapping[str, float]]  # (params, step) -> {name: value}


class NonFiniteError(RuntimeError):
    """Too many consecutive steps had a non-finite loss or gradient."""


@dataclasses.dataclass
class TrainResult:
    state: State
    step: int
    stop_reason: str  # "completed" | "time_budget" | "data_exhausted" | "preempted"
    last_train_metrics: dict[str, float]
    last_eval_metrics: dict[str, float]
    compile_seconds: float


def _arrays(item: Any) -> Any:
    """The array pytree of what the data iterator yields (the data pipeline's ``HostBatch``
    carries its ``Batch`` beside host-only metadata)."""
    return item.batch if isinstance(item, HostBatch) else item


def _due(step: int, every: int) -> bool:
    return every > 0 and step % every == 0


def _budget_left(budget_s: float | None, train_start: float) -> dict[str, str]:
    """{"budget_left": "M:SS"} while a time budget runs (the step-count ETA means little then)."""
    if budget_s is None:
        return {}
    seconds = max(0, int(budget_s - (time.monotonic() - train_start)))
    return {"budget_left": f"{seconds // 60}:{seconds % 60:02d}"}


def fitted_decay_steps(step: int, steps_run: int, seconds_run: float, config: TrainConfig) -> int:
    """The step the time budget is expected to end at: ``step`` plus the budget's remaining seconds
    over the mean seconds per step of the ``steps_run`` steps of this run so far (``seconds_run``),
    kept within (warmup_steps, total_steps]."""
    seconds_per_step = seconds_run / steps_run
    remaining = max(0.0, config.time_budget_s - seconds_run)
    horizon = step + int(round(remaining / seconds_per_step))
    return min(config.total_steps, max(horizon, config.optimizer.warmup_steps + 1))


@dataclasses.dataclass
class _Window:
    """Steps since the last log line: their (device) metrics, host counts and FLOPs per device."""

    start: float
    metrics: list = dataclasses.field(default_factory=list)
    counts: dict[str, float] = dataclasses.field(default_factory=dict)
    flops: float | None = 0.0

    def add(self, step_metrics, counts: Mapping[str, float], flops: float | None) -> None:
        self.metrics.append(step_metrics)
        for name, value in counts.items():
            self.counts[name] = self.counts.get(name, 0.0) + value
        self.flops = None if flops is None or self.flops is None else self.flops + flops


class _Run:
    """State of one ``train`` call (kept in one place so the loop body stays readable)."""

    def __init__(self, task: Task, config: TrainConfig, data: Iterator, workdir: str, eval_fn: EvalFn | None, mesh: Mesh | None):
        self.task, self.config, self.data, self.eval_fn = task, config, data, eval_fn
        self.mesh = mesh if mesh is not None else make_mesh(config.mesh)
        self.checkpointer = Checkpointer(os.path.join(workdir, config.checkpoint.subdir), config.checkpoint)
        self.logger = metrics_lib.MetricsLogger(workdir, tensorboard=config.metrics.tensorboard)
        self.last_saved_step: int | None = None
        self.last_train: dict[str, float] = {}
        self.last_eval: dict[str, float] = {}

    def start(self) -> tuple[State, Any]:
        """(state, first batch to train on or None): restored from a checkpoint or freshly built."""
        config = self.config
        first_batch = _arrays(next(self.data))
        self.layout = build_layout(self.task, first_batch, config.optimizer, self.mesh, config.sharding_rules)
        self.step_fn = CompiledStep(self.task, self.layout, config.optimizer, config.grad_accum_steps)
        restored = self.checkpointer.restore_latest(self.layout.abstract, with_data=config.checkpoint.restore_data_state)
        if restored is None:
            return init_state(self.task, first_batch, self.layout, config.seed), first_batch
        self.last_saved_step = restored.step
        if restored.data_state is not None:
            self.data.set_state(restored.data_state)
        else:
            log.warning("checkpoint at step %d has no data iterator state (or restoring it is off): the data restarts", restored.step)
        log.info("resumed from %s", self.checkpointer.step_directory(restored.step))
        return restored.state, None

    def close(self) -> None:
        self.checkpointer.close()
        self.logger.close()

    def save(self, step: int, state: State) -> None:
        if step != self.last_saved_step:
            saveable = self.data if hasattr(self.data, "get_state") else None
            self.checkpointer.save(step, state, saveable)
            self.last_saved_step = step

    def evaluate(self, step: int, state: State) -> None:
        if self.eval_fn is None:
            return
        results = {f"eval/{k}": float(v) for k, v in self.eval_fn(state["params"], step).items()}
        self.logger.write(step, results)
        self.last_eval = results

    def log_train(self, step: int, window: "_Window") -> None:
        seconds = time.monotonic() - window.start
        scalars = metrics_lib.mean_metrics(window.metrics)
        scalars["steps_per_s"] = len(window.metrics) / seconds if seconds > 0 else 0.0
        for name, total in window.counts.items():
            scalars[f"{name}_per_s"] = total / seconds if seconds > 0 else 0.0
        utilisation = metrics_lib.mfu(window.flops, seconds, self.peak_flops)
        if utilisation is not None:
            scalars["mfu"] = utilisation
        self.last_train = {f"train/{k}": v for k, v in scalars.items()}
        self.logger.write(step, self.last_train)

    def fit_decay(self, step: int, state: State, steps_run: int, seconds_run: float) -> State:
        """``state`` with its decay horizon moved to the expected last step of the time budget (the
        value of process 0 on every host, whose clocks differ)."""
        horizon = fitted_decay_steps(step, steps_run, seconds_run, self.config)
        if jax.process_count() > 1:
            horizon = int(multihost_utils.broadcast_one_to_all(np.int32(horizon)))
        return {**state, "opt_state": optim.with_decay_horizon(state["opt_state"], horizon)}

    def measure_peak(self) -> None:
        cfg = self.config.metrics
        self.peak_flops = cfg.peak_flops_per_device
        if self.peak_flops is None and cfg.measure_peak_flops:
            self.peak_flops = metrics_lib.measure_peak_flops(cfg.peak_matmul_size, cfg.peak_matmul_dtype)
            log.info("measured peak %.3g FLOP/s per device (%s matmul)", self.peak_flops, cfg.peak_matmul_dtype)

    def check_finite(self, step: int, step_metrics: Mapping[str, Any]) -> None:
        consecutive = int(jax.device_get(step_metrics["consecutive_skipped_steps"]))
        if consecutive > self.config.max_consecutive_skipped_steps:
            self.checkpointer.wait()
            raise NonFiniteError(
                f"{consecutive} consecutive steps up to step {step} had a non-finite loss or gradient "
                f"(limit max_consecutive_skipped_steps={self.config.max_consecutive_skipped_steps}); "
                f"last checkpoint: step {self.last_saved_step}"
            )
        if consecutive:
            log.warning("step %d skipped: non-finite loss or gradient (%d in a row)", step, consecutive)


def train(
    task: Task,
    config: TrainConfig,
    data: Iterable,
    workdir: str | os.PathLike,
    *,
    eval_fn: EvalFn | None = None,
    mesh: Mesh | None = None,
) -> TrainResult:
    """Trains ``task`` on host batches from ``data``: an iterator (or iterable) of numpy pytrees
    with the batch on axis 0, or of the data pipeline's ``HostBatch``es; the iterator's
    ``get_state``/``set_state``, if any, make its position part of checkpoints. ``mesh`` defaults
    to ``make_mesh(config.mesh)``. See the module docstring for the stop conditions."""
    workdir = os.fspath(workdir)
    data = data if hasattr(data, "__next__") else iter(data)  # e.g. a DataPipeline -> its iterator
    multihost.initialize(config.distributed)
    if config.compilation_cache_dir:
        jax.config.update("jax_compilation_cache_dir", config.compilation_cache_dir)
    with StopOnSigterm() as stop, contextlib.closing(_Run(task, config, data, workdir, eval_fn, mesh)) as run:
        state, pending_batch = run.start()
        run.measure_peak()
        step = first_step = int(jax.device_get(state["step"]))
        previous, window, train_start = None, None, None
        stop_reason = "completed"
        progress = tqdm(
            total=config.total_steps, initial=step, unit="step", dynamic_ncols=True,
            disable=not config.progress_bar or jax.process_index() != 0,
        )
        with progress:
            while step < config.total_steps:
                if config.time_budget_s is not None and train_start is not None and time.monotonic() - train_start >= config.time_budget_s:
                    stop_reason = "time_budget"
                    break
                if pending_batch is None:
                    try:
                        pending_batch = _arrays(next(data))
                    except StopIteration:
                        stop_reason = "data_exhausted"
                        break
                batch, pending_batch = pending_batch, None
                # A new batch shape compiles here; that time counts neither in throughput nor in the budget.
                before_compile = time.monotonic()
                compiled = run.step_fn.compiled(batch)
                now = time.monotonic()
                if train_start is None:
                    train_start, window = now, _Window(now)
                else:
                    train_start += now - before_compile
                    window.start += now - before_compile
                state, step_metrics = compiled(state, run.step_fn.to_device(batch))
                step += 1
                window.add(step_metrics, metrics_lib.throughput_counts(task, batch), run.step_fn.flops[run.step_fn.shape_key(batch)])
                progress.update(1)
                if previous is not None:
                    run.check_finite(*previous)  # the previous step has finished by now: no stall
                previous = (step, step_metrics)

                if _due(step, config.metrics.log_every) or step == config.total_steps:
                    run.check_finite(*previous)
                    run.log_train(step, window)
                    progress.set_postfix(loss=f"{run.last_train['train/loss']:.4f}",
                                         **_budget_left(config.time_budget_s, train_start), refresh=False)
                    window = _Window(time.monotonic())
                    if config.fit_decay_to_budget and step > config.optimizer.warmup_steps:
                        state = run.fit_decay(step, state, step - first_step, time.monotonic() - train_start)
                if _due(step, config.eval_every):
                    run.evaluate(step, state)
                if _due(step, config.checkpoint.every_steps):
                    run.save(step, state)
                if stop.should_stop(step):
                    stop_reason = "preempted"
                    break
        if previous is not None:
            run.check_finite(*previous)
        if window is not None and window.metrics:
            run.log_train(step, window)
        run.save(step, state)
        if stop_reason != "preempted" and run.eval_fn is not None and not _due(step, config.eval_every):
            run.evaluate(step, state)
        run.checkpointer.wait()
        compile_seconds = sum(run.step_fn.compile_seconds.values())
        log.info("stopped at step %d (%s); compile %.1f s", step, stop_reason, compile_seconds)
        return TrainResult(state, step, stop_reason, run.last_train, run.last_eval, compile_seconds)
