"""Rematerialisation (activation checkpointing) of a block class by policy name, and layer stacking.

Policies: ``none`` (keep activations), ``full`` (recompute everything in the backward pass),
``dots`` (save matmul outputs), ``dots_no_batch`` (save matmuls without batch dims: weights-side).
"""

from __future__ import annotations

from typing import Any

import jax
from flax import linen as nn

from jaxspeech.layers import axes

_POLICIES = {
    "full": None,
    "dots": jax.checkpoint_policies.checkpoint_dots,
    "dots_no_batch": jax.checkpoint_policies.checkpoint_dots_with_no_batch_dims,
}
POLICIES = ("none", *_POLICIES)


def remat(block: type[nn.Module], policy: str, static_argnums: tuple[int, ...] = ()) -> type[nn.Module]:
    """``block`` wrapped in ``nn.remat`` with the named policy (unchanged for ``"none"``)."""
    if policy == "none":
        return block
    if policy not in _POLICIES:
        raise ValueError(f"unknown remat policy {policy!r}; expected 'none' or one of {sorted(_POLICIES)}")
    return nn.remat(block, policy=_POLICIES[policy], prevent_cse=True, static_argnums=static_argnums)


def scan_layers(
    block: type[nn.Module], length: int, in_axes: Any, out_axes: Any = 0, collections: tuple[str, ...] = ("params",)
) -> type[nn.Module]:
    """``block`` scanned ``length`` times: variables stacked on a leading ``layers`` axis.

    The block's ``__call__(carry, *args)`` returns ``(carry, per_layer_output)``; ``in_axes`` gives
    each extra argument's scanned axis (``nn.broadcast`` for arguments shared by all layers).
    ``collections`` lists the variable collections stacked per layer (e.g. add ``"batch_stats"``).
    """
    return nn.scan(
        block,
        variable_axes={name: 0 for name in collections},
        split_rngs={"params": True, "dropout": True},
        in_axes=in_axes,
        out_axes=out_axes,
        length=length,
        metadata_params={nn.PARTITION_NAME: axes.LAYERS},
    )
