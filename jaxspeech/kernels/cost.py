"""What each flash-attention kernel declares to the compiler (``pl.CostEstimate``).

A compiler cannot see inside a Pallas kernel: without a declaration its cost analysis counts the
kernel as free, and anything built on that count (step-time estimates, MFU) is wrong. The counts
here follow the kernels' work tile by tile: ``cfg.tiles`` tiles of ``block_q`` x ``block_kv``
per (example, query head) are visited (the mask's static structure, ``static_tile_count``), each
costing 2 * block_q * block_kv * D FLOPs per matmul:

* forward: q k^T and p v (2 matmuls), one exponential per score;
* dq: q k^T, dO v^T and dS k (3 matmuls), one exponential per score;
* dk/dv: q k^T, dO v^T, p^T dO and dS^T q (4 matmuls), one exponential per score.

Bytes: the row operands once per (example, head) and the key/value (or query) tiles once per
visited tile, as the kernels fetch them; the small int32 id channels are left out.
"""

from __future__ import annotations

from jax.experimental import pallas as pl

from jaxspeech.kernels.flash_math import KernelConfig

MATMULS = {"forward": 2, "dq": 3, "dkv": 4}
_F32 = 4


def kernel_cost(
    kind: str,
    cfg: KernelConfig,
    *,
    batch: int,
    heads: int,
    kv_heads: int,
    q_len: int,
    kv_len: int,
    head_dim: int,
    itemsize: int,
    bias_itemsize: int = 0,
) -> pl.CostEstimate:
    """The estimate of one launch of the ``kind`` kernel ("forward", "dq" or "dkv") on padded
    lengths ``q_len`` / ``kv_len`` with q/k/v elements of ``itemsize`` bytes."""
    bq, bk, d = cfg.block_q, cfg.block_kv, head_dim
    tiles = cfg.tiles * batch * heads
    scores = tiles * bq * bk
    rows = batch * heads * q_len  # query rows, over all heads
    if kind == "forward":
        # q in, out and logsumexp out; a key and a value tile per visited tile.
        moved = rows * (2 * d * itemsize + _F32) + tiles * 2 * bk * d * itemsize
        transcendentals = scores + tiles * bq  # exp of the scores, and the running-max rescale
    elif kind == "dq":
        # q, dO, logsumexp, delta in and dq out; a key and a value tile per visited tile.
        moved = rows * (3 * d * itemsize + 2 * _F32) + tiles * 2 * bk * d * itemsize
        transcendentals = scores
    elif kind == "dkv":
        # k, v in and dk, dv out; a q, dO, logsumexp and delta tile per visited tile.
        moved = batch * kv_heads * kv_len * 4 * d * itemsize + tiles * bq * (2 * d * itemsize + 2 * _F32)
        transcendentals = scores
    else:
        raise ValueError(f"unknown flash-attention kernel {kind!r}; expected one of {tuple(MATMULS)}")
    if cfg.has_bias:
        moved += scores * bias_itemsize * (2 if kind == "dq" else 1)  # dq also writes dbias tiles
    return pl.CostEstimate(
        flops=int(MATMULS[kind] * 2 * scores * d), transcendentals=int(transcendentals), bytes_accessed=int(moved)
    )
