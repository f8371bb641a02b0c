"""``plan.json``: what ``jaxspeech plan`` chose, and how ``jaxspeech train --plan`` applies it.

The file holds the figures of every planned bucket (for people) and ``settings``: the config keys
the plan decides, as ``--set`` would give them (for the trainer): the mesh, each layer stack's remat
policy, the planned buckets and their rows per host batch. ``apply_plan`` sets them on a config;
``check_devices`` refuses a run on other devices than the planned slice (other chips, another
count, another number of hosts), where the planned batches may not fit.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Mapping, Sequence

from jaxspeech import paths
from jaxspeech.config_dict import override, plain
from jaxspeech.errors import UsageError
from jaxspeech.plan.measure import Memory
from jaxspeech.plan.parts import WHISPER, PlannedRun
from jaxspeech.plan.search import SearchResult

VERSION = 1


def settings(run: PlannedRun, result: SearchResult, hosts: int) -> dict[str, Any]:
    """The config keys the plan decides (see the module docstring), for the planned buckets only."""
    planned = [b for b in result.buckets if b.batch is not None]
    values: dict[str, Any] = {"train.mesh": dict(result.mesh)}
    if run.recipe == WHISPER:
        values["model.remat_policy"] = result.remat
    else:
        values[f"model.encoder.{run.model.encoder.kind}.remat_policy"] = result.remat
        values["model.llm.remat_policy"] = result.remat
    values["data.pipeline.bucket_frames"] = [b.frames for b in planned]
    values["data.pipeline.max_tokens"] = [b.tokens for b in planned]
    values["data.pipeline.clips_per_row"] = [b.clips for b in planned]
    values["data.pipeline.bucket_rows"] = [b.batch // hosts for b in planned]
    return values


def _memory(memory: Memory) -> dict[str, int]:
    return {**dataclasses.asdict(memory), "total": memory.total}


def _mesh_choice(result: SearchResult) -> dict[str, Any]:
    """Why the mesh and remat policy won, every candidate's state and traffic, and the estimates compared."""
    return {
        "why": result.why,
        "candidates": [
            {
                "mesh": c.shape,
                "state_bytes_per_device": c.state,
                "params_bytes": c.params,
                "optimizer_bytes": c.optimizer,
                "gradient_bytes": c.gradients,
                "weight_traffic_bytes_per_step": c.traffic,
                **({"refused": c.refused} if c.refused else {}),
            }
            for c in result.candidates
        ],
        "predictions": [
            {
                "mesh": p.cost.shape,
                "remat": p.policy,
                "batch": p.batch,
                "bytes_per_device": p.total,
                "step_seconds": p.step_seconds,
                "mfu": p.mfu,
            }
            for p in result.predictions
        ],
    }


def plan_record(
    *,
    config: str,
    sets: Sequence[str],
    topology: str,
    device_kind: str,
    devices: int,
    hosts: int,
    headroom: float,
    capacity: int,
    run: PlannedRun,
    result: SearchResult,
    decode: Mapping | None,
    seconds: float,
) -> dict[str, Any]:
    """The JSON-ready plan."""
    buckets = []
    for b in result.buckets:
        entry = {
            "frames": b.frames,
            "tokens": b.tokens,
            "clips": b.clips,
            "batch": b.batch,
            "compiles": [{"batch": batch, "bytes_per_device": total} for batch, total in b.compiles],
        }
        if b.measure is not None:
            entry["memory_per_device"] = _memory(b.measure.memory)
            entry["compile_seconds"] = b.measure.compile_seconds
        if b.estimate is not None:
            entry["estimate"] = dataclasses.asdict(b.estimate)
        if b.refused:
            entry["refused"] = b.refused
        buckets.append(entry)
    return {
        "version": VERSION,
        "config": config,
        "sets": list(sets),
        "topology": topology,
        "device_kind": device_kind,
        "devices": devices,
        "hosts": hosts,
        "capacity_bytes_per_device": capacity,
        "headroom": headroom,
        "mesh": result.mesh,
        "remat": result.remat,
        "mesh_choice": _mesh_choice(result),
        "vocabulary": run.vocabulary,
        "buckets": buckets,
        "decode": decode,
        "notes": list(result.notes),
        "planning_seconds": seconds,
        "settings": settings(run, result, hosts) if any(b.batch for b in result.buckets) else {},
    }


def write_plan(plan: Mapping[str, Any], path: str) -> None:
    """Writes ``plan`` to ``path``, a local file or a bucket object (``gs://...``)."""
    path = paths.absolute(path)
    paths.make_dirs(os.path.dirname(path))
    paths.write_whole(path, json.dumps(plain(plan), indent=2))


def read_plan(path: str) -> dict[str, Any]:
    """The plan at ``path`` (local or ``gs://...``), checked to be one that trains something."""
    try:
        plan = json.loads(paths.read_text(path))
    except (OSError, json.JSONDecodeError) as error:
        raise UsageError(path, f"cannot be read as a plan ({error})") from error
    if not isinstance(plan, dict) or plan.get("version") != VERSION or "settings" not in plan:
        raise UsageError(path, f"is not a jaxspeech plan (version {VERSION}, written by jaxspeech plan)")
    if not plan["settings"]:
        refused = "; ".join(b.get("refused", "") for b in plan.get("buckets", ()))
        raise UsageError(path, f"plans nothing that fits ({refused}): there is nothing to train with")
    return plan


def apply_plan(config, plan: Mapping[str, Any]) -> None:
    """Sets the plan's ``settings`` on ``config`` (a ConfigDict), as ``--set`` would."""
    for key, value in plan["settings"].items():
        override(config, key, tuple(value) if isinstance(value, list) else value)


def check_devices(plan: Mapping[str, Any], devices: Sequence, process_count: int) -> None:
    """Raises unless ``devices`` (all of the job's) are the planned slice's kind, count and hosts."""
    kinds = sorted({d.device_kind for d in devices})
    found = (kinds, len(devices), process_count)
    wanted = ([plan["device_kind"]], plan["devices"], plan["hosts"])
    if found != wanted:
        raise ValueError(
            f"the plan was made for {plan['topology']} ({plan['devices']} x {plan['device_kind']}, {plan['hosts']} "
            f"host(s)); this job has {len(devices)} x {', '.join(kinds)} on {process_count} host(s): its batches "
            "may not fit here (plan again for these devices, or train without --plan)"
        )
