"""One train step compiled ahead of time for a mesh, and what its compiled program says.

``measure_step`` builds the state layout and the train step exactly as ``train.loop`` does
(``build_layout``, ``CompiledStep``), lowers them for a global batch of abstract arrays placed on
the mesh's devices, compiles, and reads per-device memory from ``memory_analysis()``:

  total = arguments + outputs - aliased (the donated state) + temporaries + generated code.

The arguments are split into parameters, optimizer state, other state and the batch by summing
each leaf's shard; ``gradients`` is the per-device size of the trained parameters' gradients in
float32, which the compiled temporaries hold (``activations`` = the rest of the temporaries).
"""

from __future__ import annotations

import dataclasses
import math
import re
import time
from typing import Any

import jax
from jax.sharding import Mesh

from jaxspeech.plan.hlo import ProgramFacts, program_facts
from jaxspeech.plan.parts import PlannedRun
from jaxspeech.train import optim
from jaxspeech.train.state import build_layout
from jaxspeech.train.step import CompiledStep, batch_shardings
from jaxspeech.types import Batch, BatchShape


@dataclasses.dataclass(frozen=True)
class Memory:
    """Bytes per device of one compiled train step."""

    params: int
    optimizer: int
    other_state: int
    batch: int
    gradients: int
    activations: int
    outputs_not_donated: int
    code: int

    @property
    def total(self) -> int:
        return (
            self.params
            + self.optimizer
            + self.other_state
            + self.batch
            + self.gradients
            + self.activations
            + self.outputs_not_donated
            + self.code
        )


@dataclasses.dataclass(frozen=True)
class StepMeasure:
    """What one compile of the train step for ``shape`` (global batch) tells."""

    shape: BatchShape
    memory: Memory
    compiled_flops: float  # the compiler's count per device (loop bodies once)
    compiled_bytes: float  # bytes accessed per device (loop bodies once)
    optimal_seconds: float | None  # the compiler's own estimate, when it gives one
    program: ProgramFacts
    compile_seconds: float


def shard_bytes(tree: Any) -> int:
    """Bytes per device of a tree of ShapeDtypeStructs carrying shardings (the largest shard)."""
    total = 0
    for leaf in jax.tree.leaves(tree):
        shape = leaf.sharding.shard_shape(leaf.shape) if leaf.sharding is not None else leaf.shape
        total += math.prod(shape) * jax.numpy.dtype(leaf.dtype).itemsize
    return total


def placed_batch(shape: BatchShape, mesh: Mesh, rules) -> Any:
    """The abstract global batch of ``shape`` with the shardings the train step gives it."""
    abstract = Batch.abstract(shape)
    shardings = batch_shardings(abstract, mesh, rules)
    return jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract, shardings)


class CompilerOutOfMemory(RuntimeError):
    """The TPU compiler refused the program: its temporaries alone exceed the chip's HBM."""

    def __init__(self, message: str, shape: BatchShape, state_bytes: int, temporaries: float | None, seconds: float):
        super().__init__(message)
        self.shape, self.state_bytes, self.temporaries, self.seconds = shape, state_bytes, temporaries, seconds

    @property
    def total(self) -> float:
        """At least this many bytes per device (state + the temporaries the compiler asked for)."""
        return self.state_bytes + (self.temporaries or 0.0)


_REQUIRED = re.compile(r"HLO temporaries \(([\d.]+)([KMGT])\)")


def _compile(lowered, shape: BatchShape, state_bytes: int, start: float):
    try:
        return lowered.compile()
    except jax.errors.JaxRuntimeError as error:
        if "RESOURCE_EXHAUSTED" not in str(error):
            raise
        match = _REQUIRED.search(str(error))
        required = float(match.group(1)) * 1024 ** "KMGT".index(match.group(2)) * 1024 if match else None
        raise CompilerOutOfMemory(
            str(error).splitlines()[0], shape, state_bytes, required, time.perf_counter() - start
        ) from None


def measure_step(run: PlannedRun, mesh: Mesh, shape: BatchShape) -> StepMeasure:
    """Compiles the train step of ``run`` on ``mesh`` for global batches of ``shape``; raises
    ``CompilerOutOfMemory`` where the compiler itself finds the program too large for the chip."""
    rules = run.train.sharding_rules
    batch = placed_batch(shape, mesh, rules)
    start = time.perf_counter()
    layout = build_layout(run.task, batch, run.train.optimizer, mesh, rules)
    step = CompiledStep(run.task, layout, run.train.optimizer, run.train.grad_accum_steps)
    state = layout.abstract
    params, optimizer = shard_bytes(state["params"]), shard_bytes(state["opt_state"])
    other = shard_bytes({k: v for k, v in state.items() if k not in ("params", "opt_state")})
    compiled = _compile(step.lowered(batch), shape, params + optimizer + other + shard_bytes(batch), start)
    seconds = time.perf_counter() - start
    stats = compiled.memory_analysis()
    trained, _ = optim.split_trainable(state["params"], layout.trainable)
    gradients = sum(math.prod(x.sharding.shard_shape(x.shape)) * 4 for x in jax.tree.leaves(trained))
    memory = Memory(
        params=params,
        optimizer=optimizer,
        other_state=other,
        batch=max(0, stats.argument_size_in_bytes - params - optimizer - other),
        gradients=min(gradients, stats.temp_size_in_bytes),
        activations=max(0, stats.temp_size_in_bytes - gradients),
        outputs_not_donated=max(0, stats.output_size_in_bytes - stats.alias_size_in_bytes),
        code=stats.generated_code_size_in_bytes,
    )
    analysis = compiled.cost_analysis() or {}
    if isinstance(analysis, (list, tuple)):
        analysis = analysis[0] if analysis else {}
    optimal = analysis.get("optimal_seconds")
    return StepMeasure(
        shape=shape,
        memory=memory,
        compiled_flops=float(analysis.get("flops", 0.0)),
        compiled_bytes=float(analysis.get("bytes accessed", 0.0)),
        optimal_seconds=None if optimal is None else float(optimal),
        program=program_facts(compiled.as_text()),
        compile_seconds=seconds,
    )
