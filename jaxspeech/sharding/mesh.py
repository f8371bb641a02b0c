"""Mesh construction and logical-axis -> ``NamedSharding`` resolution.

The mesh always has the three named axes ``(data, fsdp, tensor)``; a size of -1 takes the devices
left over. Logical names are mapped through rules (``jaxspeech.layers.axes.DEFAULT_RULES`` unless
a config overrides them). A mesh axis that does not divide a dimension is dropped for that array
(it is replicated instead), so e.g. 2 key/value heads still shard on a 4-way tensor axis only
where they can.
"""

from __future__ import annotations

import contextlib
import math
from typing import Any, Iterator, Mapping, Sequence

import jax
import numpy as np
from flax import linen as nn
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from jaxspeech.layers import axes

Rules = Sequence[tuple[str, Any]]


def make_mesh(shape: Mapping[str, int] | None = None, devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A ``Mesh`` over ``devices`` (default: all) with axes (data, fsdp, tensor).

    ``shape`` maps axis name -> size; missing axes are 1 and one axis may be -1 (the remainder).
    The default puts every device on ``data``.
    """
    devices = list(jax.devices() if devices is None else devices)
    shape = dict(shape or {axes.DATA: -1})
    unknown = set(shape) - set(axes.MESH_AXES)
    if unknown:
        raise ValueError(f"unknown mesh axes {sorted(unknown)}; expected a subset of {axes.MESH_AXES}")
    sizes = [int(shape.get(name, 1)) for name in axes.MESH_AXES]
    if sizes.count(-1) > 1:
        raise ValueError(f"at most one mesh axis may be -1, got {shape}")
    known = math.prod(s for s in sizes if s != -1)
    if -1 in sizes:
        if len(devices) % known:
            raise ValueError(f"{len(devices)} devices cannot be split into mesh {shape}")
        sizes[sizes.index(-1)] = len(devices) // known
    if math.prod(sizes) != len(devices):
        raise ValueError(
            f"mesh {dict(zip(axes.MESH_AXES, sizes))} needs {math.prod(sizes)} devices, have {len(devices)}"
        )
    device_grid = np.asarray(devices).reshape(sizes)
    return Mesh(device_grid, axes.MESH_AXES, axis_types=(jax.sharding.AxisType.Auto,) * len(sizes))


def _mesh_axes_for(name: str | None, rules: Rules) -> tuple[str, ...]:
    if name is None:
        return ()
    for logical, physical in rules:
        if logical == name:
            if physical is None:
                return ()
            return (physical,) if isinstance(physical, str) else tuple(physical)
    raise KeyError(f"logical axis {name!r} has no sharding rule; add it to the rules")


def logical_to_spec(names: Sequence[str | None], shape: Sequence[int], mesh: Mesh, rules: Rules) -> PartitionSpec:
    """PartitionSpec for an array with logical ``names``; drops mesh axes that do not divide a dim."""
    used: set[str] = set()
    spec = []
    for name, dim in zip(names, shape):
        chosen = []
        for mesh_axis in _mesh_axes_for(name, rules):
            size = mesh.shape[mesh_axis]
            if mesh_axis in used or size == 1:
                continue
            if dim % (math.prod(mesh.shape[a] for a in chosen) * size) == 0:
                chosen.append(mesh_axis)
        used.update(chosen)
        spec.append(tuple(chosen) if len(chosen) > 1 else (chosen[0] if chosen else None))
    return PartitionSpec(*spec)


def _is_boxed(x) -> bool:
    return isinstance(x, nn.Partitioned)


def param_shardings(boxed_tree: Any, mesh: Mesh, rules: Rules = axes.DEFAULT_RULES) -> Any:
    """NamedShardings for a tree of ``nn.LogicallyPartitioned`` values (or their abstract shapes).

    Leaves without logical names are replicated.
    """

    def one(leaf):
        if _is_boxed(leaf):
            value = leaf.value
            return NamedSharding(mesh, logical_to_spec(leaf.names, value.shape, mesh, rules))
        return NamedSharding(mesh, PartitionSpec())

    return jax.tree.map(one, boxed_tree, is_leaf=_is_boxed)


@contextlib.contextmanager
def activation_rules(mesh: Mesh, rules: Rules = axes.DEFAULT_RULES) -> Iterator[None]:
    """Context in which ``nn.with_logical_constraint`` inside modules resolves against ``mesh``."""
    with jax.set_mesh(mesh), nn.logical_axis_rules(list(rules)):
        yield
