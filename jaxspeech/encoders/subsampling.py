"""Convolutional front ends that shorten log-mel frames 4x or 8x before a Conformer.

Two variants, each a stack of log2(factor) stride-2 2-D convolutions over (time, mel) followed by a
linear projection of the flattened (mel, channel) features to the model width:

* ``"conv2d"``    every stage is a full 3x3 convolution + ReLU (the original Conformer / ESPnet /
                  NeMo "striding" front end);
* ``"dw_conv2d"`` the first stage is a full convolution, later ones a depthwise 3x3 convolution
                  followed by a pointwise 1x1 convolution + ReLU (FastConformer / Parakeet
                  "dw_striding": far fewer FLOPs at 8x).

* ``"stack"``     no convolution: every ``factor`` consecutive frames are concatenated (the tail
                  zero-padded) and projected to the model width by one Dense: the cheapest front
                  end (one matmul), ceil(T / factor) output frames.

Padding (per stage, time axis): ``"same"`` pads (k-1)//2 on both sides (NeMo, Parakeet);
``"valid"`` pads nothing (ESPnet); ``"causal"`` pads k-1 on the left only, so an output frame never
sees a later input frame (streaming). The mel axis is padded like ``"same"`` except under ``"valid"``.
Frames past each example's length are zeroed before the first stage and after every stage, so
padding never leaks into valid frames.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn

from jaxspeech.layers import axes
from jaxspeech.layers.broadcast import over_leading_axes
from jaxspeech.layers.dense import Dense
from jaxspeech.kernels.masks import padding_mask

KINDS = ("conv2d", "dw_conv2d", "stack")
PADDINGS = ("same", "valid", "causal")
STRIDE = 2


@dataclasses.dataclass(frozen=True)
class SubsamplingConfig:
    """``factor`` is a power of two (4 and 8 are the usual choices); ``channels`` the conv width."""

    kind: str = "dw_conv2d"
    factor: int = 8
    channels: int = 256
    kernel_size: int = 3
    padding: str = "same"

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"subsampling kind must be one of {KINDS}, got {self.kind!r}")
        if self.padding not in PADDINGS:
            raise ValueError(f"subsampling padding must be one of {PADDINGS}, got {self.padding!r}")
        if self.factor < 2 or self.factor & (self.factor - 1):
            raise ValueError(f"subsampling factor must be a power of two >= 2, got {self.factor}")

    @property
    def num_stages(self) -> int:
        return int(math.log2(self.factor))

    def time_padding(self) -> tuple[int, int]:
        """(left, right) zero frames added before each stage's convolution."""
        k = self.kernel_size
        return {"same": ((k - 1) // 2, (k - 1) // 2), "valid": (0, 0), "causal": (k - 1, 0)}[self.padding]

    def freq_padding(self) -> tuple[int, int]:
        k = self.kernel_size
        return (0, 0) if self.padding == "valid" else ((k - 1) // 2, (k - 1) // 2)


def _stage_length(length, kernel_size: int, padding: tuple[int, int]):
    """Output length of one stride-2 convolution: floor((L + pad - k) / 2) + 1, never below 0."""
    out = (length + sum(padding) - kernel_size) // STRIDE + 1
    return jnp.maximum(out, 0) if isinstance(out, jax.Array) else np.maximum(out, 0)


def subsampled_lengths(lengths, config: SubsamplingConfig):
    """Valid frames after subsampling for ``lengths`` (int, numpy or jax integer array).

    E.g. "same" padding, k=3, 8x: 1000 frames -> 500 -> 250 -> 125; "stack", 4x: 1001 -> 251.
    """
    if config.kind == "stack":
        return -(-lengths // config.factor)
    for _ in range(config.num_stages):
        lengths = _stage_length(lengths, config.kernel_size, config.time_padding())
    return lengths


def subsampled_features(num_mels: int, config: SubsamplingConfig) -> int:
    """Size of the mel axis after all stages (e.g. 80 -> 40 -> 20 -> 10 at 8x)."""
    size = num_mels
    for _ in range(config.num_stages):
        size = int(_stage_length(size, config.kernel_size, config.freq_padding()))
    return size


class ChannelwiseConv2D(nn.Module):
    """Strided 2-D convolution over (time, mel) in which each output channel reads one input channel:
    depthwise (x f[B, T, F, C]) or a single input channel fanned out (x f[B, T, F, 1]) -> f[B, T', F', C].

    ``kernel`` f[k, k, 1, C] (``nn.Conv``'s layout for both cases) + ``bias`` f[C]. Written as k*k
    strided multiply-adds: XLA:CPU runs these ~6x faster than a grouped convolution and fuses a
    first-stage convolution, its ReLU and masking into the next depthwise stage.
    """

    features: int
    kernel_size: int
    padding: tuple[tuple[int, int], tuple[int, int]]
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        k, channels = self.kernel_size, self.features
        if x.shape[-1] not in (1, channels):
            raise ValueError(
                f"ChannelwiseConv2D with {channels} channels needs 1 or {channels} input channels, got {x.shape}"
            )
        kernel = self.param(
            "kernel",
            nn.with_logical_partitioning(
                nn.initializers.lecun_normal(), (axes.KERNEL, axes.MEL, axes.CONV_IN, axes.CONV_OUT)
            ),
            (k, k, 1, channels),
            self.param_dtype,
        ).astype(self.dtype)
        bias = self.param(
            "bias", nn.with_logical_partitioning(nn.initializers.zeros, (axes.CONV_OUT,)), (channels,), self.param_dtype
        )
        x = jnp.pad(x.astype(self.dtype), ((0, 0), *self.padding, (0, 0)))
        batch, frames, mels = x.shape[:3]
        out_frames, out_mels = (frames - k) // STRIDE + 1, (mels - k) // STRIDE + 1

        def tap(i, j):
            end = (batch, i + STRIDE * (out_frames - 1) + 1, j + STRIDE * (out_mels - 1) + 1, x.shape[-1])
            return jax.lax.slice(x, (0, i, j, 0), end, (1, STRIDE, STRIDE, 1)) * over_leading_axes(
                kernel[i, j, 0], x.ndim
            )

        return sum(tap(i, j) for i in range(k) for j in range(k)) + over_leading_axes(bias.astype(self.dtype), x.ndim)


def _zero_padded_frames(h: jax.Array, lengths: jax.Array) -> jax.Array:
    """h f[B, T, F, C] with frames t >= lengths[b] set to 0."""
    valid = padding_mask(lengths, h.shape[1])[:, :, None, None]
    return jnp.where(valid, h, 0).astype(h.dtype)


class ConvSubsampling(nn.Module):
    """features f[B, T, F] + lengths i32[B] -> (f[B, T', features], i32[B] lengths T'_b)."""

    config: SubsamplingConfig
    features: int
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    def _conv(self, channels: int, name: str) -> nn.Conv:
        c = self.config
        # Kernel layout [time taps, mel taps, in / groups, out]: frequency taps run along the mel axis.
        return nn.Conv(
            channels,
            (c.kernel_size, c.kernel_size),
            strides=(STRIDE, STRIDE),
            padding=(c.time_padding(), c.freq_padding()),
            kernel_init=nn.with_logical_partitioning(
                nn.initializers.lecun_normal(), (axes.KERNEL, axes.MEL, axes.CONV_IN, axes.CONV_OUT)
            ),
            bias_init=nn.with_logical_partitioning(nn.initializers.zeros, (axes.CONV_OUT,)),
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            name=name,
        )

    @nn.compact
    def __call__(self, x: jax.Array, lengths: jax.Array) -> tuple[jax.Array, jax.Array]:
        c = self.config
        batch = x.shape[0]
        if c.kind == "stack":
            return self._stack(x, lengths)
        h = _zero_padded_frames(x.astype(self.dtype)[..., None], lengths)  # [B, T, F, 1]
        padding = (c.time_padding(), c.freq_padding())
        channelwise = lambda name: ChannelwiseConv2D(
            c.channels, c.kernel_size, padding, self.dtype, self.param_dtype, name=name
        )
        for stage in range(c.num_stages):
            if stage == 0:
                h = channelwise(f"conv_{stage}")(h)
            elif c.kind == "conv2d":
                h = self._conv(c.channels, f"conv_{stage}")(h)
            else:
                h = channelwise(f"depthwise_{stage}")(h)
                h = Dense(
                    c.channels,
                    (axes.CONV_IN, axes.CONV_OUT),
                    True,
                    self.dtype,
                    self.param_dtype,
                    name=f"pointwise_{stage}",
                )(h)
            lengths = _stage_length(lengths, c.kernel_size, c.time_padding())
            h = nn.relu(_zero_padded_frames(h, lengths))
        # Flattened mel-major ([F', C] -> F' * C); the Parakeet converter reorders torch's channel-major rows.
        h = h.reshape(batch, h.shape[1], h.shape[2] * h.shape[3])
        out = Dense(self.features, (axes.CONV_IN, axes.EMBED), True, self.dtype, self.param_dtype, name="proj")(h)
        return out, lengths.astype(jnp.int32)

    def _stack(self, x: jax.Array, lengths: jax.Array) -> tuple[jax.Array, jax.Array]:
        factor = self.config.factor
        batch, frames, mels = x.shape
        padded = -(-frames // factor) * factor
        h = _zero_padded_frames(x.astype(self.dtype)[..., None], lengths)[..., 0]
        h = jnp.pad(h, ((0, 0), (0, padded - frames), (0, 0))).reshape(batch, padded // factor, factor * mels)
        out = Dense(self.features, (axes.CONV_IN, axes.EMBED), True, self.dtype, self.param_dtype, name="proj")(h)
        return out, subsampled_lengths(lengths, self.config).astype(jnp.int32)
