"""From a config and a topology name to a plan (``plan_file.plan_record``)."""

from __future__ import annotations

import time
from typing import Callable, Sequence

from jaxspeech.plan.chips import chip_of, chips_in
from jaxspeech.plan.decode import plan_decode
from jaxspeech.plan.parts import planned_run
from jaxspeech.plan.plan_file import plan_record
from jaxspeech.plan.search import MAX_ROWS_PER_DEVICE, search
from jaxspeech.sharding.topology import host_count, tpu_topology


def make_plan(
    config,
    *,
    config_name: str,
    sets: Sequence[str],
    topology: str,
    headroom: float = 0.1,
    mesh: dict[str, int] | None = None,
    remat: str | None = None,
    buckets: Sequence[int] | None = None,
    max_rows_per_device: int = MAX_ROWS_PER_DEVICE,
    decode: bool = True,
    log: Callable[[str], None] = lambda _: None,
) -> dict:
    """The plan of ``config`` (a ConfigDict; ``config_name`` and ``sets`` are recorded) on TPU slice
    ``topology``; see ``search.search`` for ``mesh``, ``remat``, ``buckets`` and ``max_rows_per_device``."""
    start = time.perf_counter()
    if not 0.0 <= headroom < 1.0:
        raise ValueError(f"headroom must be in [0, 1), got {headroom}")
    devices = tpu_topology(topology).devices
    chip = chip_of(topology).per_device(len(devices) // chips_in(topology))
    hosts = host_count(devices)
    run = planned_run(config, len(devices) // hosts)
    result = search(
        run,
        devices,
        chip,
        headroom=headroom,
        mesh_shape=mesh,
        remat=remat,
        buckets=buckets,
        max_rows_per_device=max_rows_per_device,
        log=log,
    )
    decoded = plan_decode(run.with_remat(result.remat), result, devices, log) if decode else None
    return plan_record(
        config=config_name,
        sets=sets,
        topology=topology,
        device_kind=devices[0].device_kind,
        devices=len(devices),
        hosts=hosts,
        headroom=headroom,
        capacity=chip.hbm_bytes,
        run=run,
        result=result,
        decode=decoded,
        seconds=time.perf_counter() - start,
    )
