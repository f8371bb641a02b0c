"""One config dataclass per connector kind; ``ConnectorConfig`` is their union, chosen by ``kind``.

  * ``LinearConnectorConfig``     ``linear``: one Dense to the LLM width (Qwen2-Audio's projector);
  * ``FrameStackConnectorConfig`` ``frame_stack``: concatenate ``stack`` frames, 2-layer MLP (SLAM-ASR: 5);
  * ``ConvConnectorConfig``       ``conv``: strided conv1d (``kernel``, ``stride``) + 2-layer MLP;
  * ``QFormerConnectorConfig``    ``qformer``: window-level Q-Former (SALMONN): ``num_queries`` per
                                  ``window`` frames, windows every ``window_stride`` frames.

Every kind has ``output_size`` (the LLM's hidden size), ``norm_match`` (rescale every output vector
to the RMS of the LLM's text embeddings times a learned gain initialised to 1: an answer to LLM
dormancy), ``dtype`` and ``param_dtype``, and ``downsample``: its length arithmetic
(``jaxspeech.audio_tokens``), shared with the data side's placeholder counts. In an experiment
config a connector is ``dict(kind=..., <that kind's fields>)``; a field of another kind is rejected.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Union

import jax.numpy as jnp

from jaxspeech.audio_tokens import DownsampleStep, FrameStack, Identity, QFormerWindows, StridedConv


@dataclasses.dataclass(frozen=True)
class _Common:
    output_size: int = 512
    norm_match: bool = False
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    def replace(self, **changes):
        return dataclasses.replace(self, **changes)


@dataclasses.dataclass(frozen=True)
class LinearConnectorConfig(_Common):
    kind: str = "linear"

    @property
    def downsample(self) -> tuple[DownsampleStep, ...]:
        return (Identity(),)


@dataclasses.dataclass(frozen=True)
class FrameStackConnectorConfig(_Common):
    kind: str = "frame_stack"
    stack: int = 5
    hidden_size: int = 1024  # MLP hidden width
    act: str = "gelu"

    @property
    def downsample(self) -> tuple[DownsampleStep, ...]:
        return (FrameStack(self.stack),)


@dataclasses.dataclass(frozen=True)
class ConvConnectorConfig(_Common):
    kind: str = "conv"
    kernel: int = 3
    stride: int = 2
    hidden_size: int = 1024  # conv channels and MLP hidden width
    act: str = "gelu"

    @property
    def downsample(self) -> tuple[DownsampleStep, ...]:
        return (StridedConv(kernel=self.kernel, stride=self.stride, padding=self.kernel // 2),)


@dataclasses.dataclass(frozen=True)
class QFormerConnectorConfig(_Common):
    kind: str = "qformer"
    window: int = 17
    window_stride: int = 17
    num_queries: int = 1
    num_layers: int = 2
    size: int = 256  # the Q-Former's width
    num_heads: int = 4
    ffn_size: int = 1024
    attn_impl: str = "xla"

    def __post_init__(self):
        if self.window < self.window_stride:
            raise ValueError(
                f"Q-Former windows ({self.window}) shorter than their stride ({self.window_stride}) skip frames"
            )

    @property
    def downsample(self) -> tuple[DownsampleStep, ...]:
        return (QFormerWindows(stride=self.window_stride, queries=self.num_queries),)


ConnectorConfig = Union[LinearConnectorConfig, FrameStackConnectorConfig, ConvConnectorConfig, QFormerConnectorConfig]
KINDS = {
    c.kind: c
    for c in (LinearConnectorConfig(), FrameStackConnectorConfig(), ConvConnectorConfig(), QFormerConnectorConfig())
}


def connector_config(kind: str, **fields: Any) -> ConnectorConfig:
    """The config of connector ``kind`` with ``fields``."""
    if kind not in KINDS:
        raise ValueError(f"connector kind must be one of {sorted(KINDS)}, got {kind!r}")
    return type(KINDS[kind])(**fields)


def output_lengths(lengths, steps) -> Any:
    """Applies downsampling ``steps`` elementwise to ``lengths`` (int arrays, usable under jit)."""
    for step in steps:
        lengths = step.lengths(lengths)
    return lengths
