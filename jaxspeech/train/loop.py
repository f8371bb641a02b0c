"""The training loop: restore or init, then step through the data; between steps, hooks (``hooks.py``)
log, evaluate, checkpoint and keep the time budget.

``train(task, config, data, workdir)`` runs until ``total_steps``, a hook's stop (the time budget),
the end of the data, or SIGTERM (which checkpoints the last completed step and returns normally), and raises
``NonFiniteError`` once more than ``max_consecutive_skipped_steps`` steps in a row had a
non-finite loss or gradient. It resumes from the newest readable checkpoint in
``<workdir>/<checkpoint.subdir>`` including the data iterator's position, so a killed run
restarted with the same config continues bit for bit. Each checkpoint records the seconds trained
so far (``trained_seconds`` in its meta data), so the time budget spans restarts: a run killed after
5 of its 8 minutes trains 3 more after resuming.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import time
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

import jax
from jax.sharding import Mesh
from tqdm.auto import tqdm

from jaxspeech import paths
from jaxspeech.sharding import multihost
from jaxspeech.sharding.mesh import make_mesh
from jaxspeech.train import metrics as metrics_lib
from jaxspeech.train.checkpoint import Checkpointer
from jaxspeech.train.config import TrainConfig
from jaxspeech.train.hooks import EvalFn, Evaluate, Hook, LogTrain, StepContext, default_hooks, due
from jaxspeech.train.signals import StopOnSigterm
from jaxspeech.train.state import State, build_layout, init_state
from jaxspeech.train.step import CompiledStep
from jaxspeech.train.task import Task
from jaxspeech.types import HostBatch

log = logging.getLogger(__name__)


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
    trained_seconds: float = 0.0  # of training, over every start of the run (compilation excluded)


def _arrays(item: Any) -> Any:
    """The array pytree of what the data iterator yields (the data pipeline's ``HostBatch``
    carries its ``Batch`` beside host-only metadata)."""
    return item.batch if isinstance(item, HostBatch) else item


class _Run:
    """State of one ``train`` call (kept in one place so the loop body stays readable)."""

    def __init__(self, task: Task, config: TrainConfig, data: Iterator, workdir: str, mesh: Mesh | None):
        self.task, self.config, self.data = task, config, data
        self.mesh = mesh if mesh is not None else make_mesh(config.mesh)
        self.checkpointer = Checkpointer(paths.join(workdir, config.checkpoint.subdir), config.checkpoint)
        self.logger = metrics_lib.MetricsLogger(workdir, tensorboard=config.metrics.tensorboard)
        self.last_saved_step: int | None = None
        self.seconds_before = 0.0  # trained before this start (from the restored checkpoint)
        self.trained_seconds: Callable[[], float] = lambda: self.seconds_before

    def start(self) -> tuple[State, Any]:
        """(state, first batch to train on or None): restored from a checkpoint or freshly built."""
        config = self.config
        first_batch = _arrays(next(self.data))
        self.layout = build_layout(self.task, first_batch, config.optimizer, self.mesh, config.sharding_rules)
        self.step_fn = CompiledStep(self.task, self.layout, config.optimizer, config.grad_accum_steps)
        restored = self.checkpointer.restore_latest(
            self.layout.abstract, with_data=config.checkpoint.restore_data_state
        )
        if restored is None:
            return init_state(self.task, first_batch, self.layout, config.seed), first_batch
        self.last_saved_step = restored.step
        self.seconds_before = float(restored.meta.get("trained_seconds", 0.0))
        if restored.data_state is not None:
            self.data.set_state(restored.data_state)
        else:
            log.warning(
                "checkpoint at step %d has no data iterator state (or restoring it is off): the data restarts",
                restored.step,
            )
        log.info("resumed from %s", self.checkpointer.step_directory(restored.step))
        return restored.state, None

    def close(self) -> None:
        self.checkpointer.close()
        self.logger.close()

    def save(self, step: int, state: State) -> None:
        if step != self.last_saved_step:
            saveable = self.data if hasattr(self.data, "get_state") else None
            self.checkpointer.save(step, state, saveable, meta={"trained_seconds": self.trained_seconds()})
            self.last_saved_step = step

    def peak_flops(self) -> float | None:
        cfg = self.config.metrics
        peak = cfg.peak_flops_per_device
        if peak is None and cfg.measure_peak_flops:
            peak = metrics_lib.measure_peak_flops(cfg.peak_matmul_size, cfg.peak_matmul_dtype)
            log.info("measured peak %.3g FLOP/s per device (%s matmul)", peak, cfg.peak_matmul_dtype)
        return peak

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


class _Progress:
    """The progress bar (process 0): with a time budget, seconds trained of the budget and the
    steps so far; without one, steps of ``total_steps``. The last logged loss beside it."""

    def __init__(self, config: TrainConfig, first_step: int):
        self.budget = config.time_budget_s
        enabled = config.progress_bar and jax.process_index() == 0
        if self.budget is None:
            self.bar = tqdm(
                total=config.total_steps, initial=first_step, unit="step", dynamic_ncols=True, disable=not enabled
            )
        else:
            self.bar = tqdm(
                total=round(self.budget),
                unit="s",
                dynamic_ncols=True,
                disable=not enabled,
                bar_format="{l_bar}{bar}| {n:.0f}/{total} s of the time budget{postfix}",
            )
        self.loss: str | None = None

    def update(self, step: int, seconds: Callable[[], float]) -> None:
        if self.bar.disable:
            return
        self.bar.update(step - self.bar.n if self.budget is None else min(seconds(), self.budget) - self.bar.n)
        self.bar.set_postfix({"step": step, **({"loss": self.loss} if self.loss else {})}, refresh=False)

    def logged(self, step: int, scalars: Mapping[str, float]) -> None:
        if "train/loss" in scalars:
            self.loss = f"{scalars['train/loss']:.4f}"

    def close(self) -> None:
        self.bar.close()


def train(
    task: Task,
    config: TrainConfig,
    data: Iterable,
    workdir: str | os.PathLike,
    *,
    eval_fn: EvalFn | None = None,
    mesh: Mesh | None = None,
    hooks: Sequence[Hook] = (),
) -> TrainResult:
    """Trains ``task`` on host batches from ``data``: an iterator (or iterable) of numpy pytrees
    with the batch on axis 0, or of the data pipeline's ``HostBatch``es; the iterator's
    ``get_state``/``set_state``, if any, make its position part of checkpoints. ``mesh`` defaults
    to ``make_mesh(config.mesh)``. After every step the hooks of ``config`` (logging, the time
    budget, checkpoints, ``eval_fn`` every ``config.eval_every`` steps: ``hooks.default_hooks``)
    run, then ``hooks``. See the module docstring for the stop conditions."""
    workdir = os.fspath(workdir)
    data = data if hasattr(data, "__next__") else iter(data)  # e.g. a DataPipeline -> its iterator
    multihost.initialize(config.distributed)
    if config.compilation_cache_dir:
        jax.config.update("jax_compilation_cache_dir", config.compilation_cache_dir)
    with StopOnSigterm() as stop, contextlib.closing(_Run(task, config, data, workdir, mesh)) as run:
        state, pending_batch = run.start()
        step = first_step = int(jax.device_get(state["step"]))
        progress = _Progress(config, first_step)
        log_train = LogTrain(config.metrics.log_every, run.peak_flops(), on_log=progress.logged)
        evaluate = None if eval_fn is None else Evaluate(eval_fn, config.eval_every)
        all_hooks = [*default_hooks(config, log_train, run.save, evaluate), *hooks]
        ctx = StepContext(
            step,
            state,
            {},
            first_step,
            config.total_steps,
            run.logger,
            time.monotonic,
            0.0,
            seconds_before=run.seconds_before,
        )
        run.trained_seconds = lambda: ctx.seconds() if trained else run.seconds_before
        previous, trained = None, False
        stop_reason = "completed"
        budget_spent = (
            run.last_saved_step is not None
            and config.time_budget_s is not None
            and run.seconds_before >= config.time_budget_s
        )
        if budget_spent:  # resumed from a checkpoint saved when the budget ran out
            stop_reason = "time_budget"
        try:
            while step < config.total_steps and not budget_spent:
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
                if not trained:
                    ctx.train_start, trained = now, True
                else:
                    ctx.train_start += now - before_compile
                    log_train.pause(now - before_compile)
                state, step_metrics = compiled(state, run.step_fn.to_device(batch))
                step += 1
                shape_key = run.step_fn.shape_key(batch)
                log_train.add(
                    step_metrics,
                    metrics_lib.throughput_counts(task, batch),
                    run.step_fn.flops[shape_key],
                    now,
                    run.step_fn.memory_bytes[shape_key],
                )
                if previous is not None:
                    run.check_finite(*previous)  # the previous step has finished by now: no stall
                previous = (step, step_metrics)
                if due(step, config.metrics.log_every):
                    run.check_finite(*previous)
                ctx.step, ctx.state, ctx.step_metrics = step, state, step_metrics
                for hook in all_hooks:
                    if due(step, hook.every):
                        hook(ctx)
                state = ctx.state
                progress.update(step, ctx.seconds)
                if ctx.stop_reason is not None:
                    stop_reason = ctx.stop_reason
                    break
                if stop.should_stop(step):
                    stop_reason = "preempted"
                    break
        finally:
            progress.close()
        if previous is not None:
            run.check_finite(*previous)
        ctx.step, ctx.state, ctx.stop_reason = step, state, stop_reason
        for hook in all_hooks:
            if hasattr(hook, "finish"):
                hook.finish(ctx)
        run.checkpointer.wait()
        compile_seconds = sum(run.step_fn.compile_seconds.values())
        log.info("stopped at step %d (%s); compile %.1f s", step, stop_reason, compile_seconds)
        last_eval = evaluate.last if evaluate is not None else {}
        return TrainResult(state, step, stop_reason, log_train.last, last_eval, compile_seconds, run.trained_seconds())
