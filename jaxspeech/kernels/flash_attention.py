"""Flash attention in Pallas: the public entry point behind ``impl="pallas"``.

``flash_attention`` reproduces ``jaxspeech.kernels.reference.reference_attention`` (same
arguments, same results up to float rounding) with fused, block-sparse kernels:

* backends: ``"tpu"`` (Mosaic, ``flash_tpu.py``) and ``"gpu"`` (Triton lowering, ``flash_gpu.py``);
  on CPU either runs in interpret mode (the default backend there is ``"gpu"``, whose interpreted
  form is much faster);
* forward and backward are Pallas kernels joined by ``jax.custom_vjp``; the forward saves the
  per-row logsumexp, the backward recomputes probabilities tile by tile (dq in one kernel, dk/dv
  in another) and returns dbias when a bias is given;
* tiles that the ``MaskSpec`` fully masks are never visited (see ``block_masks.py``); tiles it
  fully allows skip the element mask;
* every kernel declares its FLOPs, exponentials and bytes to the compiler (``cost.py``), so that
  cost analyses of programs that call it count its work;
* sequence lengths need not be multiples of the block sizes: inputs are padded internally and
  padded keys are masked.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any

import jax
import jax.numpy as jnp

from jaxspeech.kernels import flash_gpu, flash_tpu
from jaxspeech.kernels.block_masks import TokenIds, mask_flags, static_tile_count, token_ids, validate_mask
from jaxspeech.kernels.flash_math import KernelConfig
from jaxspeech.kernels.masks import MaskSpec

BACKENDS = {"tpu": flash_tpu, "gpu": flash_gpu}


@dataclasses.dataclass(frozen=True)
class BlockSizes:
    """Tile sizes (tokens). The backward kernels use ``*_bwd`` (default: the forward sizes).

    A block longer than the sequence shrinks to the next power of two (>= 16). On hardware, TPU key
    blocks must be multiples of 128 and query blocks of 16 unless one block spans the sequence;
    GPU blocks must be powers of two >= 16. Sequences are padded to a multiple of every block.
    """

    block_q: int
    block_kv: int
    block_q_bwd: int | None = None
    block_kv_bwd: int | None = None

    def backward(self) -> tuple[int, int]:
        return self.block_q_bwd or self.block_q, self.block_kv_bwd or self.block_kv


DEFAULT_BLOCK_SIZES = {
    "tpu": BlockSizes(block_q=512, block_kv=512, block_q_bwd=256, block_kv_bwd=256),
    "gpu": BlockSizes(block_q=128, block_kv=64, block_q_bwd=64, block_kv_bwd=64),
}


def default_backend() -> str:
    """ "tpu" on TPUs, else "gpu" (GPUs, and CPU where the GPU-style kernels interpret fastest)."""
    return "tpu" if jax.default_backend() == "tpu" else "gpu"


def _fit_block(block: int, length: int) -> int:
    """Shrinks ``block`` to the power of two (>= 16) covering a shorter sequence, so that
    forward and backward blocks (powers of two by default) still divide each other."""
    return min(block, max(16, 1 << (length - 1).bit_length()))


def _round_up(length: int, multiple: int) -> int:
    return -(-length // multiple) * multiple


def _validate(q: jax.Array, k: jax.Array, v: jax.Array, bias: jax.Array | None) -> None:
    for name, x in (("q", q), ("k", k), ("v", v)):
        if x.ndim != 4:
            raise ValueError(f"flash_attention: {name} must be [batch, length, heads, head_dim], got shape {x.shape}")
    batch, q_len, heads, head_dim = q.shape
    if k.shape != v.shape:
        raise ValueError(f"flash_attention: k {k.shape} and v {v.shape} must have the same shape")
    if k.shape[0] != batch or k.shape[3] != head_dim:
        raise ValueError(f"flash_attention: k {k.shape} must match q {q.shape} in batch and head_dim")
    if heads % k.shape[2]:
        raise ValueError(f"flash_attention: query heads ({heads}) must be a multiple of key/value heads ({k.shape[2]})")
    if not (q.dtype == k.dtype == v.dtype):
        raise ValueError(f"flash_attention: q, k, v dtypes differ ({q.dtype}, {k.dtype}, {v.dtype})")
    if bias is not None:
        expected = f"[{batch} or 1, {heads} or 1, {q_len}, {k.shape[1]}]"
        if (
            bias.ndim != 4
            or bias.shape[0] not in (1, batch)
            or bias.shape[1] not in (1, heads)
            or bias.shape[2:] != (q_len, k.shape[1])
        ):
            raise ValueError(f"flash_attention: bias has shape {bias.shape}; expected {expected}")


def flash_attention(
    q: jax.Array,
    k: jax.Array,
    v: jax.Array,
    mask: MaskSpec | None = None,
    *,
    bias: jax.Array | None = None,
    scale: float | None = None,
    block_sizes: BlockSizes | None = None,
    backend: str | None = None,
    interpret: Any = None,
) -> jax.Array:
    """q f[B, T, H, D], k/v f[B, S, K, D] (H % K == 0) -> f[B, T, H, D] in q's dtype.

    ``mask``: a ``MaskSpec`` (None = all pairs allowed); ``bias``: additive f[B|1, H|1, T, S];
    ``scale``: default D**-0.5; ``backend``: "tpu" | "gpu" (default: from the JAX backend);
    ``interpret``: default True on CPU; ``pltpu.InterpretParams(...)`` runs the TPU kernels in the
    TPU simulator. Fully masked query rows return 0 with zero gradients.
    """
    _validate(q, k, v, bias)
    backend = backend or default_backend()
    if backend not in BACKENDS:
        raise ValueError(f"flash_attention: unknown backend {backend!r}; expected one of {tuple(BACKENDS)}")
    interpret = jax.default_backend() == "cpu" if interpret is None else interpret
    batch, q_len, heads, head_dim = q.shape
    kv_len, kv_heads = k.shape[1], k.shape[2]
    validate_mask(mask, batch, q_len, kv_len)
    scale = head_dim**-0.5 if scale is None else float(scale)
    sizes = block_sizes or DEFAULT_BLOCK_SIZES[backend]
    bq_bwd, bk_bwd = sizes.backward()
    bq, bq_bwd = (_fit_block(b, q_len) for b in (sizes.block_q, bq_bwd))
    bk, bk_bwd = (_fit_block(b, kv_len) for b in (sizes.block_kv, bk_bwd))
    q_padded, kv_padded = _round_up(q_len, math.lcm(bq, bq_bwd)), _round_up(kv_len, math.lcm(bk, bk_bwd))

    if not interpret:
        if backend == "gpu":
            flash_gpu.check_shapes(head_dim, (bq, bk, bq_bwd, bk_bwd))
        else:
            for block_q, block_kv in ((bq, bk), (bq_bwd, bk_bwd)):
                flash_tpu.check_shapes(q_padded, kv_padded, block_q, block_kv)

    flags = mask_flags(mask, padded_keys=kv_padded != kv_len)
    ids = token_ids(mask, flags, batch, q_len, kv_len, q_padded, kv_padded)
    q = jnp.pad(q, ((0, 0), (0, q_padded - q_len), (0, 0), (0, 0)))
    k, v = (jnp.pad(x, ((0, 0), (0, kv_padded - kv_len), (0, 0), (0, 0))) for x in (k, v))
    if bias is not None:
        bias = jnp.pad(bias, ((0, 0), (0, 0), (0, q_padded - q_len), (0, kv_padded - kv_len)))
    config = functools.partial(
        KernelConfig,
        flags=flags,
        scale=scale,
        groups=heads // kv_heads,
        bias_batched=None if bias is None else bias.shape[0] > 1,
        bias_per_head=None if bias is None else bias.shape[1] > 1,
        interpret=interpret,
    )
    fwd, bwd = (
        config(
            block_q=block_q,
            block_kv=block_kv,
            tiles=static_tile_count(mask, flags, q_len, kv_len, q_padded, kv_padded, block_q, block_kv),
        )
        for block_q, block_kv in ((bq, bk), (bq_bwd, bk_bwd))
    )
    return _flash(backend, fwd, bwd, q, k, v, bias, ids)[:, :q_len]


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1, 2))
def _flash(backend: str, fwd: KernelConfig, bwd: KernelConfig, q, k, v, bias, ids: TokenIds):
    return BACKENDS[backend].forward(fwd, q, k, v, bias, ids)[0]


def _flash_fwd(backend, fwd, bwd, q, k, v, bias, ids):
    out, lse = BACKENDS[backend].forward(fwd, q, k, v, bias, ids)
    return out, (q, k, v, bias, ids, out, lse)


def _flash_bwd(backend, fwd, bwd, residuals, do):
    q, k, v, bias, ids, out, lse = residuals
    dq, dk, dv, dbias = BACKENDS[backend].backward(bwd, q, k, v, bias, ids, out, lse, do)
    if bias is not None:
        # The kernels emit one gradient tile per (example, head); a broadcast bias sums them.
        summed_axes = tuple(axis for axis in (0, 1) if bias.shape[axis] == 1 and dbias.shape[axis] > 1)
        dbias = jnp.sum(dbias, axis=summed_axes, keepdims=True, dtype=jnp.float32).astype(bias.dtype)
    return dq, dk, dv, dbias, None


_flash.defvjp(_flash_fwd, _flash_bwd)
