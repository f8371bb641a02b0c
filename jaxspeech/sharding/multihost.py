"""Multi-process setup: ``jax.distributed.initialize`` when configured, and host batches -> global arrays.

Settings come from ``DistributedConfig`` or, where unset, from the environment:
``JAX_COORDINATOR_ADDRESS`` (host:port of process 0), ``JAX_NUM_PROCESSES``, ``JAX_PROCESS_ID``.
``cluster_detection=True`` lets JAX read them from the cluster instead (Cloud TPU, SLURM, Open MPI).
With none of these, training runs as one process and ``initialize`` does nothing.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from typing import Any, Mapping

import jax
import numpy as np

log = logging.getLogger(__name__)

ENV_COORDINATOR = "JAX_COORDINATOR_ADDRESS"
ENV_NUM_PROCESSES = "JAX_NUM_PROCESSES"
ENV_PROCESS_ID = "JAX_PROCESS_ID"


@dataclasses.dataclass(frozen=True)
class DistributedConfig:
    coordinator_address: str | None = None
    num_processes: int | None = None
    process_id: int | None = None
    cluster_detection: bool = False
    initialization_timeout_s: int = 300


def _env_int(environ: Mapping[str, str], name: str) -> int | None:
    value = environ.get(name)
    if value in (None, ""):
        return None
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"environment variable {name}={value!r} is not an integer") from None


def initialize_arguments(config: DistributedConfig, environ: Mapping[str, str] = os.environ) -> dict[str, Any] | None:
    """Keyword arguments for ``jax.distributed.initialize``, or None for a single process."""
    if config.cluster_detection:
        return {"initialization_timeout": config.initialization_timeout_s}
    address = config.coordinator_address or environ.get(ENV_COORDINATOR) or None
    count = config.num_processes if config.num_processes is not None else _env_int(environ, ENV_NUM_PROCESSES)
    process_id = config.process_id if config.process_id is not None else _env_int(environ, ENV_PROCESS_ID)
    if address is None and count in (None, 1) and process_id in (None, 0):
        return None
    missing = [
        name
        for name, value in (
            (f"coordinator_address / {ENV_COORDINATOR}", address),
            (f"num_processes / {ENV_NUM_PROCESSES}", count),
            (f"process_id / {ENV_PROCESS_ID}", process_id),
        )
        if value is None
    ]
    if missing:
        raise ValueError(f"multi-process training is partly configured; also set {', '.join(missing)}")
    if count < 1 or not 0 <= process_id < count:
        raise ValueError(f"need num_processes >= 1 and 0 <= process_id < num_processes, got {count} and {process_id}")
    if count == 1:
        return None
    return {
        "coordinator_address": address,
        "num_processes": count,
        "process_id": process_id,
        "initialization_timeout": config.initialization_timeout_s,
    }


def initialize(config: DistributedConfig = DistributedConfig(), environ: Mapping[str, str] = os.environ) -> bool:
    """Joins the multi-process job if one is configured; True if this is a multi-process run.

    Must run before anything touches a JAX device. Calling it again is harmless.
    """
    arguments = initialize_arguments(config, environ)
    if arguments is None:
        return False
    if jax.distributed.is_initialized():
        return True
    jax.distributed.initialize(**arguments)
    log.info(
        "process %d of %d joined the job (%d local devices, %d in all)",
        jax.process_index(),
        jax.process_count(),
        jax.local_device_count(),
        jax.device_count(),
    )
    return True


def to_global(local_batch: Any, shardings: Any) -> Any:
    """Per-process host batches (numpy, axis 0 = this process's examples) -> global ``jax.Array``s
    laid out by ``shardings`` (the global batch concatenates the processes' rows in process order;
    int64 becomes int32 unless x64 is on). On one process this is a sharded ``device_put``."""

    def one(sharding, x):
        x = np.asarray(x)
        return jax.make_array_from_process_local_data(
            sharding, x.astype(jax.dtypes.canonicalize_dtype(x.dtype), copy=False)
        )

    return jax.tree.map(one, shardings, local_batch)
