"""Conformer encoder (Gulati et al. 2020) and its FastConformer / Parakeet variant.

features f32[B, T, F] + lengths i32[B]
  -> convolutional subsampling (4x or 8x; ``subsampling.py``)  -> x f[B, T', D], lengths'
  -> optional xscaling (x * sqrt(D)) and dropout
  -> N blocks, each (pre-norm residuals):
        x + 1/2 FFN(LN(x))                      macaron half-step feed-forward
        x + MHSA(LN(x))                         relative positions (``relpos.py``), RoPE or none
        x + Conv(LN(x))                         pointwise -> GLU -> depthwise -> BN|LN -> Swish -> pointwise
        x + 1/2 FFN(LN(x))
        LN(x)
  -> hidden f[B, T', D] (padded frames zeroed), lengths' i32[B]

Options that separate the paper's Conformer from FastConformer / Parakeet (all covered by tests):
  * ``subsampling``: "conv2d" (full convolutions, paper/ESPnet/NeMo "striding") or "dw_conv2d"
    (depthwise-separable, FastConformer); ``subsampling_factor`` 4 (paper) or 8 (FastConformer);
    ``subsampling_padding`` "same" (NeMo), "valid" (ESPnet) or "causal";
  * ``pos_encoding``: "rel_pos" (Transformer-XL distances with learned ``pos_bias_u`` / ``pos_bias_v``:
    the paper, NeMo, Parakeet), "rope" (rotary, shared ``Attention``) or "none";
  * ``xscaling``: multiply subsampled features by sqrt(D) (NeMo default; Parakeet's ``scale_input``);
  * ``attention_bias`` / ``ffn_bias`` / ``conv_bias``: biases in the projections (Parakeet ties
    the first two); ``conv_kernel_size`` 31/32 in the paper, 9 in FastConformer;
  * ``conv_norm``: "batch_norm" (paper, Parakeet; running statistics in the ``batch_stats``
    collection, batch statistics over valid frames only) or "layer_norm";
  * ``conv_causal``: depthwise convolution sees only past frames (streaming);
  * ``chunk_size`` / ``left_chunks``: chunked attention for streaming (a frame attends to its own
    chunk and ``left_chunks`` earlier ones, never to later chunks).

Padding never leaks into valid frames: the key-padding mask in attention, zeroed padded frames before
the depthwise convolution and inside the subsampling, and masked batch-norm statistics.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn

from jaxspeech.encoders.relpos import RelPositionAttention, relative_sinusoids
from jaxspeech.encoders.subsampling import ConvSubsampling, SubsamplingConfig, subsampled_lengths
from jaxspeech.layers import axes
from jaxspeech.layers.broadcast import over_leading_axes
from jaxspeech.layers.attention import Attention
from jaxspeech.layers.dense import Dense
from jaxspeech.kernels.masks import MaskSpec, padding_mask
from jaxspeech.layers.mlp import activation
from jaxspeech.layers.norms import LayerNorm
from jaxspeech.layers.options import check_block_options
from jaxspeech.layers.remat import remat, scan_layers
from jaxspeech.layers.rope import RopeConfig, inverse_frequencies

POS_ENCODINGS = ("rel_pos", "rope", "none")
CONV_NORMS = ("batch_norm", "layer_norm")
HIDDEN_AXES = (axes.ACT_BATCH, axes.ACT_LENGTH, axes.ACT_EMBED)


@dataclasses.dataclass(frozen=True)
class ConformerConfig:
    """Shapes and switches of a Conformer encoder; defaults are a FastConformer-style model.

    ``ffn_dim`` (or ``ffn_factor * d_model``) is the feed-forward width. Dropout: ``dropout_rate``
    on every residual branch and after the subsampling, ``ffn_dropout_rate`` after the FFN
    activation, ``pos_dropout_rate`` on the relative position embeddings. ``batch_norm_momentum``
    is the weight of the new batch statistics in the running averages (PyTorch convention).
    ``chunk_size`` counts subsampled frames (``chunk_size=1``: fully causal attention); a streaming
    encoder whose outputs never depend on later chunks also needs ``conv_causal=True`` and
    ``subsampling_padding="causal"``. ``dtype`` is the compute dtype, ``param_dtype`` storage.
    """

    input_dim: int = 80
    d_model: int = 256
    num_layers: int = 12
    num_heads: int = 4
    ffn_dim: int | None = None
    ffn_factor: float = 4.0
    activation: str = "silu"
    conv_kernel_size: int = 9
    conv_norm: str = "batch_norm"
    conv_causal: bool = False
    subsampling: str = "dw_conv2d"
    subsampling_factor: int = 8
    subsampling_channels: int = 256
    subsampling_kernel_size: int = 3
    subsampling_padding: str = "same"
    pos_encoding: str = "rel_pos"
    rope_theta: float = 10000.0
    xscaling: bool = True
    attention_bias: bool = True
    ffn_bias: bool = True
    conv_bias: bool = True
    norm_eps: float = 1e-5
    batch_norm_momentum: float = 0.1
    dropout_rate: float = 0.1
    ffn_dropout_rate: float = 0.1
    pos_dropout_rate: float = 0.0
    chunk_size: int | None = None
    left_chunks: int | None = None
    attn_impl: str = "xla"
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32
    scan_layers: bool = True
    remat_policy: str = "none"

    def __post_init__(self):
        if self.d_model % self.num_heads:
            raise ValueError(f"d_model ({self.d_model}) must be divisible by num_heads ({self.num_heads})")
        if self.pos_encoding not in POS_ENCODINGS:
            raise ValueError(f"pos_encoding must be one of {POS_ENCODINGS}, got {self.pos_encoding!r}")
        if self.pos_encoding == "rel_pos" and self.d_model % 2:
            raise ValueError(f"rel_pos needs an even d_model, got {self.d_model}")
        if self.conv_norm not in CONV_NORMS:
            raise ValueError(f"conv_norm must be one of {CONV_NORMS}, got {self.conv_norm!r}")
        if not self.conv_causal and self.conv_kernel_size % 2 == 0:
            raise ValueError(
                f"a non-causal conv_kernel_size must be odd to keep frames aligned, got {self.conv_kernel_size}"
            )
        if self.left_chunks is not None and self.chunk_size is None:
            raise ValueError("left_chunks needs chunk_size")
        if self.chunk_size is not None and self.chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1, got {self.chunk_size}")
        check_block_options(self.remat_policy, self.attn_impl)
        activation(self.activation)  # raises on an unknown activation name
        _ = self.subsampling_config  # raises on invalid subsampling fields

    @property
    def head_dim(self) -> int:
        return self.d_model // self.num_heads

    @property
    def ffn_hidden(self) -> int:
        return self.ffn_dim or int(self.ffn_factor * self.d_model)

    @property
    def subsampling_config(self) -> SubsamplingConfig:
        return SubsamplingConfig(
            kind=self.subsampling,
            factor=self.subsampling_factor,
            channels=self.subsampling_channels,
            kernel_size=self.subsampling_kernel_size,
            padding=self.subsampling_padding,
        )

    def replace(self, **changes) -> "ConformerConfig":
        return dataclasses.replace(self, **changes)


class FeedForward(nn.Module):
    """fc2(dropout(act(fc1(x)))): f[B, T, D] -> f[B, T, D].

    The shared ``MLP`` has no dropout between its projections; Conformer training uses it.
    """

    config: ConformerConfig
    train: bool = False

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        c = self.config
        hidden = Dense(c.ffn_hidden, (axes.EMBED, axes.MLP), c.ffn_bias, c.dtype, c.param_dtype, name="fc1")(x)
        hidden = nn.with_logical_constraint(
            activation(c.activation)(hidden), (axes.ACT_BATCH, axes.ACT_LENGTH, axes.ACT_MLP)
        )
        hidden = nn.Dropout(c.ffn_dropout_rate, deterministic=not self.train)(hidden)
        return Dense(x.shape[-1], (axes.MLP, axes.EMBED), c.ffn_bias, c.dtype, c.param_dtype, name="fc2")(hidden)


class DepthwiseConv1D(nn.Module):
    """Per-channel 1-D convolution over time: x f[B, T, C] -> f[B, T, C].

    ``kernel`` f[K, C] (+ ``bias`` f[C]). Centred ("same") padding, or K-1 past frames when causal.
    Written as K shifted multiply-adds, which XLA fuses into one pass (faster on CPU than a grouped conv).
    """

    kernel_size: int
    causal: bool = False
    use_bias: bool = True
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        channels, k = x.shape[-1], self.kernel_size
        kernel = self.param(
            "kernel",
            nn.with_logical_partitioning(nn.initializers.lecun_normal(), (axes.KERNEL, axes.MLP)),
            (k, channels),
            self.param_dtype,
        ).astype(self.dtype)
        left = k - 1 if self.causal else (k - 1) // 2
        padded = jnp.pad(x.astype(self.dtype), ((0, 0), (left, k - 1 - left), (0, 0)))
        length = x.shape[1]
        y = sum(padded[:, tap : tap + length, :] * over_leading_axes(kernel[tap], 3) for tap in range(k))
        if self.use_bias:
            bias = self.param(
                "bias", nn.with_logical_partitioning(nn.initializers.zeros, (axes.MLP,)), (channels,), self.param_dtype
            )
            y = y + over_leading_axes(bias.astype(self.dtype), y.ndim)
        return y


class MaskedBatchNorm(nn.Module):
    """Batch norm over (batch, time) that ignores padded frames: x f[B, T, C], valid bool[B, T].

    Training (``train=True``) normalises with the mean / biased variance of the valid frames and,
    outside initialisation, updates ``batch_stats`` {mean, var} as PyTorch does (unbiased variance,
    ``momentum`` = weight of the new statistics). Evaluation uses the running statistics.
    """

    momentum: float = 0.1
    eps: float = 1e-5
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, valid: jax.Array, train: bool = False) -> jax.Array:
        channels = x.shape[-1]

        def stat(name, init):
            return self.variable(
                "batch_stats", name, nn.with_logical_partitioning(init, (axes.NORM,)), (channels,), jnp.float32
            )

        running_mean = stat("mean", jnp.zeros)
        running_var = stat("var", jnp.ones)
        scale = self.param(
            "scale", nn.with_logical_partitioning(nn.initializers.ones, (axes.NORM,)), (channels,), self.param_dtype
        )
        bias = self.param(
            "bias", nn.with_logical_partitioning(nn.initializers.zeros, (axes.NORM,)), (channels,), self.param_dtype
        )
        x32 = x.astype(jnp.float32)
        if train:
            weights = valid.astype(jnp.float32)[:, :, None]
            count = jnp.sum(weights)
            mean = jnp.sum(x32 * weights, axis=(0, 1)) / jnp.maximum(count, 1.0)
            var = jnp.sum(jnp.square(x32 - over_leading_axes(mean, 3)) * weights, axis=(0, 1)) / jnp.maximum(count, 1.0)
            if not self.is_initializing():
                unbiased = var * count / jnp.maximum(count - 1.0, 1.0)
                running_mean.value = (1 - self.momentum) * running_mean.value + self.momentum * mean
                running_var.value = (1 - self.momentum) * running_var.value + self.momentum * unbiased
        else:
            mean, var = running_mean.value, running_var.value
        multiplier = jax.lax.rsqrt(var + self.eps) * scale.astype(jnp.float32)
        y = (x32 - over_leading_axes(mean, 3)) * over_leading_axes(multiplier, 3) + over_leading_axes(
            bias.astype(jnp.float32), 3
        )
        return y.astype(self.dtype)


class ConvolutionModule(nn.Module):
    """pointwise_in (D -> 2D) -> GLU -> zero padding -> depthwise -> norm -> act -> pointwise_out.

    x f[B, T, D], valid bool[B, T] -> f[B, T, D].
    """

    config: ConformerConfig
    train: bool = False

    @nn.compact
    def __call__(self, x: jax.Array, valid: jax.Array) -> jax.Array:
        c = self.config
        dense = lambda n, logical_axes, name: Dense(n, logical_axes, c.conv_bias, c.dtype, c.param_dtype, name=name)
        h = dense(2 * c.d_model, (axes.EMBED, axes.MLP), "pointwise_in")(x)
        h = h[..., : c.d_model] * jax.nn.sigmoid(h[..., c.d_model :])
        # Padded frames must be exactly zero before the depthwise conv mixes neighbouring frames.
        h = jnp.where(valid[:, :, None], h, 0).astype(h.dtype)
        h = DepthwiseConv1D(c.conv_kernel_size, c.conv_causal, c.conv_bias, c.dtype, c.param_dtype, name="depthwise")(h)
        if c.conv_norm == "batch_norm":
            h = MaskedBatchNorm(c.batch_norm_momentum, c.norm_eps, c.dtype, c.param_dtype, name="norm")(
                h, valid, self.train
            )
        else:
            h = LayerNorm(c.norm_eps, True, c.dtype, c.param_dtype, name="norm")(h)
        h = nn.with_logical_constraint(activation(c.activation)(h), (axes.ACT_BATCH, axes.ACT_LENGTH, axes.ACT_MLP))
        return dense(c.d_model, (axes.MLP, axes.EMBED), "pointwise_out")(h)


class ConformerBlock(nn.Module):
    """One macaron block: x f[B, T, D] -> (x f[B, T, D], x again if ``emit_hidden`` else None).

    ``valid`` bool[B, T] marks real frames, ``mask`` is the attention ``MaskSpec``, ``pos_emb``
    f[2T-1, D] the relative position embeddings (None unless ``pos_encoding == "rel_pos"``).
    """

    config: ConformerConfig
    train: bool = False
    emit_hidden: bool = False

    def _attention(self, x: jax.Array, mask: MaskSpec, pos_emb: jax.Array | None) -> jax.Array:
        c = self.config
        if c.pos_encoding == "rel_pos":
            attention = RelPositionAttention(
                c.num_heads, c.head_dim, c.attention_bias, c.attn_impl, c.dtype, c.param_dtype, name="attention"
            )
            return attention(x, pos_emb, mask=mask)
        bias = c.attention_bias
        attention = Attention(
            c.d_model, c.num_heads, c.num_heads, c.head_dim, bias, bias, bias, bias, c.attn_impl,
            dtype=c.dtype, param_dtype=c.param_dtype, name="attention",
        )  # fmt: skip
        rope = None
        if c.pos_encoding == "rope":
            positions = jnp.broadcast_to(jnp.arange(x.shape[1], dtype=jnp.int32), x.shape[:2])
            rope = (positions, jnp.asarray(inverse_frequencies(c.head_dim, RopeConfig(theta=c.rope_theta))))
        return attention(x, mask=mask, rope=rope)[0]

    @nn.compact
    def __call__(self, x, valid, mask, pos_emb):
        c = self.config
        drop = nn.Dropout(c.dropout_rate, deterministic=not self.train)
        norm = lambda name: LayerNorm(c.norm_eps, True, c.dtype, c.param_dtype, name=name)
        constrain = lambda t: nn.with_logical_constraint(t, HIDDEN_AXES)
        x = constrain(x + 0.5 * drop(FeedForward(c, self.train, name="ffn1")(norm("norm_ffn1")(x))))
        x = constrain(x + drop(self._attention(norm("norm_attention")(x), mask, pos_emb)))
        x = constrain(x + drop(ConvolutionModule(c, self.train, name="conv")(norm("norm_conv")(x), valid)))
        x = constrain(x + 0.5 * drop(FeedForward(c, self.train, name="ffn2")(norm("norm_ffn2")(x))))
        x = constrain(norm("norm_out")(x))
        return x, (x if self.emit_hidden else None)


class ConformerEncoder(nn.Module):
    """features f32[B, T, F] + lengths i32[B] -> (hidden f[B, T', D], lengths i32[B]).

    ``train`` enables dropout and batch statistics (apply with ``mutable=["batch_stats"]`` to get
    the updated running averages). ``hidden_layers`` (indices, or ``"all"``) also returns the
    selected hidden states stacked as f[N, B, T', D]: index 0 is the block input (after
    subsampling and xscaling), index i the output of block i, negative indices count from the end.
    Padded frames (t >= lengths[b]) of every returned state are zero.
    """

    config: ConformerConfig

    @nn.compact
    def __call__(
        self,
        features: jax.Array,
        lengths: jax.Array,
        *,
        train: bool = False,
        hidden_layers: Sequence[int] | str | None = None,
    ):
        c = self.config
        if features.ndim != 3 or features.shape[-1] != c.input_dim:
            raise ValueError(
                f"features must be f32[B, T, {c.input_dim}] (time-major log-mel), got shape {features.shape}"
            )
        if lengths.shape != features.shape[:1]:
            raise ValueError(f"lengths must be i32[{features.shape[0]}], got shape {lengths.shape}")
        selected = _layer_indices(hidden_layers, c.num_layers)
        x, lengths = ConvSubsampling(c.subsampling_config, c.d_model, c.dtype, c.param_dtype, name="subsampling")(
            features, lengths
        )
        if c.xscaling:
            x = x * math.sqrt(c.d_model)
        x = nn.with_logical_constraint(nn.Dropout(c.dropout_rate, deterministic=not train)(x), HIDDEN_AXES)
        length = x.shape[1]
        valid = padding_mask(lengths, length)
        mask = MaskSpec(kv_lengths=lengths, chunk_size=c.chunk_size, chunk_left=c.left_chunks)
        pos_emb = None
        if c.pos_encoding == "rel_pos":
            pos_emb = jnp.asarray(relative_sinusoids(length, c.d_model), c.dtype)
            pos_emb = nn.Dropout(c.pos_dropout_rate, deterministic=not train)(pos_emb)

        emit = selected is not None and any(i > 0 for i in selected)
        states = [x]
        block = remat(ConformerBlock, c.remat_policy)
        if c.scan_layers:
            scanned = scan_layers(
                block, c.num_layers, in_axes=(nn.broadcast,) * 3, collections=("params", "batch_stats")
            )
            x, per_layer = scanned(c, train, emit, name="layers")(x, valid, mask, pos_emb)
            if emit:
                states.extend(per_layer[i] for i in range(c.num_layers))
        else:
            for i in range(c.num_layers):
                x, _ = block(c, train, name=f"layers_{i}")(x, valid, mask, pos_emb)
                states.append(x)
        zero_padding = lambda t: jnp.where(valid[..., None], t, 0).astype(t.dtype)
        hidden = zero_padding(x)
        if selected is None:
            return hidden, lengths
        return hidden, lengths, jnp.stack([zero_padding(states[i]) for i in selected])


def _layer_indices(hidden_layers: Sequence[int] | str | None, num_layers: int) -> tuple[int, ...] | None:
    """Normalises ``hidden_layers`` to indices in [0, num_layers]; raises on out-of-range ones."""
    if hidden_layers is None:
        return None
    if isinstance(hidden_layers, str):
        if hidden_layers != "all":
            raise ValueError(f"hidden_layers must be a sequence of indices or 'all', got {hidden_layers!r}")
        return tuple(range(num_layers + 1))
    out = []
    for index in hidden_layers:
        if not -(num_layers + 1) <= index <= num_layers:
            raise ValueError(f"hidden layer index {index} out of range for {num_layers} layers (0 = block input)")
        out.append(index % (num_layers + 1))
    return tuple(out)


class ConformerCTC(nn.Module):
    """Conformer encoder + linear CTC head: -> (logits f32[B, T', vocab_size], lengths i32[B]).

    Parameters live under ``encoder`` and ``ctc_head`` (Parakeet CTC checkpoints convert to this).
    """

    config: ConformerConfig
    vocab_size: int

    @nn.compact
    def __call__(self, features: jax.Array, lengths: jax.Array, *, train: bool = False):
        c = self.config
        hidden, lengths = ConformerEncoder(c, name="encoder")(features, lengths, train=train)
        head = Dense(self.vocab_size, (axes.EMBED, axes.VOCAB), True, c.dtype, c.param_dtype, name="ctc_head")
        logits = head(hidden).astype(jnp.float32)
        return nn.with_logical_constraint(logits, (axes.ACT_BATCH, axes.ACT_LENGTH, axes.ACT_VOCAB)), lengths


def encoder_lengths(lengths: np.ndarray | jax.Array | int, config: ConformerConfig):
    """Output frames of the encoder for input frame counts ``lengths`` (pure length arithmetic)."""
    return subsampled_lengths(lengths, config.subsampling_config)
