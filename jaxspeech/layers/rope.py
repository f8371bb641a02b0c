"""Rotary position embeddings: HF (rotate-half) and Meta (interleaved pairs) layouts, Llama-3 scaling."""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np


@dataclasses.dataclass(frozen=True)
class RopeConfig:
    """``scaling`` is None, ``"linear"`` or ``"llama3"`` (frequency-dependent, Llama 3.1+)."""

    theta: float = 10000.0
    scaling: str | None = None
    factor: float = 1.0
    low_freq_factor: float = 1.0
    high_freq_factor: float = 4.0
    original_max_position: int = 8192
    interleaved: bool = False  # Meta checkpoints pair (2i, 2i+1); HF pairs (i, i + D/2)

    def __post_init__(self):
        if self.scaling not in (None, "linear", "llama3"):
            raise ValueError(f"rope scaling must be None, 'linear' or 'llama3', got {self.scaling!r}")


def inverse_frequencies(head_dim: int, config: RopeConfig) -> np.ndarray:
    """f32[head_dim // 2] inverse frequencies (computed in float32 as the HF reference does)."""
    exponents = np.arange(0, head_dim, 2, dtype=np.int64).astype(np.float32) / np.float32(head_dim)
    inv_freq = (np.float32(1.0) / np.power(np.float32(config.theta), exponents)).astype(np.float32)
    if config.scaling == "linear":
        inv_freq = inv_freq / np.float32(config.factor)
    elif config.scaling == "llama3":
        low_wavelen = config.original_max_position / config.low_freq_factor
        high_wavelen = config.original_max_position / config.high_freq_factor
        wavelen = 2 * math.pi / inv_freq
        scaled = np.where(wavelen > low_wavelen, inv_freq / config.factor, inv_freq)
        smooth = (config.original_max_position / wavelen - config.low_freq_factor) / (
            config.high_freq_factor - config.low_freq_factor
        )
        smoothed = (1 - smooth) * scaled / config.factor + smooth * scaled
        medium = (wavelen >= high_wavelen) & (wavelen <= low_wavelen)
        inv_freq = np.where(medium, smoothed, scaled).astype(np.float32)
    return inv_freq


def apply_rope(x: jax.Array, positions: jax.Array, inv_freq: jax.Array, interleaved: bool = False) -> jax.Array:
    """Rotates x f[B, T, H, D] by angles positions i32[B, T] x inv_freq f32[D/2]; returns x's dtype."""
    angles = positions.astype(jnp.float32)[:, :, None] * jnp.asarray(inv_freq, jnp.float32)[None, None, :]
    cos = jnp.cos(angles)[:, :, None, :]
    sin = jnp.sin(angles)[:, :, None, :]
    x32 = x.astype(jnp.float32)
    if interleaved:
        even, odd = x32[..., 0::2], x32[..., 1::2]
        rotated = jnp.stack([even * cos - odd * sin, even * sin + odd * cos], axis=-1).reshape(x.shape)
    else:
        half = x.shape[-1] // 2
        first, second = x32[..., :half], x32[..., half:]
        rotated = jnp.concatenate([first * cos - second * sin, second * cos + first * sin], axis=-1)
    return rotated.astype(x.dtype)
