"""One configuration for every connector kind (so experiment configs can switch kinds by name)."""

from __future__ import annotations

import dataclasses
from typing import Any

import jax.numpy as jnp

from jaxspeech.audio_tokens import DownsampleStep, FrameStack, Identity, QFormerWindows, StridedConv

KINDS = ("linear", "frame_stack", "conv", "qformer")


@dataclasses.dataclass(frozen=True)
class ConnectorConfig:
    """``kind``:
      * ``linear``       one Dense to the LLM width (Qwen2-Audio's projector);
      * ``frame_stack``  concatenate ``stack`` frames, 2-layer MLP (SLAM-ASR: stack 5);
      * ``conv``         strided conv1d (``conv_kernel``, ``conv_stride``) + 2-layer MLP;
      * ``qformer``      window-level Q-Former (SALMONN): ``num_queries`` per ``window`` frames,
                         windows every ``window_stride`` frames.
    ``norm_match`` rescales every output vector to the RMS of the LLM's text embeddings (times a
    learned gain, initialised to 1) — an answer to LLM dormancy.
    """

    kind: str = "frame_stack"
    output_size: int = 512  # the LLM's hidden size
    hidden_size: int = 1024  # MLP hidden width (frame_stack, conv)
    act: str = "gelu"
    stack: int = 5
    conv_kernel: int = 3
    conv_stride: int = 2
    window: int = 17
    window_stride: int = 17
    num_queries: int = 1
    qformer_layers: int = 2
    qformer_size: int = 256
    qformer_heads: int = 4
    qformer_ffn: int = 1024
    norm_match: bool = False
    attn_impl: str = "xla"
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"connector kind must be one of {KINDS}, got {self.kind!r}")
        if self.kind == "qformer" and self.window < self.window_stride:
            raise ValueError(f"Q-Former windows ({self.window}) shorter than their stride ({self.window_stride}) skip frames")

    @property
    def downsample(self) -> tuple[DownsampleStep, ...]:
        """The length arithmetic of this connector (shared with the data side's placeholder counts)."""
        if self.kind == "frame_stack":
            return (FrameStack(self.stack),)
        if self.kind == "conv":
            return (StridedConv(kernel=self.conv_kernel, stride=self.conv_stride, padding=self.conv_kernel // 2),)
        if self.kind == "qformer":
            return (QFormerWindows(stride=self.window_stride, queries=self.num_queries),)
        return (Identity(),)

    def replace(self, **changes) -> "ConnectorConfig":
        return dataclasses.replace(self, **changes)


def output_lengths(lengths, steps) -> Any:
    """Applies downsampling ``steps`` elementwise to ``lengths`` (int arrays, usable under jit)."""
    for step in steps:
        lengths = step.lengths(lengths)
    return lengths
