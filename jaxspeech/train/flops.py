"""FLOP counts that see every layer: XLA's cost analysis of a program whose layer loops are unrolled.

XLA counts the body of a loop once, so the train step of a model whose layers run under
``nn.scan`` reports one layer's FLOPs. ``without_scan`` turns every ``scan_layers`` switch of a
(nested, frozen) config off; lowering (no compilation) the gradient of that copy and reading its
cost analysis gives the FLOPs of all layers, matmuls, attention and elementwise work alike.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax


def without_scan(config: Any) -> Any:
    """A copy of the dataclass ``config`` with ``scan_layers=False`` at every level."""
    if not dataclasses.is_dataclass(config):
        return config
    changes = {}
    for field in dataclasses.fields(config):
        value = getattr(config, field.name)
        if field.name == "scan_layers" and value:
            changes[field.name] = False
        elif dataclasses.is_dataclass(value):
            changes[field.name] = without_scan(value)
    return dataclasses.replace(config, **changes) if changes else config


def plain_shapes(tree: Any) -> Any:
    """``jax.ShapeDtypeStruct`` leaves without shardings (the global, unpartitioned program)."""
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), tree)


def lowered_flops(fn: Callable, *args: Any) -> float:
    """XLA's FLOP count of ``jax.jit(fn)`` lowered (not compiled) for abstract ``args``."""
    analysis = jax.jit(fn).lower(*args).cost_analysis()
    if isinstance(analysis, (list, tuple)):  # older JAX returns one dict per program
        analysis = analysis[0]
    flops = (analysis or {}).get("flops")
    if flops is None:
        raise RuntimeError("XLA's cost analysis gave no FLOP count for this program")
    return float(flops)
