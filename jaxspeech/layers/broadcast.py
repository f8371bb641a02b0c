"""Explicit broadcasting: the code base runs with ``jax_numpy_rank_promotion="raise"`` in its tests."""

from __future__ import annotations

import jax


def over_leading_axes(v: jax.Array, ndim: int) -> jax.Array:
    """v f[*S] -> f[1, ..., 1, *S] with ``ndim`` axes, to combine with an f[..., *S] array of rank ``ndim``."""
    if v.ndim > ndim:
        raise ValueError(f"cannot broadcast f{list(v.shape)} over an array of rank {ndim}")
    return v.reshape((1,) * (ndim - v.ndim) + v.shape)
