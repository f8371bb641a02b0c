"""Choosing a run's mesh, remat policy and each duration bucket's batch with few compiles.

Per-device memory of a compiled train step is close to affine in the global batch B:
total(B) = fixed + slope * B (the state, gradients and gathered weights do not grow with B; the
activations and the batch itself do). The search prunes without compiling, then compiles,
measures, fits and compiles again:

1. Mesh candidates (``mesh_choice``): every (data, fsdp, tensor) split of the slice, with the
   train state's bytes per chip and the weight traffic per step from shapes and shardings alone;
   a candidate whose state does not fit is refused before any compile.
2. Remat and mesh: for each policy in order of speed ("none", "dots", "full"), compile the
   longest bucket at one row per batch shard on the fitting candidate with the least state, fit
   the bytes per row (slope from that one point: conservative), and predict for every candidate
   of that tensor size the largest batch that fits and its estimated MFU. The first policy whose
   best candidate is compute-bound or at the cap of rows per chip stops the probing (more remat
   only adds compute); the best estimated MFU of all predictions wins. Tensor sizes above 1 are
   probed only when no row fits without them.
3. Batch, longest bucket first, on the chosen mesh: predict the largest batch under the budget
   from the line through the bucket's compiled points (with one point, the line through the
   predicted fixed part), compile it, and repeat while the prediction grows (at most
   ``MAX_COMPILES`` per bucket). The plan keeps the largest compiled batch that fits; every
   figure it reports comes from that compile. Batches are multiples of the batch shards (the data
   x fsdp mesh axes).

A bucket that does not fit even at one row per batch shard is refused with the numbers.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Sequence

from jax.sharding import Mesh

from jaxspeech.plan.chips import GIB, Chip
from jaxspeech.plan.estimate import StepEstimate, estimate_step
from jaxspeech.plan.flops import StepFlops, row_flops
from jaxspeech.plan.measure import CompilerOutOfMemory, StepMeasure, measure_step
from jaxspeech.plan.mesh_choice import (
    MeshCost,
    Prediction,
    Probe,
    describe,
    explain,
    mesh_cost,
    mesh_shapes,
    predict,
    refuse_oversized,
)
from jaxspeech.plan.parts import PlannedRun
from jaxspeech.sharding.mesh import make_mesh
from jaxspeech.sharding.topology import host_count
from jaxspeech.train.state import build_layout
from jaxspeech.train.step import batch_shards
from jaxspeech.types import Batch, BatchShape

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
    why: str  # why this mesh and remat policy won
    candidates: tuple[MeshCost, ...]  # every mesh considered (refused ones say why)
    predictions: tuple[Prediction, ...]  # the (mesh, remat) pairs that were estimated, best first


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
    """Compiles and batch search on one mesh; ``notes`` is shared by the searches of a plan."""

    def __init__(
        self,
        run: PlannedRun,
        mesh: Mesh,
        chip: Chip,
        budget: float,
        max_rows_per_device: int,
        log: Callable[[str], None],
        notes: list[str],
    ):
        self.run, self.mesh, self.chip, self.budget, self.log, self.notes = run, mesh, chip, budget, log, notes
        self.shards = batch_shards(mesh, run.train.sharding_rules)
        self.devices = mesh.size
        self.max_batch = max(1, max_rows_per_device * self.devices // self.shards) * self.shards

    def shape(self, index: int, batch: int) -> BatchShape:
        p = self.run.pipeline
        return BatchShape(
            batch_size=batch,
            clips=p.clips_per_row[index],
            frames=p.bucket_frames[index],
            tokens=p.max_tokens[index],
            n_mels=p.n_mels,
        )

    def compile(self, run: PlannedRun, index: int, batch: int) -> _Point:
        self.log(
            f"compiling bucket {self.run.pipeline.bucket_frames[index]} frames at batch {batch} on "
            f"{describe(dict(self.mesh.shape))} ..."
        )
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

    def plan_bucket(
        self,
        run: PlannedRun,
        index: int,
        flops: StepFlops,
        first: _Point | None,
        fixed: float | None,
        slope_guess: float | None,
    ) -> tuple[BucketPlan, float, float]:
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
            reason = (
                f"needs {_gib(points[smallest].total)} per chip at the smallest batch ({smallest} rows, one per "
                f"batch shard), {self.chip.generation} has {self.chip.hbm_bytes / GIB:.0f} GiB "
                f"(budget {_gib(self.budget)} with the headroom)"
            )
            return (
                BucketPlan(frames, tokens, clips, None, points[smallest].measure, None, tried, reason),
                fixed_fit,
                slope_fit,
            )
        batch = max(fitting)
        measure = points[batch].measure
        estimate = estimate_step(measure, flops, self.chip, self.devices)
        capped = " (the cap on rows per chip)" if batch == self.max_batch else ""
        if capped:
            self.notes.append(
                f"bucket {frames} frames: batch {batch} is the cap of rows per chip, not the memory limit"
            )
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
    return (
        p.clips_per_row[index] * p.bucket_frames[index] / 2 * enc_width * stacks["encoder"]
        + p.max_tokens[index] * dec_width * stacks["decoder"]
    )


@dataclasses.dataclass(frozen=True)
class _Choice:
    """The winning (mesh, remat) and what the search needs from the probing."""

    best: Prediction
    ranked: tuple[Prediction, ...]
    probe: Probe  # of the winning policy and tensor size
    point: _Point | None  # the probe compile, when it ran on the chosen mesh


def _choose(
    run: PlannedRun,
    costs: Sequence[MeshCost],
    devices: Sequence,
    chip: Chip,
    budget: float,
    policies: Sequence[str],
    longest: int,
    max_rows_per_device: int,
    log: Callable[[str], None],
    notes: list[str],
) -> _Choice:
    """Probes remat policies on the least-state candidate of each tensor size (see the module
    docstring, step 2) and returns the best prediction."""
    ranked: list[Prediction] = []
    probes: dict[tuple[str, int], tuple[Probe, _Point, MeshCost]] = {}
    for tensor in sorted({c.tensor for c in costs if not c.refused}):
        group = [c for c in costs if not c.refused and c.tensor == tensor]
        least = min(group, key=lambda c: c.state)
        searcher = _Search(run, make_mesh(least.shape, devices), chip, budget, max_rows_per_device, log, notes)
        for policy in policies:
            policy_run = run.with_remat(policy)
            point = searcher.compile(policy_run, longest, searcher.shards)
            if point.measure is None or point.total > budget:
                notes.append(
                    f"{describe(least.shape)}, remat {policy!r}: one row per batch shard of the longest "
                    f"bucket needs {_gib(point.total)} per chip (budget {_gib(budget)})"
                )
                continue
            flops = row_flops(policy_run, searcher.shape(longest, 1), policy)
            fixed, slope = _Search.one_point_line(point.measure)
            hbm = estimate_step(point.measure, flops, chip, len(devices)).hbm_seconds / point.batch
            probe = Probe(policy, fixed - least.state, slope, hbm, flops)
            predictions = [predict(c, probe, chip, budget, len(devices), searcher.max_batch) for c in group]
            for p in sorted(predictions, key=lambda p: -p.mfu)[:3]:
                log(
                    f"  {describe(p.cost.shape)}, remat {policy!r}: about {p.batch} rows fit, estimated MFU "
                    f"{100 * p.mfu:.0f} %"
                )
            ranked += predictions
            probes[(policy, tensor)] = (probe, point, least)
            best = max(predictions, key=lambda p: p.mfu)
            if best.batch >= searcher.max_batch or best.compute_seconds >= best.step_seconds:
                break  # more remat only adds compute
        if any(p.batch for p in ranked):
            break  # a larger tensor size is tried only when no row fits without it
    ranked = sorted((p for p in ranked if p.batch), key=lambda p: (-p.mfu, p.cost.traffic))
    if not ranked:
        least = min((c for c in costs if not c.refused), key=lambda c: c.state)
        raise PlanRefused(
            f"nothing fits on {chip.generation} ({chip.hbm_bytes / GIB:.0f} GiB per chip, budget "
            f"{_gib(budget)}), even on {describe(least.shape)} with one row per batch shard: "
            f"{'; '.join(notes)}"
        )
    best = ranked[0]
    probe, point, probed = probes[(best.policy, best.cost.tensor)]
    return _Choice(best, tuple(ranked), probe, point if probed is best.cost else None)


def search(
    run: PlannedRun,
    devices: Sequence,
    chip: Chip,
    *,
    headroom: float,
    mesh_shape: dict[str, int] | None = None,
    remat: str | None = None,
    buckets: Sequence[int] | None = None,
    max_rows_per_device: int = MAX_ROWS_PER_DEVICE,
    log: Callable[[str], None] = lambda _: None,
) -> SearchResult:
    """Chooses the mesh, the remat policy and each bucket's batch of ``run`` on ``devices`` (see
    the module docstring). ``mesh_shape`` and ``remat`` fix those choices; ``buckets`` (frame
    lengths to plan; default all); ``max_rows_per_device`` caps batches."""
    frames = run.pipeline.bucket_frames
    chosen = [i for i, f in enumerate(frames) if buckets is None or f in buckets]
    if not chosen:
        raise ValueError(f"none of the buckets {tuple(buckets or ())} is among the config's {frames}")
    order = sorted(chosen, key=lambda i: _row_weight(run, i), reverse=True)
    budget = chip.hbm_bytes * (1.0 - headroom)
    notes: list[str] = []
    p = run.pipeline
    one_row = BatchShape(1, p.clips_per_row[order[0]], frames[order[0]], p.max_tokens[order[0]], p.n_mels)
    shapes = (
        [dict(make_mesh(mesh_shape, devices).shape)]
        if mesh_shape
        else mesh_shapes(len(devices), host_count(devices), run.attention_heads)
    )
    log(f"laying out the train state on {len(shapes)} candidate mesh(es) ...")
    layout = build_layout(
        run.task, Batch.abstract(one_row), run.train.optimizer, make_mesh(shapes[0], devices), run.train.sharding_rules
    )
    costs = refuse_oversized([mesh_cost(layout.on_mesh(make_mesh(s, devices))) for s in shapes], budget, chip)
    if all(c.refused for c in costs):
        least = min(costs, key=lambda c: c.state)
        raise PlanRefused(
            f"{least.refused}, even on {describe(least.shape)}: use more chips, or train fewer parameters"
        )
    choice = _choose(
        run, costs, devices, chip, budget, [remat] if remat else POLICIES, order[0], max_rows_per_device, log, notes
    )
    policy, run = choice.best.policy, run.with_remat(choice.best.policy)
    searcher = _Search(run, make_mesh(choice.best.cost.shape, devices), chip, budget, max_rows_per_device, log, notes)
    plans: dict[int, BucketPlan] = {}
    fixed, slope = choice.best.cost.state + choice.probe.other, choice.probe.slope
    longest_weight = _row_weight(run, order[0])
    for rank, index in enumerate(order):
        guess = slope * _row_weight(run, index) / longest_weight
        bucket_flops = choice.probe.flops if rank == 0 else row_flops(run, searcher.shape(index, 1), policy)
        plan, bucket_fixed, bucket_slope = searcher.plan_bucket(
            run, index, bucket_flops, choice.point if rank == 0 else None, fixed, guess
        )
        if rank == 0:
            fixed, slope = bucket_fixed, bucket_slope
        plans[index] = plan
    return SearchResult(
        dict(choice.best.cost.shape),
        policy,
        tuple(plans[i] for i in chosen),
        tuple(notes),
        explain(choice.best, choice.ranked, costs, run.attention_heads),
        tuple(costs),
        choice.ranked,
    )
