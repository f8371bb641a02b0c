"""Host-local numpy ``Batch`` -> global ``jax.Array``s sharded over the mesh's batch axes.

Each host contributes its rows; the global batch is the concatenation over processes in process
order (``jax.make_array_from_process_local_data``). The batch axes are those the logical axis
``act_batch`` maps to under the sharding rules, so data and activations agree on the layout.
"""

from __future__ import annotations

import math

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from jaxspeech.layers import axes
from jaxspeech.types import Batch


def batch_mesh_axes(rules=axes.DEFAULT_RULES) -> tuple[str, ...]:
    """Mesh axes that the leading (batch) dimension is split over under ``rules``."""
    physical = dict(rules).get(axes.ACT_BATCH)
    if physical is None:
        return ()
    return (physical,) if isinstance(physical, str) else tuple(physical)


def make_global_batch(batch: Batch, mesh: Mesh, rules=axes.DEFAULT_RULES) -> Batch:
    """Shards every field of a host ``batch`` along its first dimension over the batch mesh axes.

    Host rows must split evenly over this process's devices on those axes (set
    ``PipelineConfig.batch_size_multiple`` accordingly). int64 fields become the default device
    integer type (int32 unless ``jax_enable_x64``).
    """
    batch_axes = tuple(a for a in batch_mesh_axes(rules) if a in mesh.shape)
    shards = math.prod(mesh.shape[a] for a in batch_axes)
    local_rows = batch.weights.shape[0]
    global_rows = local_rows * jax.process_count()
    if global_rows % shards:
        raise ValueError(
            f"a global batch of {global_rows} rows ({local_rows} per host) cannot be split over mesh axes "
            f"{batch_axes} of total size {shards}; make rows per bucket a multiple of {shards // jax.process_count() or 1}"
        )

    def to_global(x):
        x = np.asarray(x)
        x = x.astype(jax.dtypes.canonicalize_dtype(x.dtype), copy=False)
        spec = PartitionSpec(batch_axes or None, *([None] * (x.ndim - 1)))
        return jax.make_array_from_process_local_data(NamedSharding(mesh, spec), x, (global_rows,) + x.shape[1:])

    return jax.tree.map(to_global, batch)
