"""Whisper audio encoder: conv stem (x2 downsampling) -> sinusoidal positions -> pre-LN blocks -> LayerNorm.

Input is time-major log-mel ``features f32[B, T, n_mels]`` with ``lengths i32[B]`` valid frames.
Unlike the reference implementations (which require exactly ``2 * max_source_positions`` = 3000
frames and attend to all of them), any ``T <= 2 * max_source_positions`` is accepted: frames past
``lengths`` are zeroed before each convolution and masked as attention keys, so padding never
changes the valid outputs (an utterance padded in a batch gives the same frames as alone). With
``lengths == T == 3000`` the computation is exactly Whisper's.

``pool_before_norm`` > 1 average-pools the last block's output (kernel = stride = pool, the tail
dropped like PyTorch's ``AvgPool1d``) before the final LayerNorm: Qwen2-Audio's audio tower (pool 2).

Positions: HF stores the encoder's ``embed_positions`` as a (frozen) weight; it is always equal to
``sinusoids(max_source_positions, d_model)`` (checked on import by ``jaxspeech.convert.hf_whisper``),
so here it is a constant, not a parameter.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import jax
import jax.numpy as jnp
from flax import linen as nn
from flax import struct

from jaxspeech.audio_tokens import WHISPER_ENCODER, DownsampleStep, Pooling
from jaxspeech.layers import axes
from jaxspeech.layers.broadcast import over_leading_axes
from jaxspeech.layers.attention import Attention
from jaxspeech.layers.embeddings import sinusoids
from jaxspeech.kernels.masks import MaskSpec, padding_mask
from jaxspeech.layers.mlp import MLP, activation
from jaxspeech.layers.norms import LayerNorm
from jaxspeech.layers.options import check_block_options, check_heads
from jaxspeech.layers.remat import remat, scan_layers

HIDDEN_AXES = (axes.ACT_BATCH, axes.ACT_LENGTH, axes.ACT_EMBED)


@dataclasses.dataclass(frozen=True)
class WhisperEncoderConfig:
    """Shapes and switches of a Whisper encoder (defaults: whisper-base).

    ``dtype`` is the compute dtype, ``param_dtype`` the storage dtype; ``scan_layers`` stacks the
    blocks' parameters on a leading ``layers`` axis; ``remat_policy`` is one of ``layers.remat.POLICIES``;
    ``pool_before_norm`` > 1 average-pools the frames before the final LayerNorm (Qwen2-Audio: 2).
    """

    n_mels: int = 80
    d_model: int = 512
    num_layers: int = 6
    num_heads: int = 8
    ffn_dim: int = 2048
    max_source_positions: int = 1500
    layer_norm_eps: float = 1e-5
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32
    attn_impl: str = "xla"
    scan_layers: bool = False
    remat_policy: str = "none"
    pool_before_norm: int = 1

    def __post_init__(self):
        check_heads(self.d_model, self.num_heads)
        check_block_options(self.remat_policy, self.attn_impl)
        if self.pool_before_norm < 1:
            raise ValueError(f"pool_before_norm must be >= 1 (1 = no pooling), got {self.pool_before_norm}")

    @property
    def max_frames(self) -> int:
        """Longest accepted input (3000 frames = 30 s for every released Whisper)."""
        return 2 * self.max_source_positions

    @property
    def downsample(self) -> tuple[DownsampleStep, ...]:
        """Length arithmetic from input frames to output frames (shared with the data side's placeholder counts)."""
        pooling = (Pooling(self.pool_before_norm),) if self.pool_before_norm > 1 else ()
        return WHISPER_ENCODER + pooling

    def output_lengths(self, lengths):
        """Output frames for ``lengths`` input frames (int or int array, usable under ``jit``)."""
        for step in self.downsample:
            lengths = step.lengths(lengths)
        return lengths

    def replace(self, **changes) -> "WhisperEncoderConfig":
        return dataclasses.replace(self, **changes)


def output_lengths(lengths: jax.Array) -> jax.Array:
    """Frames after the stride-2 conv (kernel 3, padding 1): ``(lengths - 1) // 2 + 1`` = ceil(lengths / 2)."""
    return (lengths - 1) // 2 + 1


def average_pool(x: jax.Array, size: int) -> jax.Array:
    """x f[B, S, D] -> f[B, S // size, D]: means over non-overlapping windows of ``size`` frames (the
    tail that fills no window is dropped, as in PyTorch's ``AvgPool1d(size)``)."""
    batch, frames, width = x.shape
    windows = Pooling(size).lengths(frames)
    grouped = x[:, : windows * size].reshape(batch, windows, size, width)
    return grouped.astype(jnp.float32).mean(axis=2).astype(x.dtype)


@struct.dataclass
class WhisperEncoderOutput:
    """hidden f[B, S, D] after the final LayerNorm (zero past ``lengths``); lengths i32[B] valid frames;
    layer_states: the requested per-layer hidden states, each f[B, S, D] (before the final LayerNorm,
    pooled like ``hidden`` when ``pool_before_norm`` > 1)."""

    hidden: jax.Array
    lengths: jax.Array
    layer_states: tuple[jax.Array, ...] = ()


def _conv(features: int, strides: int, config: WhisperEncoderConfig, name: str) -> nn.Conv:
    return nn.Conv(
        features,
        kernel_size=(3,),
        strides=(strides,),
        padding=[(1, 1)],
        dtype=config.dtype,
        param_dtype=config.param_dtype,
        kernel_init=nn.with_logical_partitioning(
            nn.initializers.lecun_normal(), (axes.KERNEL, axes.CONV_IN, axes.CONV_OUT)
        ),
        bias_init=nn.with_logical_partitioning(nn.initializers.zeros, (axes.CONV_OUT,)),
        name=name,
    )


class WhisperEncoderBlock(nn.Module):
    """x + self_attn(LN(x)); x + mlp(LN(x)). ``__call__(x f[B, S, D], mask) -> (x, x | None)``.

    The second output is the block's hidden state when ``emit_hidden`` (collected by ``nn.scan``).
    """

    config: WhisperEncoderConfig
    emit_hidden: bool = False

    @nn.compact
    def __call__(self, x: jax.Array, mask: MaskSpec) -> tuple[jax.Array, jax.Array | None]:
        c = self.config
        norm = lambda name: LayerNorm(c.layer_norm_eps, True, c.dtype, c.param_dtype, name=name)
        attention = Attention(
            features=c.d_model,
            num_heads=c.num_heads,
            num_kv_heads=c.num_heads,
            head_dim=c.d_model // c.num_heads,
            q_bias=True,
            k_bias=False,
            v_bias=True,
            o_bias=True,
            impl=c.attn_impl,
            dtype=c.dtype,
            param_dtype=c.param_dtype,
            name="self_attn",
        )
        attn_out, _ = attention(norm("self_attn_layer_norm")(x), mask=mask)
        x = nn.with_logical_constraint(x + attn_out, HIDDEN_AXES)
        mlp = MLP(c.ffn_dim, "gelu", True, dtype=c.dtype, param_dtype=c.param_dtype, name="mlp")
        x = nn.with_logical_constraint(x + mlp(norm("final_layer_norm")(x)), HIDDEN_AXES)
        return x, (x if self.emit_hidden else None)


def _resolve_layers(output_layers: Sequence[int] | str | None, num_layers: int) -> tuple[int, ...]:
    if output_layers is None:
        return ()
    if output_layers == "all":
        return tuple(range(num_layers + 1))
    resolved = []
    for index in output_layers:
        i = index + num_layers + 1 if index < 0 else index
        if not 0 <= i <= num_layers:
            raise ValueError(
                f"output layer {index} out of range for {num_layers} layers (valid: 0..{num_layers} or negative)"
            )
        resolved.append(i)
    return tuple(resolved)


class WhisperEncoder(nn.Module):
    """``(features f32[B, T, n_mels], lengths i32[B] | None) -> WhisperEncoderOutput`` with
    S = ceil(T / 2) // pool_before_norm.

    ``lengths=None`` means every frame is valid (Whisper's own 30-s padded input), and skips the masking.

    ``output_layers`` selects per-layer hidden states (multi-layer features, SALMONN-2 / Ultravox
    style): layer 0 is the stem output plus positions, layer i the output of block i (negative
    indices count from the last block), ``"all"`` returns all ``num_layers + 1`` of them.
    """

    config: WhisperEncoderConfig

    @nn.compact
    def __call__(
        self,
        features: jax.Array,
        lengths: jax.Array | None = None,
        *,
        output_layers: Sequence[int] | str | None = None,
    ) -> WhisperEncoderOutput:
        c = self.config
        batch, frames, mels = features.shape
        if mels != c.n_mels:
            raise ValueError(
                f"Whisper encoder expects features f32[B, T, {c.n_mels}] (time-major), got {features.shape}"
            )
        if frames > c.max_frames:
            raise ValueError(
                f"Whisper encoder accepts at most {c.max_frames} frames, got T={frames}; chunk longer audio"
            )
        layers = _resolve_layers(output_layers, c.num_layers)
        padded = lengths is not None  # without lengths every frame is valid: no masking work at all
        lengths = lengths.astype(jnp.int32) if padded else jnp.full((batch,), frames, jnp.int32)
        conv_lengths = output_lengths(lengths)
        gelu = activation("gelu")
        frame_valid = padding_mask(lengths, frames)[:, :, None]
        # Zeroing past `lengths` before each conv reproduces the zero padding of an unpadded input.
        mask_frames = lambda h: jnp.where(frame_valid, h, 0).astype(h.dtype) if padded else h

        x = mask_frames(features.astype(c.dtype))
        x = mask_frames(gelu(_conv(c.d_model, 1, c, "conv1")(x)))
        x = gelu(_conv(c.d_model, 2, c, "conv2")(x))
        positions = jnp.asarray(sinusoids(c.max_source_positions, c.d_model)[: x.shape[1]])
        x = nn.with_logical_constraint(
            (x + over_leading_axes(positions.astype(c.dtype), x.ndim)).astype(c.dtype), HIDDEN_AXES
        )

        mask = MaskSpec(kv_lengths=conv_lengths) if padded else None
        emit = any(i > 0 for i in layers)
        block = remat(WhisperEncoderBlock, c.remat_policy)
        states = [x]
        if c.scan_layers:
            stack = scan_layers(block, c.num_layers, in_axes=(nn.broadcast,))
            x, stacked = stack(c, emit, name="layers")(x, mask)
            if emit:
                states.extend(stacked[i] for i in range(c.num_layers))
        else:
            for i in range(c.num_layers):
                x, _ = block(c, name=f"layers_{i}")(x, mask)
                states.append(x)
        selected = [states[i] for i in layers]
        if c.pool_before_norm > 1:
            # Valid pooled frames read only valid frames: (n - p) // p + 1 windows fit in n frames.
            pool = lambda h: nn.with_logical_constraint(average_pool(h, c.pool_before_norm), HIDDEN_AXES)
            x, selected = pool(x), [pool(h) for h in selected]
        hidden = LayerNorm(c.layer_norm_eps, True, c.dtype, c.param_dtype, name="layer_norm")(x)

        out_lengths = c.output_lengths(lengths)
        out_valid = padding_mask(out_lengths, hidden.shape[1])[:, :, None]
        zero_padding = lambda h: jnp.where(out_valid, h, 0).astype(h.dtype) if padded else h
        return WhisperEncoderOutput(
            hidden=zero_padding(hidden),
            lengths=out_lengths,
            layer_states=tuple(zero_padding(h) for h in selected),
        )
