"""What a compiled program's text says that its cost analysis does not: how many bytes each device
sends through collectives in one call, loops counted as often as they run, and whether the
program holds custom calls (Pallas kernels) or loops, where the compiler's own time estimate
(``optimal_seconds``) does not hold.

Loops: a ``while`` whose condition compares its counter with a constant (``lax.scan`` over layers)
runs its body that many times; every computation a loop body calls (fusions, nested loops) is
counted as often. Bytes per device and call of a collective over groups of g devices, for a result
of R bytes: all-gather R (g-1)/g, reduce-scatter R (g-1), all-reduce 2 R (g-1)/g (a ring),
all-to-all R (g-1)/g, collective-permute R.
"""

from __future__ import annotations

import collections
import dataclasses
import math
import re

_COMPUTATION = re.compile(r"^(?:ENTRY )?%([\w.\-]+) \(")
_CALLEES = re.compile(
    r"\b(calls|body|condition|to_apply|branch_computations|called_computations)=(\{[^}]*\}|%[\w.\-]+)"
)
_COLLECTIVE = re.compile(
    r"= (.+?) (all-gather|all-gather-done|reduce-scatter|all-reduce|all-reduce-done|all-to-all|collective-permute|"
    r"collective-permute-done)\("
)
_SHAPE = re.compile(
    r"\b(pred|s4|u4|s8|u8|s16|u16|s32|u32|s64|u64|f16|bf16|f32|f64|c64|c128|f8e4m3fn|f8e5m2)\[([\d,]*)\]"
)
_ITEMSIZE = {
    "pred": 1,
    "s4": 0.5,
    "u4": 0.5,
    "s8": 1,
    "u8": 1,
    "s16": 2,
    "u16": 2,
    "s32": 4,
    "u32": 4,
    "s64": 8,
    "u64": 8,
    "f16": 2,
    "bf16": 2,
    "f32": 4,
    "f64": 8,
    "c64": 8,
    "c128": 16,
    "f8e4m3fn": 1,
    "f8e5m2": 1,
}
# Custom calls that are user kernels (Mosaic on TPU, Triton or Mosaic on GPU), not compiler internals.
KERNEL_TARGETS = ("tpu_custom_call", "__gpu$xla.gpu.triton", "mosaic_gpu")
_TRIP = re.compile(r"compare\(%[\w.\-]+, %([\w.\-]+)\), direction=LT")
_CONSTANT = re.compile(r"%([\w.\-]+) = s32\[\][^=]* constant\((\d+)\)")
_GROUPS_IOTA = re.compile(r"replica_groups=\[(\d+),(\d+)\]")
_GROUPS_MESH = re.compile(r"replica_groups=mesh\[([^\]]*)\] \{([^}]*)\}")
_GROUPS_LIST = re.compile(r"replica_groups=\{\{([\d,]*)\}")


@dataclasses.dataclass(frozen=True)
class ProgramFacts:
    collective_bytes: float  # per device and call, loops counted
    custom_calls: int
    loops: int


def _bytes(shape_text: str) -> float:
    """Bytes of every array shape in ``shape_text`` (a result type, possibly a tuple)."""
    total = 0.0
    for dtype, dims in _SHAPE.findall(shape_text):
        total += _ITEMSIZE[dtype] * math.prod(int(d) for d in dims.split(",") if d)
    return total


def _group_size(line: str) -> int:
    if match := _GROUPS_IOTA.search(line):
        return int(match.group(2))
    if match := _GROUPS_MESH.search(line):
        sizes = dict(re.findall(r"'(\w+)'=(\d+)", match.group(1)))
        return math.prod(int(sizes[name]) for name in re.findall(r"'(\w+)'", match.group(2)))
    if match := _GROUPS_LIST.search(line):
        return len(match.group(1).split(","))
    return 1


def _per_device(kind: str, result_bytes: float, group: int) -> float:
    if group <= 1:
        return 0.0
    share = (group - 1) / group
    return {
        "all-gather": result_bytes * share,
        "reduce-scatter": result_bytes * (group - 1),
        "all-reduce": 2 * result_bytes * share,
        "all-to-all": result_bytes * share,
        "collective-permute": result_bytes,
    }[kind.removesuffix("-done")]


def _computations(text: str) -> dict[str, list[str]]:
    bodies, name, entry = {}, None, None
    for line in text.splitlines():
        if match := _COMPUTATION.match(line):
            name = match.group(1)
            bodies[name] = []
            if line.startswith("ENTRY"):
                entry = name
        elif line.startswith("}"):
            name = None
        elif name is not None:
            bodies[name].append(line)
    bodies["__entry__"] = [entry] if entry else []
    return bodies


def _trip_count(condition: list[str]) -> int:
    constants = {name: int(value) for line in condition for name, value in _CONSTANT.findall(line)}
    for line in condition:
        if (match := _TRIP.search(line)) and match.group(1) in constants:
            return constants[match.group(1)]
    return 1  # an unknown bound: counted once, as the cost analysis does


def program_facts(text: str) -> ProgramFacts:
    """``ProgramFacts`` of a compiled program's text (``compiled.as_text()``)."""
    bodies = _computations(text)
    entry = bodies.pop("__entry__")
    runs: dict[str, float] = collections.defaultdict(float)
    order, seen = [], set()

    def visit(name: str, times: float):
        runs[name] += times
        if name not in seen:
            seen.add(name)
            order.append(name)
        for line in bodies.get(name, ()):
            callees = {kind: re.findall(r"%?([\w.\-]+)", names) for kind, names in _CALLEES.findall(line)}
            trips = _trip_count(bodies.get(callees["condition"][0], ())) if "condition" in callees else 1
            for kind, names in callees.items():
                for callee in names:
                    if callee in bodies:
                        visit(callee, times * (trips if kind == "body" else 1))

    for name in entry:
        visit(name, 1.0)
    moved = 0.0
    custom_calls = loops = 0
    for name in order:
        for line in bodies[name]:
            custom_calls += any(f'custom_call_target="{target}' in line for target in KERNEL_TARGETS)
            loops += " while(" in line
            if match := _COLLECTIVE.search(line):
                moved += runs[name] * _per_device(match.group(2), _bytes(match.group(1)), _group_size(line))
    return ProgramFacts(collective_bytes=moved, custom_calls=custom_calls, loops=loops)
