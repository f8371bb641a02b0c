"""Choosing a run's remat policy and each duration bucket's batch with few compiles.

Per-device memory of a compiled train step is close to affine in the global batch B:
total(B) = fixed + slope * B (the state, gradients and gathered weights do not grow with B; the
activations and the batch itself do). The search compiles, measures, fits and compiles again:

1. Remat: for each candidate policy in order of speed ("none", "dots", "full"), compile the
   longest bucket at the smallest batch (one row per batch shard) and predict the largest batch
   that fits (slope taken from that one point: conservative). The first policy whose predicted
   batch is large enough for the step's compute to cover its collectives wins; otherwise the one
   with the best estimated MFU.
2. Batch, longest bucket first: predict the largest batch under the budget from the line through
   the bucket's compiled points (with one point, the line through the longest bucket's fitted
   fixed part), compile it, and repeat while the prediction grows (at most ``MAX_COMPILES`` per
   bucket). The plan keeps the largest compiled batch that fits; every figure it reports comes
   from that compile. Batches are multiples of the batch shards (the data x fsdp mesh axes).

A bucket that does not fit even at one row per batch shard is refused with the numbers.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable, Sequence

from jax.sharding import Mesh

from jaxspeech.plan.chips import GIB, Chip
from jaxspeech.plan.estimate import StepEstimate, estimate_step
from jaxspeech.plan.flops import StepFlops, row_flops
from jaxspeech.plan.measure import CompilerOutOfMemory, StepMeasure, measure_step, placed_batch, shard_bytes
from jaxspeech.plan.parts import PlannedRun
from jaxspeech.sharding.mesh import make_mesh
from jaxspeech.train.state import build_layout
from jaxspeech.train.step import batch_shards
from jaxspeech.types import BatchShape

POLICIES = ("none", "dots", "full")
MAX_COMPILES = 3
MAX_ROWS_PER_DEVICE = 64  # a batch cap where memory allows more (larger batches change the optimisation)


@dataclasses.dataclass(frozen=True)
class BucketPlan:
    """The plan of one duration bucket: ``batch`` global rows (None when refused)."""

    frames: int
    tokens: int
    clips: int
    batch: int | None
    measure: StepMeasure | None
    estimate: StepEstimate | None
    compiles: tuple[tuple[int, int], ...]  # (batch, total bytes per device) of every compile
    refused: str | None = None


@dataclasses.dataclass(frozen=True)
class SearchResult:
    mesh: dict[str, int]
    remat: str
    buckets: tuple[BucketPlan, ...]
    notes: tuple[str, ...]


def _gib(n: float) -> str:
    return f"{n / GIB:.1f} GiB"


@dataclasses.dataclass(frozen=True)
class _Point:
    """One compile: the global batch, the bytes per device, and the measure (None where the compiler
    refused the program as too large for the chip: ``total`` is then a lower bound)."""

    batch: int
    total: float
    measure: StepMeasure | None


class _Search:
    def __init__(self, run: PlannedRun, mesh: Mesh, chip: Chip, headroom: float, max_rows_per_device: int,
                 log: Callable[[str], None]):
        self.run, self.mesh, self.chip, self.log = run, mesh, chip, log
        self.budget = chip.hbm_bytes * (1.0 - headroom)
        self.shards = batch_shards(mesh, run.train.sharding_rules)
        self.devices = mesh.size
        self.max_batch = max(1, max_rows_per_device * self.devices // self.shards) * self.shards
        self.notes: list[str] = []

    def shape(self, index: int, batch: int) -> BatchShape:
        p = self.run.pipeline
        return BatchShape(batch_size=batch, clips=p.clips_per_row[index], frames=p.bucket_frames[index],
                          tokens=p.max_tokens[index], n_mels=p.n_mels)

    def compile(self, run: PlannedRun, index: int, batch: int) -> _Point:
        self.log(f"compiling bucket {self.run.pipeline.bucket_frames[index]} frames at batch {batch} ...")
        try:
            measure = measure_step(run, self.mesh, self.shape(index, batch))
        except CompilerOutOfMemory as refused:
            self.log(f"  the compiler refused it: {refused} ({refused.seconds:.0f} s)")
            return _Point(batch, max(refused.total, self.budget + 1), None)
        self.log(f"  {_gib(measure.memory.total)} per device, {measure.compile_seconds:.0f} s")
        return _Point(batch, measure.memory.total, measure)

    def largest_fitting(self, fixed: float, slope: float) -> int:
        """The largest multiple of the batch shards, at most ``max_batch``, with fixed + slope * B
        within the budget (0: none)."""
        if slope <= 0:
            return self.max_batch
        fitting = int(max(0.0, (self.budget - fixed) / slope) // self.shards) * self.shards
        return min(fitting, self.max_batch)

    @staticmethod
    def one_point_line(measure: StepMeasure) -> tuple[float, float]:
        """(fixed, slope) assuming only activations and the batch grow with B: an upper bound on the slope."""
        growing = measure.memory.activations + measure.memory.batch
        return measure.memory.total - growing, growing / measure.shape.batch_size

    @staticmethod
    def rows_for_compute_to_cover_collectives(estimate: StepEstimate, batch: int) -> float:
        """The batch at which compute time reaches the (batch-independent) collective time."""
        if estimate.compute_seconds <= 0:
            return math.inf
        return batch * estimate.ici_seconds / estimate.compute_seconds

    def check_state(self, longest: int) -> None:
        """Refuses, before any compile, a run whose train state alone exceeds the budget."""
        batch = placed_batch(self.shape(longest, self.shards), self.mesh, self.run.train.sharding_rules)
        state = build_layout(self.run.task, batch, self.run.train.optimizer, self.mesh, self.run.train.sharding_rules).abstract
        params, optimizer = shard_bytes(state["params"]), shard_bytes(state["opt_state"])
        if params + optimizer > self.budget:
            raise PlanRefused(
                f"needs {_gib(params + optimizer)} per chip for the train state alone (parameters {_gib(params)}, "
                f"optimizer state {_gib(optimizer)}), {self.chip.generation} has {self.chip.hbm_bytes / GIB:.0f} GiB "
                f"(budget {_gib(self.budget)} with the headroom): use more chips, or train fewer parameters"
            )

    def choose_remat(self, policies: Sequence[str], longest: int) -> tuple[str, _Point, StepFlops]:
        best = None
        for policy in policies:
            run = self.run.with_remat(policy)
            probe = self.compile(run, longest, self.shards)
            if probe.measure is None or probe.total > self.budget:
                self.notes.append(f"remat {policy!r}: one row per batch shard of the longest bucket needs "
                                  f"{_gib(probe.total)} per device (budget {_gib(self.budget)})")
                continue
            flops = row_flops(run, self.shape(longest, 1), policy)
            batch = max(self.shards, self.largest_fitting(*self.one_point_line(probe.measure)))
            estimate = estimate_step(dataclasses.replace(probe.measure, shape=self.shape(longest, batch)), flops,
                                     self.chip, self.devices)
            self.log(f"remat {policy!r}: about {batch} rows fit, estimated MFU {100 * estimate.mfu:.0f} %")
            if best is None or estimate.mfu > best[0]:
                best = (estimate.mfu, policy, probe, flops)
            if batch >= self.rows_for_compute_to_cover_collectives(estimate, batch) or batch >= self.max_batch:
                break
        if best is None:
            raise PlanRefused(f"nothing fits on {self.chip.generation} ({self.chip.hbm_bytes / GIB:.0f} GiB per chip, "
                              f"budget {_gib(self.budget)}): {'; '.join(self.notes)}")
        return best[1], best[2], best[3]

    def _line(self, points: dict[int, _Point], fixed: float | None, slope_guess: float | None) -> tuple[float, float]:
        """(fixed, slope) of the memory line through this bucket's compiled points."""
        exact = sorted((b, p) for b, p in points.items() if p.measure is not None)
        if len(exact) >= 2:
            (b0, p0), (b1, p1) = exact[-2], exact[-1]
            slope = (p1.total - p0.total) / (b1 - b0)
            return p1.total - slope * b1, slope
        known = exact or sorted(points.items())
        if known:
            b1, p1 = known[-1]
            if p1.measure is not None and fixed is None:
                return self.one_point_line(p1.measure)
            base = fixed if fixed is not None and fixed < p1.total else 0.0
            return base, (p1.total - base) / b1
        return fixed or 0.0, slope_guess or 0.0

    def plan_bucket(self, run: PlannedRun, index: int, flops: StepFlops, first: _Point | None,
                    fixed: float | None, slope_guess: float | None) -> tuple[BucketPlan, float, float]:
        """(plan, fitted fixed part, fitted slope) of bucket ``index``."""
        points: dict[int, _Point] = {} if first is None else {first.batch: first}
        for _ in range(MAX_COMPILES):
            line = self._line(points, fixed, slope_guess)
            target = max(self.shards, self.largest_fitting(*line)) if line[1] else self.shards
            fitting = [b for b, p in points.items() if p.total <= self.budget]
            failing = [b for b, p in points.items() if p.total > self.budget]
            if fitting and target <= max(fitting):
                break
            if failing and target >= min(failing):
                target = max(fitting, default=0) + self.shards
                if target >= min(failing):
                    break
            if target in points:
                break
            points[target] = self.compile(run, index, target)
            if target == self.shards and points[target].total > self.budget:
                break
        fixed_fit, slope_fit = self._line(points, fixed, slope_guess)
        fitting = [b for b, p in points.items() if p.total <= self.budget]
        tried = tuple((b, int(p.total)) for b, p in sorted(points.items()))
        p = self.run.pipeline
        frames, tokens, clips = p.bucket_frames[index], p.max_tokens[index], p.clips_per_row[index]
        if not fitting:
            smallest = min(points)
            reason = (f"needs {_gib(points[smallest].total)} per chip at the smallest batch ({smallest} rows, one per "
                      f"batch shard), {self.chip.generation} has {self.chip.hbm_bytes / GIB:.0f} GiB "
                      f"(budget {_gib(self.budget)} with the headroom)")
            return BucketPlan(frames, tokens, clips, None, points[smallest].measure, None, tried, reason), fixed_fit, slope_fit
        batch = max(fitting)
        measure = points[batch].measure
        estimate = estimate_step(measure, flops, self.chip, self.devices)
        capped = " (the cap on rows per chip)" if batch == self.max_batch else ""
        if capped:
            self.notes.append(f"bucket {frames} frames: batch {batch} is the cap of rows per chip, not the memory limit")
        return BucketPlan(frames, tokens, clips, batch, measure, estimate, tried), fixed_fit, slope_fit


class PlanRefused(ValueError):
    """Nothing fits: the message says what was needed and what the chip has."""


def _row_weight(run: PlannedRun, index: int) -> float:
    """A rough per-row activation weight of bucket ``index`` (encoder positions x width x layers +
    decoder tokens x width x layers), used only to guess a bucket's first batch from another's."""
    p, stacks = run.pipeline, run.layer_stacks
    model = run.model
    if hasattr(model, "llm"):
        encoder = model.encoder.whisper if model.encoder.kind == "whisper" else model.encoder.conformer
        enc_width, dec_width = encoder.d_model, model.llm.hidden_size
    else:
        enc_width, dec_width = model.encoder.d_model, model.decoder.d_model
    return (p.clips_per_row[index] * p.bucket_frames[index] / 2 * enc_width * stacks["encoder"]
            + p.max_tokens[index] * dec_width * stacks["decoder"])


def search(run: PlannedRun, devices: Sequence, chip: Chip, *, headroom: float, mesh_shape: dict[str, int] | None = None,
           remat: str | None = None, buckets: Sequence[int] | None = None, max_rows_per_device: int = MAX_ROWS_PER_DEVICE,
           log: Callable[[str], None] = lambda _: None) -> SearchResult:
    """Chooses the remat policy and each bucket's batch of ``run`` on ``devices`` (see the module
    docstring). ``mesh_shape`` (default: the config's ``train.mesh``), ``remat`` (default: choose),
    ``buckets`` (frame lengths to plan; default all), ``max_rows_per_device`` caps batches."""
    mesh_shape = dict(mesh_shape or run.train.mesh)
    mesh = make_mesh(mesh_shape, devices)
    searcher = _Search(run, mesh, chip, headroom, max_rows_per_device, log)
    frames = run.pipeline.bucket_frames
    chosen = [i for i, f in enumerate(frames) if buckets is None or f in buckets]
    if not chosen:
        raise ValueError(f"none of the buckets {tuple(buckets or ())} is among the config's {frames}")
    order = sorted(chosen, key=lambda i: _row_weight(run, i), reverse=True)
    searcher.check_state(order[0])
    policy, probe, flops = searcher.choose_remat([remat] if remat else POLICIES, order[0])
    run = run.with_remat(policy)
    plans: dict[int, BucketPlan] = {}
    fixed = slope = None
    longest_weight = _row_weight(run, order[0])
    for rank, index in enumerate(order):
        guess = None if slope is None else slope * _row_weight(run, index) / longest_weight
        bucket_flops = flops if rank == 0 else row_flops(run, searcher.shape(index, 1), policy)
        plan, bucket_fixed, bucket_slope = searcher.plan_bucket(run, index, bucket_flops, probe if rank == 0 else None,
                                                             fixed, guess)
        if rank == 0:
            fixed, slope = bucket_fixed, bucket_slope
        plans[index] = plan
    return SearchResult({name: int(size) for name, size in mesh.shape.items()}, policy,
                        tuple(plans[i] for i in chosen), tuple(searcher.notes))
