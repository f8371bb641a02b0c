"""The meshes a plan may train on, what each costs per chip without compiling, and which one wins.

A slice of N devices splits into (data, fsdp, tensor) with d * f * t = N. The train state's layout
on each candidate (``StateLayout.on_mesh``: no tracing, no compiling) gives per chip:

* the state: parameters, optimizer state and the trained parameters' float32 gradients, each leaf's
  shard (a mesh axis that does not divide a dimension leaves it whole, ``logical_to_spec``);
* the weight traffic of one step: every weight split over batch axes (fsdp) is gathered twice,
  forward and backward ((g - 1) shards of it arrive), and the gradients of trained weights are
  reduce-scattered over those axes and all-reduced over the replicas (2 (r - 1) / r of a shard).

A candidate whose state exceeds the budget is refused with the numbers. A tensor axis must divide
every attention's query and key/value heads (the kernels split heads, never a head's dimensions)
and stay within a host.

Activations are what only a compile tells. ``search.py`` compiles the candidate with the least
state once per remat policy (one row per chip of the longest bucket), reads the bytes per row, and
``predict`` carries them to every candidate of the same tensor size (rows per chip, and so
activations per chip, do not depend on how the rest of the slice splits into data and fsdp): the
largest batch that fits, and a step time, the longest of compute (FLOPs at the chip's peak), HBM
traffic (the probe's, per row) and weight traffic (at the chip's ICI bandwidth). The best estimated MFU wins; ``explain`` says why.
Tensor parallelism is tried only when one row per chip does not fit: it splits a row's
activations over t chips, and its per-layer activation all-reduces are not in this model.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Sequence

import jax

from jaxspeech.data.global_batch import batch_mesh_axes
from jaxspeech.layers import axes
from jaxspeech.plan.chips import GIB, Chip
from jaxspeech.plan.flops import StepFlops
from jaxspeech.train import optim
from jaxspeech.train.state import StateLayout

DATA, FSDP, TENSOR = axes.MESH_AXES


@dataclasses.dataclass(frozen=True)
class MeshCost:
    """Per-chip bytes of the train state on one mesh, and its weight traffic per step."""

    shape: dict[str, int]  # {"data": d, "fsdp": f, "tensor": t}
    params: int
    optimizer: int
    gradients: int
    traffic: float
    refused: str | None = None

    @property
    def state(self) -> int:
        return self.params + self.optimizer + self.gradients

    @property
    def tensor(self) -> int:
        return self.shape[TENSOR]


@dataclasses.dataclass(frozen=True)
class Probe:
    """What one compile of a remat policy (one row per batch shard) tells about every mesh of its
    tensor size."""

    policy: str
    other: float  # bytes per chip that are neither state nor per row
    slope: float  # bytes per chip per global row
    hbm_seconds_per_row: float  # HBM traffic time per global row (all of the probe's traffic counted as per row)
    flops: StepFlops  # per row


@dataclasses.dataclass(frozen=True)
class Prediction:
    """A candidate mesh with a remat policy: the predicted largest global batch and its estimates."""

    cost: MeshCost
    policy: str
    batch: int  # global rows (0: not even one row per batch shard fits)
    total: float  # predicted bytes per chip at ``batch``
    compute_seconds: float
    step_seconds: float
    mfu: float


def describe(shape: dict[str, int]) -> str:
    """ "fsdp 16 x data 4" (axes of size 1 left out)."""
    parts = [f"{name} {shape[name]}" for name in (FSDP, TENSOR, DATA) if shape.get(name, 1) > 1]
    return " x ".join(parts) or "one device"


def _gib(n: float) -> str:
    return f"{n / GIB:.1f} GiB"


def mesh_shapes(devices: int, hosts: int, heads: Sequence[int]) -> list[dict[str, int]]:
    """Every (data, fsdp, tensor) split of ``devices`` with a tensor size that divides every count
    in ``heads`` and the devices of one host."""
    divisors = lambda n: [k for k in range(1, n + 1) if n % k == 0]
    per_host = devices // hosts
    tensors = [t for t in divisors(per_host) if all(h % t == 0 for h in heads)]
    return [{DATA: devices // (t * f), FSDP: f, TENSOR: t} for t in tensors for f in divisors(devices // t)]


def _split_axes(sharding) -> set[str]:
    names: set[str] = set()
    for entry in sharding.spec:
        names.update(() if entry is None else (entry,) if isinstance(entry, str) else entry)
    return names


def _leaf_bytes(leaf) -> int:
    return math.prod(leaf.sharding.shard_shape(leaf.shape)) * jax.numpy.dtype(leaf.dtype).itemsize


def mesh_cost(layout: StateLayout) -> MeshCost:
    """The ``MeshCost`` of ``layout`` (the train state laid out on its mesh)."""
    mesh, state = layout.mesh, layout.abstract
    batch_axes = [a for a in batch_mesh_axes(layout.rules) if a in mesh.shape]
    params = sum(_leaf_bytes(x) for x in jax.tree.leaves(state["params"]))
    optimizer = sum(_leaf_bytes(x) for x in jax.tree.leaves(state["opt_state"]))
    trained, _ = optim.split_trainable(state["params"], layout.trainable)
    trained_ids = {id(x) for x in jax.tree.leaves(trained)}
    gradients = traffic = 0.0
    for leaf in jax.tree.leaves(state["params"]):
        local, split = _leaf_bytes(leaf), _split_axes(leaf.sharding)
        gathered = math.prod(mesh.shape[a] for a in batch_axes if a in split)
        traffic += 2 * local * (gathered - 1)
        if id(leaf) in trained_ids:
            grad = local * 4 // jax.numpy.dtype(leaf.dtype).itemsize  # float32 gradients
            replicas = math.prod(mesh.shape[a] for a in batch_axes if a not in split)
            gradients += grad
            traffic += grad * (gathered - 1) + 2 * grad * (replicas - 1) / replicas
    return MeshCost({name: int(size) for name, size in mesh.shape.items()}, params, optimizer, int(gradients), traffic)


def refuse_oversized(costs: Sequence[MeshCost], budget: float, chip: Chip) -> list[MeshCost]:
    """``costs`` with those whose state alone exceeds ``budget`` refused, with the numbers."""

    def check(cost: MeshCost) -> MeshCost:
        if cost.state <= budget:
            return cost
        why = (
            f"the train state alone needs {_gib(cost.state)} per chip (parameters {_gib(cost.params)}, optimizer "
            f"state {_gib(cost.optimizer)}, gradients {_gib(cost.gradients)}); {chip.generation} has "
            f"{chip.hbm_bytes / GIB:.0f} GiB (budget {_gib(budget)} with the headroom)"
        )
        return dataclasses.replace(cost, refused=why)

    return [check(c) for c in costs]


def predict(cost: MeshCost, probe: Probe, chip: Chip, budget: float, devices: int, max_batch: int) -> Prediction:
    """The largest global batch on ``cost``'s mesh with state + ``probe.other`` + ``probe.slope`` * B
    within ``budget``, and its estimated step: the longest of compute (FLOPs at the chip's peak),
    HBM traffic and weight traffic (at the chip's ICI bandwidth), as if they overlapped."""
    shards = devices // cost.tensor
    room = budget - cost.state - probe.other
    if room < probe.slope * shards:
        batch = 0
    else:
        batch = max_batch if probe.slope <= 0 else min(max_batch, int(room / probe.slope // shards) * shards)
    compute = batch * probe.flops.hardware / devices / chip.peak_flops
    step = max(compute, batch * probe.hbm_seconds_per_row, cost.traffic / chip.ici_bandwidth)
    mfu = batch * probe.flops.model / devices / (step * chip.peak_flops) if batch and step > 0 else 0.0
    return Prediction(cost, probe.policy, batch, cost.state + probe.other + probe.slope * batch, compute, step, mfu)


def explain(chosen: Prediction, ranked: Sequence[Prediction], costs: Sequence[MeshCost], heads: Sequence[int]) -> str:
    """Why ``chosen`` won: which simpler meshes could not hold the state or a row, and the runner-up."""
    reasons = []
    data_only = next((c for c in costs if c.shape[FSDP] == 1 and c.tensor == 1), None)
    if data_only is not None and data_only.refused:
        reasons.append(f"the state does not fit with data parallelism alone ({data_only.refused})")
    elif data_only is not None and chosen.cost is data_only:
        reasons.append(
            f"the whole train state fits on every chip ({_gib(data_only.state)}): data parallelism gathers no weights"
        )
    if chosen.cost.tensor > 1:
        reasons.append(
            f"one row per chip does not fit without splitting its activations; tensor {chosen.cost.tensor} "
            f"divides every attention's heads {sorted(set(heads))}"
        )
    elif chosen.cost.shape[FSDP] > 1:
        reasons.append(f"FSDP over {chosen.cost.shape[FSDP]} chips leaves {_gib(chosen.cost.state)} of state per chip")
    summary = (
        f"{describe(chosen.cost.shape)} with remat {chosen.policy!r}: about {chosen.batch} rows per step, "
        f"{_gib(chosen.total)} per chip, estimated MFU {100 * chosen.mfu:.0f} % (weight traffic "
        f"{chosen.cost.traffic / 1e9:.1f} GB per chip and step)"
    )
    others = [p for p in ranked if p is not chosen and p.batch]
    if others:
        best = others[0]
        summary += (
            f"; next best {describe(best.cost.shape)} with remat {best.policy!r}: {best.batch} rows, "
            f"{100 * best.mfu:.0f} %"
        )
    return "; ".join(reasons + [summary])
