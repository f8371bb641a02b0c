"""SpecAugment (Park et al., 2019) frequency and time masking, per example, jit-able.

Masks are drawn independently for every example from one key and applied only inside each
example's valid frames, so padding stays exactly as it was (and padded frames stay whatever the
feature extractor put there). Masked cells take ``mask_value``, 0 by default: in Whisper's
normalized log-mel domain, ``(log10(mel) + 4) / 4``, 0 is a quiet but not silent level that sits
inside the range of real speech features (silence is -1.5, loud speech 1 to 1.5), so a mask
looks like a low-energy region rather than an out-of-range constant. Time warping is not
implemented. For evaluation, do not call this (or use a config with zero masks).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp


@dataclasses.dataclass(frozen=True)
class SpecAugmentConfig:
    """Numbers of masks and their maximum widths (widths are uniform in ``[0, max]``)."""

    num_freq_masks: int = 2
    max_freq_width: int = 15  # mel bins
    num_time_masks: int = 2
    max_time_width: int = 20  # frames
    max_time_ratio: float | None = None  # also caps a time mask at floor(ratio * valid length)
    mask_value: float = 0.0

    def __post_init__(self):
        for name in ("num_freq_masks", "max_freq_width", "num_time_masks", "max_time_width"):
            if getattr(self, name) < 0:
                raise ValueError(f"SpecAugmentConfig.{name} must be >= 0, got {getattr(self, name)}")
        if self.max_time_ratio is not None and not 0.0 <= self.max_time_ratio <= 1.0:
            raise ValueError(f"SpecAugmentConfig.max_time_ratio must be in [0, 1], got {self.max_time_ratio}")


def _band_mask(key: jax.Array, num_masks: int, max_width: jax.Array, limit: jax.Array, size: int) -> jax.Array:
    """bool[B, size]: union of ``num_masks`` bands per example, each inside ``[0, limit[b])``.

    ``max_width`` i32[B] (already at most ``limit``), ``limit`` i32[B].
    """
    width_key, start_key = jax.random.split(key)
    batch = limit.shape[0]
    widths = jax.random.randint(width_key, (batch, num_masks), 0, max_width[:, None] + 1)
    starts = jax.random.randint(start_key, (batch, num_masks), 0, limit[:, None] - widths + 1)
    position = jnp.arange(size)[None, None, :]
    inside = (position >= starts[..., None]) & (position < (starts + widths)[..., None])
    return inside.any(axis=1)


def spec_augment(features: jax.Array, lengths: jax.Array, rng: jax.Array, config: SpecAugmentConfig) -> jax.Array:
    """features f[B, T, F], lengths i32[B] (valid frames), rng key -> f[B, T, F] with masks applied.

    Jit with ``config`` static: ``jax.jit(spec_augment, static_argnames="config")``.
    """
    if features.ndim != 3:
        raise ValueError(f"spec_augment: features must be f[B, T, F], got shape {features.shape}")
    batch, frames, bins = features.shape
    if lengths.shape != (batch,):
        raise ValueError(f"spec_augment: lengths must be i32[{batch}], got shape {lengths.shape}")
    lengths = jnp.clip(lengths.astype(jnp.int32), 0, frames)
    freq_key, time_key = jax.random.split(rng)

    freq_limit = jnp.full((batch,), bins, jnp.int32)
    freq_width = jnp.full((batch,), min(config.max_freq_width, bins), jnp.int32)
    freq_mask = _band_mask(freq_key, config.num_freq_masks, freq_width, freq_limit, bins)  # [B, F]

    time_width = jnp.minimum(lengths, config.max_time_width)
    if config.max_time_ratio is not None:
        time_width = jnp.minimum(time_width, jnp.floor(config.max_time_ratio * lengths).astype(jnp.int32))
    time_mask = _band_mask(time_key, config.num_time_masks, time_width, lengths, frames)  # [B, T]

    valid = jnp.arange(frames)[None, :] < lengths[:, None]
    masked = (time_mask[:, :, None] | freq_mask[:, None, :]) & valid[:, :, None]
    return jnp.where(masked, jnp.asarray(config.mask_value, features.dtype), features)
