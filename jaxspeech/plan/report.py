"""The plan as people read it: one table row per duration bucket, and what the figures are."""

from __future__ import annotations

from typing import Any, Mapping

from jaxspeech.plan.chips import GIB
from jaxspeech.plan.estimate import FRAMES_PER_SECOND
from jaxspeech.plan.mesh_choice import describe

COLUMNS = (
    "bucket",
    "batch",
    "params",
    "opt",
    "grads",
    "activ.",
    "other",
    "total/chip",
    "headroom",
    "TFLOP/step",
    "step est.",
    "MFU est.",
    "audio s/s/chip",
    "compile",
)


def _gib(n: float) -> str:
    return f"{n / GIB:.2f}"


def bucket_row(bucket: Mapping[str, Any], capacity: int) -> tuple[str, ...]:
    name = f"{bucket['frames'] / FRAMES_PER_SECOND:g} s x{bucket['clips']}, {bucket['tokens']} tok"
    if bucket.get("batch") is None:
        return (name, "-", *("" for _ in COLUMNS[2:-1]), "refused")
    m, e = bucket["memory_per_device"], bucket["estimate"]
    other = m["other_state"] + m["batch"] + m["outputs_not_donated"] + m["code"]
    source = "" if e["source"] == "compiler cost model" else "*"
    return (
        name,
        str(bucket["batch"]),
        _gib(m["params"]),
        _gib(m["optimizer"]),
        _gib(m["gradients"]),
        _gib(m["activations"]),
        _gib(other),
        _gib(m["total"]),
        f"{100 * (1 - m['total'] / capacity):.0f} %",
        f"{e['model_flops'] / 1e12:.1f}",
        f"{1000 * e['seconds']:.0f} ms{source}",
        f"{100 * e['mfu']:.0f} %{source}",
        f"{e['audio_seconds_per_second_per_device']:.0f}",
        f"{bucket['compile_seconds']:.0f} s",
    )


def _candidates(choice: Mapping[str, Any], shown: int = 5) -> list[str]:
    """The best estimated (mesh, remat) pairs and how many meshes the state alone ruled out."""
    lines = [
        f"  {describe(p['mesh']):<26} remat {p['remat']!r:<7} ~{p['batch']} rows, {_gib(p['bytes_per_device'])} "
        f"GiB/chip, est. MFU {100 * p['mfu']:.0f} %"
        for p in choice["predictions"][:shown]
    ]
    refused = [c for c in choice["candidates"] if c.get("refused")]
    if refused:
        lines.append(
            f"  {len(refused)} of {len(choice['candidates'])} meshes refused before compiling (the state "
            f"alone does not fit), e.g. {describe(refused[0]['mesh'])}: {refused[0]['refused']}"
        )
    return ["candidates (estimates from the probe compiles):", *lines] if lines else []


def format_plan(plan: Mapping[str, Any]) -> str:
    """The plan as text: header, the table, refusals, the decode step, notes, what the figures are."""
    capacity = plan["capacity_bytes_per_device"]
    mesh = " x ".join(f"{k} {v}" for k, v in plan["mesh"].items())
    lines = [
        f"plan for {plan['config']} on {plan['topology']}: {plan['devices']} x {plan['device_kind']} "
        f"({plan['hosts']} host(s)), {capacity / GIB:.0f} GiB HBM per chip, headroom {100 * plan['headroom']:.0f} %",
        f"mesh {mesh}; remat {plan['remat']!r}; vocabulary from {plan['vocabulary']}",
        f"why: {plan['mesh_choice']['why']}",
        *_candidates(plan["mesh_choice"]),
        "",
    ]
    rows = [COLUMNS] + [bucket_row(b, capacity) for b in plan["buckets"]]
    widths = [max(len(r[i]) for r in rows) for i in range(len(COLUMNS))]
    for r in rows:
        lines.append("  ".join(cell.rjust(w) if i else cell.ljust(w) for i, (cell, w) in enumerate(zip(r, widths))))
    lines.append(
        "memory in GiB per chip (params, optimizer state, gradients, activations and other "
        "temporaries, other = batch + small state + code), from the compiled program"
    )
    for b in plan["buckets"]:
        if b.get("refused"):
            lines.append(f"bucket {b['frames']} frames refused: {b['refused']}")
    estimates = [b["estimate"] for b in plan["buckets"] if b.get("estimate")]
    if any(e["source"] != "compiler cost model" for e in estimates):
        why = next(e["why"] for e in estimates if e["source"] != "compiler cost model")
        lines.append(
            f"* roofline estimate, not the compiler's cost model ({why}): the longest of compute at the "
            "chip's peak, HBM traffic and collectives, assumed to overlap (a lower bound on the step time)"
        )
    if estimates:
        lines.append(
            "MFU: model FLOPs (no rematerialisation) per chip over the published bf16 peak; "
            "audio s/s: padded bucket seconds per second per chip"
        )
    decode = plan.get("decode")
    if decode:
        if decode.get("error"):
            lines.append(f"decode step: not compiled ({decode['error']})")
        else:
            lines.append(
                f"decode step ({decode['method']}, batch {decode['batch']}, {decode['max_new_tokens']} new tokens): "
                f"{decode['total_bytes'] / GIB:.2f} GiB per chip, compiled in {decode['compile_seconds']:.0f} s"
            )
    lines += [f"note: {n}" for n in plan.get("notes", ())]
    lines.append(f"planned in {plan['planning_seconds']:.0f} s")
    return "\n".join(lines)
