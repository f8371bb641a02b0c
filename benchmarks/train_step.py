"""The train step `jaxspeech train` compiles, built for one batch: shared by the step benchmarks."""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax

from jaxspeech.sharding.mesh import make_mesh
from jaxspeech.train.state import build_layout, init_state
from jaxspeech.train.step import CompiledStep


def load_batch(experiment, frames: int, rows: int | None, max_batches: int = 300):
    """The pipeline's first host batch of the ``frames`` bucket (optionally its first ``rows`` rows)."""
    it = experiment.train_pipeline().iterator()
    try:
        for _ in range(max_batches):
            batch = next(it).batch
            if batch.features.shape[2] == frames:
                break
        else:
            raise RuntimeError(f"no batch of the {frames}-frame bucket in the first {max_batches} batches")
    finally:
        it.close()
    if rows is not None:
        batch = jax.tree.map(lambda x: x[:rows], batch)
    return batch


@dataclasses.dataclass
class BuiltStep:
    """A compiled train step with its initial state (seed 0) and the batch already on device."""

    step: CompiledStep
    state: Any
    run: Callable  # (state, device_batch) -> (state, metrics); the state is donated
    device_batch: Any
    compile_s: float


def build_step(experiment, batch) -> BuiltStep:
    """Layout, state and executable exactly as the trainer makes them, for ``batch``'s shapes."""
    task, optimizer = experiment.task, experiment.train.optimizer
    layout = build_layout(task, batch, optimizer, make_mesh(experiment.train.mesh))
    step = CompiledStep(task, layout, optimizer, experiment.train.grad_accum_steps)
    state = init_state(task, batch, layout, 0)
    run = step.compiled(batch)
    return BuiltStep(step, state, run, step.to_device(batch), step.compile_seconds[step.shape_key(batch)])
