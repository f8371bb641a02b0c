"""Validation of the options every transformer-style config shares (attention backend, remat)."""

from __future__ import annotations

from jaxspeech.layers.attention import IMPLEMENTATIONS
from jaxspeech.layers.remat import POLICIES


def check_block_options(remat_policy: str, attn_impl: str) -> None:
    """Raises ValueError naming the field when ``remat_policy`` or ``attn_impl`` is unknown."""
    if remat_policy not in POLICIES:
        raise ValueError(f"remat_policy must be one of {POLICIES}, got {remat_policy!r}")
    if attn_impl not in IMPLEMENTATIONS:
        raise ValueError(f"attn_impl must be one of {IMPLEMENTATIONS}, got {attn_impl!r}")


def check_heads(width: int, num_heads: int, width_name: str = "d_model") -> None:
    """Raises ValueError unless ``width`` splits evenly into ``num_heads`` heads."""
    if width % num_heads:
        raise ValueError(f"{width_name} ({width}) must be divisible by num_heads ({num_heads})")
