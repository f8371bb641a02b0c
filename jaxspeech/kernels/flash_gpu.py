"""Flash attention for NVIDIA GPUs: forward, dq and dk/dv kernels in Pallas, lowered by Triton.

Recent JAX deprecates the Pallas Triton backend in favour of Mosaic GPU. This module is the only
place that depends on it, through ``_compiler_params`` alone: the kernels use generic Pallas
(BlockSpecs, ref slicing, ``fori_loop``/``cond``, ``dot_general``), which Pallas lowers through
Triton on GPUs and interprets on CPU. A Mosaic GPU version would replace this module (Mosaic GPU
kernels are written at warpgroup level, with explicit TMA copies and wgmma).

Layout: the model's own q f[B, Tp, H, D], k/v f[B, Sp, K, D]; per-row statistics f32[B, H, Tp, 1].
Each program owns one block of rows and walks its visit list with a ``fori_loop`` whose trip
count is the number of non-skipped tiles, so skipped tiles cost nothing.

Grids: forward and dq (NQ, B, H); dk/dv (NK, B, K), looping over the G query heads of the group
and the query blocks listed for the key block.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl
from jax.experimental.pallas import triton as pltriton

from jaxspeech.kernels import flash_math
from jaxspeech.kernels.block_masks import TokenIds, VisitList, kv_visits, q_visits, stacked_ids, tile_mask
from jaxspeech.kernels.cost import kernel_cost
from jaxspeech.kernels.flash_math import KernelConfig


def check_shapes(head_dim: int, blocks: tuple[int, ...]) -> None:
    """Raises ValueError unless Triton can tile these sizes (powers of two, at least 16)."""
    for name, size in (("head_dim", head_dim), *((f"block size {b}", b) for b in blocks)):
        if size < 16 or size & (size - 1):
            raise ValueError(f"flash_attention (gpu): {name} must be a power of two >= 16, got {size}")


def _compiler_params(head_dim: int, stages: int) -> pltriton.CompilerParams:
    return pltriton.CompilerParams(num_warps=4 if head_dim <= 64 else 8, num_stages=stages)


def _cost(kind: str, cfg: KernelConfig, q: jax.Array, k: jax.Array, bias: jax.Array | None) -> pl.CostEstimate:
    """``kernel_cost`` for q f[B, Tp, H, D], k f[B, Sp, K, D]."""
    batch, q_len, heads, head_dim = q.shape
    return kernel_cost(
        kind,
        cfg,
        batch=batch,
        heads=heads,
        kv_heads=k.shape[2],
        q_len=q_len,
        kv_len=k.shape[1],
        head_dim=head_dim,
        itemsize=q.dtype.itemsize,
        bias_itemsize=0 if bias is None else bias.dtype.itemsize,
    )


def _split_bias(cfg: KernelConfig, refs):
    return (refs[0], refs[1:]) if cfg.has_bias else (None, refs)


def _bias_block(cfg: KernelConfig, b, h):
    return (b if cfg.bias_batched else 0), (h if cfg.bias_per_head else 0)


def _walk(index_ref, full_ref, count, visit, carry):
    """Folds ``visit(block, full, carry)`` over the first ``count`` entries of a visit list."""
    return lax.fori_loop(0, count, lambda n, carry: visit(index_ref[n], full_ref[n] == 1, carry), carry)


def _forward_kernel(index_ref, full_ref, count_ref, q_ref, k_ref, v_ref, *refs, cfg: KernelConfig):
    bias_ref, refs = _split_bias(cfg, refs)
    q_ids_ref, kv_ids_ref, o_ref, lse_ref = refs
    bq, bk = cfg.block_q, cfg.block_kv
    q = q_ref[...]

    def visit(block, full, carry):
        cols = pl.ds(pl.multiple_of(block * bk, bk), bk)
        bias = bias_ref[:, cols] if bias_ref is not None else None
        allowed = tile_mask(cfg.flags, q_ids_ref, kv_ids_ref, kv_cols=cols)
        k, v = k_ref[cols, :], v_ref[cols, :]
        s = flash_math.scores(q, k, cfg.scale, bias, full, allowed)
        return flash_math.softmax_step(*carry, s, v)

    init = (
        jnp.full((bq, 1), -jnp.inf, jnp.float32),
        jnp.zeros((bq, 1), jnp.float32),
        jnp.zeros(q.shape, jnp.float32),
    )
    m, l, acc = _walk(index_ref, full_ref, count_ref[0], visit, init)
    out, lse = flash_math.finalize(m, l, acc)
    o_ref[...] = out.astype(o_ref.dtype)
    lse_ref[...] = lse


def _row_specs(visits_len: int):
    """BlockSpecs giving each program its own row of the visit list (index, full, count)."""
    row = pl.BlockSpec((None, None, visits_len), lambda r, b, h: (b, r, 0))
    return [row, row, pl.BlockSpec((None, None, 1), lambda r, b, h: (b, r, 0))]


def _visit_operands(visits: VisitList):
    return visits.index, visits.full, visits.count[..., None]


def forward(cfg: KernelConfig, q, k, v, bias, ids: TokenIds) -> tuple[jax.Array, jax.Array]:
    """q f[B, Tp, H, D], k/v f[B, Sp, K, D] -> (out f[B, Tp, H, D], lse f32[B, H, Tp, 1])."""
    batch, q_len, heads, head_dim = q.shape
    kv_len = k.shape[1]
    bq, bk, groups = cfg.block_q, cfg.block_kv, cfg.groups
    nq, nk = q_len // bq, kv_len // bk
    q_ids, kv_ids = stacked_ids(cfg.flags, ids)
    channels = q_ids.shape[-1]
    in_specs = _row_specs(nk) + [
        pl.BlockSpec((None, bq, None, head_dim), lambda i, b, h: (b, i, h, 0)),
        pl.BlockSpec((None, kv_len, None, head_dim), lambda i, b, h: (b, 0, lax.div(h, groups), 0)),
        pl.BlockSpec((None, kv_len, None, head_dim), lambda i, b, h: (b, 0, lax.div(h, groups), 0)),
    ]
    operands = [*_visit_operands(kv_visits(cfg.flags, ids, bq, bk)), q, k, v]
    if cfg.has_bias:
        in_specs.append(pl.BlockSpec((None, None, bq, kv_len), lambda i, b, h: (*_bias_block(cfg, b, h), i, 0)))
        operands.append(bias)
    in_specs += [
        pl.BlockSpec((None, bq, channels), lambda i, b, h: (b, i, 0)),
        pl.BlockSpec((None, channels, kv_len), lambda i, b, h: (b, 0, 0)),
    ]
    operands += [q_ids, kv_ids]
    return pl.pallas_call(
        functools.partial(_forward_kernel, cfg=cfg),
        grid=(nq, batch, heads),
        in_specs=in_specs,
        out_specs=[
            pl.BlockSpec((None, bq, None, head_dim), lambda i, b, h: (b, i, h, 0)),
            pl.BlockSpec((None, None, bq, 1), lambda i, b, h: (b, h, i, 0)),
        ],
        out_shape=[
            jax.ShapeDtypeStruct(q.shape, q.dtype),
            jax.ShapeDtypeStruct((batch, heads, q_len, 1), jnp.float32),
        ],
        compiler_params=_compiler_params(head_dim, stages=2),
        interpret=cfg.interpret,
        cost_estimate=_cost("forward", cfg, q, k, bias),
        name="flash_attention_fwd",
    )(*operands)


def _dq_kernel(
    index_ref, full_ref, count_ref, q_ref, k_ref, v_ref, do_ref, lse_ref, delta_ref, *refs, cfg: KernelConfig
):
    bias_ref, refs = _split_bias(cfg, refs)
    q_ids_ref, kv_ids_ref = refs[:2]
    if cfg.has_bias:
        _zeros_ref, dq_ref, dbias_ref = refs[2:]
    else:
        (dq_ref,) = refs[2:]
    bk = cfg.block_kv
    q, do, lse, delta = q_ref[...], do_ref[...], lse_ref[...], delta_ref[...]

    def visit(block, full, dq):
        cols = pl.ds(pl.multiple_of(block * bk, bk), bk)
        bias = bias_ref[:, cols] if bias_ref is not None else None
        allowed = tile_mask(cfg.flags, q_ids_ref, kv_ids_ref, kv_cols=cols)
        k, v = k_ref[cols, :], v_ref[cols, :]
        s = flash_math.scores(q, k, cfg.scale, bias, full, allowed)
        _, ds = flash_math.score_grads(s, lse, do, v, delta)
        if cfg.has_bias:
            dbias_ref[:, cols] = ds.astype(dbias_ref.dtype)
        return dq + flash_math.dot_nn(ds.astype(k.dtype), k)

    dq = _walk(index_ref, full_ref, count_ref[0], visit, jnp.zeros(q.shape, jnp.float32))
    dq_ref[...] = (dq * cfg.scale).astype(dq_ref.dtype)


def _dq(cfg: KernelConfig, q, k, v, do, lse, delta, bias, q_ids, kv_ids, visits: VisitList):
    batch, q_len, heads, head_dim = q.shape
    kv_len = k.shape[1]
    bq, bk, groups = cfg.block_q, cfg.block_kv, cfg.groups
    nq, nk = q_len // bq, kv_len // bk
    channels = q_ids.shape[-1]
    q_tile = pl.BlockSpec((None, bq, None, head_dim), lambda i, b, h: (b, i, h, 0))
    kv_full = pl.BlockSpec((None, kv_len, None, head_dim), lambda i, b, h: (b, 0, lax.div(h, groups), 0))
    row_stat = pl.BlockSpec((None, None, bq, 1), lambda i, b, h: (b, h, i, 0))
    in_specs = _row_specs(nk) + [q_tile, kv_full, kv_full, q_tile, row_stat, row_stat]
    operands = [*_visit_operands(visits), q, k, v, do, lse, delta]
    if cfg.has_bias:
        in_specs.append(pl.BlockSpec((None, None, bq, kv_len), lambda i, b, h: (*_bias_block(cfg, b, h), i, 0)))
        operands.append(bias)
    in_specs += [
        pl.BlockSpec((None, bq, channels), lambda i, b, h: (b, i, 0)),
        pl.BlockSpec((None, channels, kv_len), lambda i, b, h: (b, 0, 0)),
    ]
    operands += [q_ids, kv_ids]
    out_specs = [q_tile]
    out_shape = [jax.ShapeDtypeStruct(q.shape, q.dtype)]
    aliases = {}
    if cfg.has_bias:
        # dbias is written tile by tile; tiles never visited keep the zeros it is aliased to.
        zeros = jnp.zeros((batch, heads, q_len, kv_len), bias.dtype)
        dbias_tile = pl.BlockSpec((None, None, bq, kv_len), lambda i, b, h: (b, h, i, 0))
        in_specs.append(dbias_tile)
        operands.append(zeros)
        out_specs.append(dbias_tile)
        out_shape.append(jax.ShapeDtypeStruct(zeros.shape, zeros.dtype))
        aliases = {len(operands) - 1: 1}
    outs = pl.pallas_call(
        functools.partial(_dq_kernel, cfg=cfg),
        grid=(nq, batch, heads),
        in_specs=in_specs,
        out_specs=out_specs,
        out_shape=out_shape,
        input_output_aliases=aliases,
        compiler_params=_compiler_params(head_dim, stages=2),
        interpret=cfg.interpret,
        cost_estimate=_cost("dq", cfg, q, k, bias),
        name="flash_attention_dq",
    )(*operands)
    return outs[0], (outs[1] if cfg.has_bias else None)


def _dkv_kernel(
    index_ref, full_ref, count_ref, q_ref, k_ref, v_ref, do_ref, lse_ref, delta_ref, *refs, cfg: KernelConfig
):
    bias_ref, refs = _split_bias(cfg, refs)
    q_ids_ref, kv_ids_ref, dk_ref, dv_ref = refs
    bq = cfg.block_q
    k, v = k_ref[...], v_ref[...]

    def head(g, carry):
        def visit(block, full, carry):
            dk, dv = carry
            rows = pl.ds(pl.multiple_of(block * bq, bq), bq)
            bias = bias_ref[g if cfg.bias_per_head else 0, rows, :] if bias_ref is not None else None
            allowed = tile_mask(cfg.flags, q_ids_ref, kv_ids_ref, q_rows=rows)
            q, do = q_ref[rows, g, :], do_ref[rows, g, :]
            lse, delta = lse_ref[g, rows, :], delta_ref[g, rows, :]
            s = flash_math.scores(q, k, cfg.scale, bias, full, allowed)
            p, ds = flash_math.score_grads(s, lse, do, v, delta)
            dv = dv + flash_math.dot_tn(p, do)
            dk = dk + flash_math.dot_tn(ds, q)
            return dk, dv

        return _walk(index_ref, full_ref, count_ref[0], visit, carry)

    zeros = jnp.zeros(k.shape, jnp.float32)
    dk, dv = lax.fori_loop(0, cfg.groups, head, (zeros, zeros))
    dk_ref[...] = (dk * cfg.scale).astype(dk_ref.dtype)
    dv_ref[...] = dv.astype(dv_ref.dtype)


def _dkv(cfg: KernelConfig, q, k, v, do, lse, delta, bias, q_ids, kv_ids, visits: VisitList):
    batch, q_len, heads, head_dim = q.shape
    kv_len, kv_heads = k.shape[1], k.shape[2]
    bq, bk, groups = cfg.block_q, cfg.block_kv, cfg.groups
    nq, nk = q_len // bq, kv_len // bk
    channels = q_ids.shape[-1]

    def tokens_by_group(x):  # [B, T, H, D] -> [B, T, K, G, D]
        return x.reshape(batch, q_len, kv_heads, groups, head_dim)

    def stats_by_group(x):  # [B, H, T, 1] -> [B, K, G, T, 1]
        return x.reshape(batch, kv_heads, groups, q_len, 1)

    q_group = pl.BlockSpec((None, q_len, None, groups, head_dim), lambda j, b, kh: (b, 0, kh, 0, 0))
    stat_group = pl.BlockSpec((None, None, groups, q_len, 1), lambda j, b, kh: (b, kh, 0, 0, 0))
    kv_tile = pl.BlockSpec((None, bk, None, head_dim), lambda j, b, kh: (b, j, kh, 0))
    in_specs = _row_specs(nq) + [q_group, kv_tile, kv_tile, q_group, stat_group, stat_group]
    operands = [*_visit_operands(visits), tokens_by_group(q), k, v, tokens_by_group(do)]
    operands += [stats_by_group(lse), stats_by_group(delta)]
    if cfg.has_bias:
        bias_groups = groups if cfg.bias_per_head else 1
        bias_heads = kv_heads if cfg.bias_per_head else 1
        grouped_bias = bias.reshape(bias.shape[0], bias_heads, bias_groups, q_len, kv_len)
        in_specs.append(
            pl.BlockSpec((None, None, bias_groups, q_len, bk), lambda j, b, kh: (*_bias_block(cfg, b, kh), 0, 0, j))
        )
        operands.append(grouped_bias)
    in_specs += [
        pl.BlockSpec((None, q_len, channels), lambda j, b, kh: (b, 0, 0)),
        pl.BlockSpec((None, channels, bk), lambda j, b, kh: (b, 0, j)),
    ]
    operands += [q_ids, kv_ids]
    return pl.pallas_call(
        functools.partial(_dkv_kernel, cfg=cfg),
        grid=(nk, batch, kv_heads),
        in_specs=in_specs,
        out_specs=[kv_tile, kv_tile],
        out_shape=[jax.ShapeDtypeStruct(k.shape, k.dtype), jax.ShapeDtypeStruct(v.shape, v.dtype)],
        compiler_params=_compiler_params(head_dim, stages=1),
        interpret=cfg.interpret,
        cost_estimate=_cost("dkv", cfg, q, k, bias),
        name="flash_attention_dkv",
    )(*operands)


def backward(cfg: KernelConfig, q, k, v, bias, ids: TokenIds, out, lse, do):
    """Gradients (dq, dk, dv f[B, T, H|K, D], dbias f[B, H, Tp, Sp] or None)."""
    delta = jnp.sum(out.astype(jnp.float32) * do.astype(jnp.float32), axis=-1)  # [B, Tp, H]
    delta = jnp.transpose(delta, (0, 2, 1))[..., None]
    q_ids, kv_ids = stacked_ids(cfg.flags, ids)
    args = (cfg, q, k, v, do, lse, delta, bias, q_ids, kv_ids)
    dq, dbias = _dq(*args, kv_visits(cfg.flags, ids, cfg.block_q, cfg.block_kv))
    dk, dv = _dkv(*args, q_visits(cfg.flags, ids, cfg.block_q, cfg.block_kv))
    return dq, dk, dv, dbias
