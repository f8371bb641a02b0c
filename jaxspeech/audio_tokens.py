"""How many placeholder tokens a clip takes: encoder frames -> connector outputs.

Pure integer arithmetic shared by the data side (placeholder spans) and the model side (encoders
and connectors import these), so the two can never disagree. Each downsampling step is a small
frozen dataclass with ``lengths(n)`` (unchecked arithmetic that also works elementwise on numpy /
jax integer arrays inside ``jit``) and ``output_length(n)`` (the checked int version);
``audio_token_count`` chains them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence


def ceil_div(n: int, k: int) -> int:
    return -(-n // k)


def conv_output_length(n: int, *, kernel: int, stride: int, padding: int = 0, dilation: int = 1) -> int:
    """Output frames of a 1-D convolution (or unpadded pooling window): floor((n + 2p - d(k-1) - 1) / s) + 1."""
    span = dilation * (kernel - 1) + 1
    if n + 2 * padding < span:
        raise ValueError(f"{n} frames (+2x{padding} padding) are shorter than the kernel span {span}")
    return (n + 2 * padding - span) // stride + 1


class _Step:
    """``output_length`` = ``lengths`` on a single int, with the step's validity check."""

    def lengths(self, n):
        raise NotImplementedError

    def check(self, n: int) -> None:
        """Raises ValueError when ``n`` frames are too few for this step."""

    def output_length(self, n: int) -> int:
        self.check(n)
        return int(self.lengths(n))


@dataclasses.dataclass(frozen=True)
class FrameStack(_Step):
    """Concatenates every ``factor`` frames (the tail is zero-padded): ceil(n / factor)."""

    factor: int

    def lengths(self, n):
        return ceil_div(n, self.factor)


@dataclasses.dataclass(frozen=True)
class StridedConv(_Step):
    """A strided 1-D convolution: the conv arithmetic of ``conv_output_length``."""

    kernel: int
    stride: int
    padding: int = 0
    dilation: int = 1

    def check(self, n: int) -> None:
        conv_output_length(n, kernel=self.kernel, stride=self.stride, padding=self.padding, dilation=self.dilation)

    def lengths(self, n):
        span = self.dilation * (self.kernel - 1) + 1
        return (n + 2 * self.padding - span) // self.stride + 1


@dataclasses.dataclass(frozen=True)
class QFormerWindows(_Step):
    """A window-level Q-Former: ``queries`` outputs per window, windows every ``stride`` frames
    (the last window is padded): ceil(n / stride) * queries."""

    stride: int
    queries: int

    def lengths(self, n):
        return ceil_div(n, self.stride) * self.queries


@dataclasses.dataclass(frozen=True)
class Pooling(_Step):
    """Average/max pooling with PyTorch's rule: floor or ceil((n + 2p - size) / stride) + 1, and in
    ceil mode the last window must start inside the input (or left padding)."""

    size: int
    stride: int | None = None  # defaults to size
    padding: int = 0
    ceil_mode: bool = False

    def check(self, n: int) -> None:
        if n + 2 * self.padding < self.size:
            raise ValueError(f"{n} frames (+2x{self.padding} padding) are shorter than the pooling window {self.size}")

    def lengths(self, n):
        stride = self.stride or self.size
        reach = n + 2 * self.padding - self.size
        if not self.ceil_mode:
            return reach // stride + 1
        out = ceil_div(reach, stride) + 1
        return out - ((out - 1) * stride >= n + self.padding)


@dataclasses.dataclass(frozen=True)
class Identity(_Step):
    """A connector that keeps every frame (e.g. a plain linear projection)."""

    def lengths(self, n):
        return n


DownsampleStep = FrameStack | StridedConv | QFormerWindows | Pooling | Identity

# Whisper's encoder stem: conv(k3, s1, p1) then conv(k3, s2, p1), i.e. ceil(n / 2).
WHISPER_ENCODER = (StridedConv(kernel=3, stride=1, padding=1), StridedConv(kernel=3, stride=2, padding=1))


def downsampled_length(n: int, steps: int | DownsampleStep | Sequence[DownsampleStep]) -> int:
    """Applies the steps in order; an int k stands for ceil(n / k)."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"frame count must be a positive int, got {n!r}")
    if isinstance(steps, int) and not isinstance(steps, bool):
        if steps < 1:
            raise ValueError(f"downsampling factor must be >= 1, got {steps}")
        steps = (FrameStack(steps),)
    elif not isinstance(steps, Sequence):
        steps = (steps,)
    for step in steps:
        if not hasattr(step, "output_length"):
            raise TypeError(f"not a downsampling step: {step!r}")
        n = step.output_length(n)
        if n < 1:
            raise ValueError(f"{step} leaves no frames")
    return n


def audio_token_count(
    num_frames: int,
    *,
    encoder_downsample: int | DownsampleStep | Sequence[DownsampleStep],
    connector: int | DownsampleStep | Sequence[DownsampleStep],
) -> int:
    """Placeholder tokens for a clip of ``num_frames`` encoder input frames (e.g. 3000 log-mel frames
    -> Whisper 1500 -> frame stacking by 5 -> 300)."""
    return downsampled_length(downsampled_length(num_frames, encoder_downsample), connector)
