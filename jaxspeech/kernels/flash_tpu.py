"""Flash attention for TPU (Pallas Mosaic): forward, dq and dk/dv kernels on a block-sparse grid.

Layout inside: q f[B, H, Tp, D], k/v f[B, K, Sp, D] (head-major, so a tile's last two dims are
(tokens, D)); per-row statistics f32[B, H, Tp, 1]. Visit lists arrive by scalar prefetch
(flattened i32 arrays in SMEM): the innermost grid axis walks a row's list, index maps fetch
the listed tile, and steps past the list's end repeat the last index (no new DMA) and do no work.

Grids:
  forward, dq: (B, H, NQ, NK)      innermost walks the key blocks listed for query block i;
  dk/dv:       (B, K, NK, G, NQ)   the two innermost walk the G query heads of the group and
                                   the query blocks listed for key block j.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl
from jax.experimental.pallas import tpu as pltpu

from jaxspeech.kernels import flash_math
from jaxspeech.kernels.block_masks import TokenIds, VisitList, kv_visits, q_visits, stacked_ids, tile_mask
from jaxspeech.kernels.cost import kernel_cost
from jaxspeech.kernels.flash_math import KernelConfig


def check_shapes(q_padded: int, kv_padded: int, block_q: int, block_kv: int) -> None:
    """Raises ValueError unless Mosaic can tile these blocks: key blocks are the lane axis of the
    score tile (multiples of 128), query blocks its sublane axis (multiples of 16, for bf16),
    except where one block spans the whole padded sequence."""
    if block_kv % 128 and block_kv != kv_padded:
        raise ValueError(f"flash_attention (tpu): key block {block_kv} must be a multiple of 128 (or span all keys)")
    if block_q % 16 and block_q != q_padded:
        raise ValueError(f"flash_attention (tpu): query block {block_q} must be a multiple of 16 (or span all queries)")


def _head_major(x: jax.Array) -> jax.Array:
    """[B, T, H, D] <-> [B, H, T, D]."""
    return jnp.swapaxes(x, 1, 2)


def _cost(kind: str, cfg: KernelConfig, q: jax.Array, k: jax.Array, bias: jax.Array | None) -> pl.CostEstimate:
    """``kernel_cost`` for head-major q f[B, H, Tp, D], k f[B, K, Sp, D]."""
    batch, heads, q_len, head_dim = q.shape
    return kernel_cost(
        kind,
        cfg,
        batch=batch,
        heads=heads,
        kv_heads=k.shape[1],
        q_len=q_len,
        kv_len=k.shape[2],
        head_dim=head_dim,
        itemsize=q.dtype.itemsize,
        bias_itemsize=0 if bias is None else bias.dtype.itemsize,
    )


def _flat(visits: VisitList) -> tuple[jax.Array, jax.Array, jax.Array]:
    return visits.index.reshape(-1), visits.full.reshape(-1), visits.count.reshape(-1)


def _bias_block(cfg: KernelConfig, b, h):
    return (b if cfg.bias_batched else 0), (h if cfg.bias_per_head else 0)


class _QueryMajorSpecs:
    """BlockSpecs of the (B, H, NQ, NK) grid: query tile (b, h, i), key tile = the j-th entry of
    query block i's visit list (read from the scalar-prefetched index array)."""

    def __init__(self, cfg: KernelConfig, nq: int, nk: int, head_dim: int, channels: int):
        bq, bk = cfg.block_q, cfg.block_kv

        def kv_block(b, i, j, index_ref):
            return index_ref[(b * nq + i) * nk + j]

        self.q = pl.BlockSpec((None, None, bq, head_dim), lambda b, h, i, j, *_: (b, h, i, 0))
        self.row_stat = pl.BlockSpec((None, None, bq, 1), lambda b, h, i, j, *_: (b, h, i, 0))
        self.kv = pl.BlockSpec(
            (None, None, bk, head_dim),
            lambda b, h, i, j, idx, *_: (b, lax.div(h, cfg.groups), kv_block(b, i, j, idx), 0),
        )
        self.bias = pl.BlockSpec(
            (None, None, bq, bk), lambda b, h, i, j, idx, *_: (*_bias_block(cfg, b, h), i, kv_block(b, i, j, idx))
        )
        self.score_tile = pl.BlockSpec(
            (None, None, bq, bk), lambda b, h, i, j, idx, *_: (b, h, i, kv_block(b, i, j, idx))
        )
        self.q_ids = pl.BlockSpec((None, bq, channels), lambda b, h, i, j, *_: (b, i, 0))
        self.kv_ids = pl.BlockSpec((None, channels, bk), lambda b, h, i, j, idx, *_: (b, 0, kv_block(b, i, j, idx)))


def _split_bias(cfg: KernelConfig, refs):
    return (refs[0], refs[1:]) if cfg.has_bias else (None, refs)


def _visit_steps(full_ref, count_ref, row, steps, step, visit):
    """Runs ``visit(full)`` when grid step ``step`` is inside row ``row``'s visit list."""

    @pl.when(step < count_ref[row])
    def _visit():
        visit(full_ref[row * steps + step] == 1)


def _forward_kernel(index_ref, full_ref, count_ref, q_ref, k_ref, v_ref, *refs, cfg: KernelConfig, nq: int, nk: int):
    bias_ref, refs = _split_bias(cfg, refs)
    q_ids_ref, kv_ids_ref, o_ref, lse_ref, m_ref, l_ref, acc_ref = refs
    b, qi, j = pl.program_id(0), pl.program_id(2), pl.program_id(3)

    @pl.when(j == 0)
    def _init():
        m_ref[...] = jnp.full(m_ref.shape, -jnp.inf, jnp.float32)
        l_ref[...] = jnp.zeros(l_ref.shape, jnp.float32)
        acc_ref[...] = jnp.zeros(acc_ref.shape, jnp.float32)

    def visit(full):
        bias = bias_ref[...] if bias_ref is not None else None
        allowed = tile_mask(cfg.flags, q_ids_ref, kv_ids_ref)
        s = flash_math.scores(q_ref[...], k_ref[...], cfg.scale, bias, full, allowed)
        m, l, acc = flash_math.softmax_step(m_ref[...], l_ref[...], acc_ref[...], s, v_ref[...])
        m_ref[...], l_ref[...], acc_ref[...] = m, l, acc

    _visit_steps(full_ref, count_ref, b * nq + qi, nk, j, visit)

    @pl.when(j == nk - 1)
    def _finish():
        out, lse = flash_math.finalize(m_ref[...], l_ref[...], acc_ref[...])
        o_ref[...] = out.astype(o_ref.dtype)
        lse_ref[...] = lse


def forward(cfg: KernelConfig, q, k, v, bias, ids: TokenIds) -> tuple[jax.Array, jax.Array]:
    """q f[B, Tp, H, D], k/v f[B, Sp, K, D] -> (out f[B, Tp, H, D], lse f32[B, H, Tp, 1])."""
    q, k, v = _head_major(q), _head_major(k), _head_major(v)
    batch, heads, q_len, head_dim = q.shape
    bq, bk = cfg.block_q, cfg.block_kv
    nq, nk = q_len // bq, k.shape[2] // bk
    q_ids, kv_ids = stacked_ids(cfg.flags, ids)
    specs = _QueryMajorSpecs(cfg, nq, nk, head_dim, q_ids.shape[-1])
    in_specs, operands = [specs.q, specs.kv, specs.kv], [q, k, v]
    if cfg.has_bias:
        in_specs.append(specs.bias)
        operands.append(bias)
    in_specs += [specs.q_ids, specs.kv_ids]
    operands += [q_ids, kv_ids]
    grid_spec = pltpu.PrefetchScalarGridSpec(
        num_scalar_prefetch=3,
        grid=(batch, heads, nq, nk),
        in_specs=in_specs,
        out_specs=[specs.q, specs.row_stat],
        scratch_shapes=[
            pltpu.VMEM((bq, 1), jnp.float32),
            pltpu.VMEM((bq, 1), jnp.float32),
            pltpu.VMEM((bq, head_dim), jnp.float32),
        ],
    )
    out, lse = pl.pallas_call(
        functools.partial(_forward_kernel, cfg=cfg, nq=nq, nk=nk),
        grid_spec=grid_spec,
        out_shape=[
            jax.ShapeDtypeStruct(q.shape, q.dtype),
            jax.ShapeDtypeStruct((batch, heads, q_len, 1), jnp.float32),
        ],
        compiler_params=pltpu.CompilerParams(dimension_semantics=("parallel", "parallel", "parallel", "arbitrary")),
        interpret=cfg.interpret,
        cost_estimate=_cost("forward", cfg, q, k, bias),
        name="flash_attention_fwd",
    )(*_flat(kv_visits(cfg.flags, ids, bq, bk)), *operands)
    return _head_major(out), lse


def _dq_kernel(
    index_ref, full_ref, count_ref, q_ref, k_ref, v_ref, do_ref, lse_ref, delta_ref, *refs,
    cfg: KernelConfig, nq: int, nk: int,
):  # fmt: skip
    bias_ref, refs = _split_bias(cfg, refs)
    q_ids_ref, kv_ids_ref = refs[:2]
    if cfg.has_bias:
        _zeros_ref, dq_ref, dbias_ref, dq_acc_ref = refs[2:]
    else:
        dq_ref, dq_acc_ref = refs[2:]
    b, qi, j = pl.program_id(0), pl.program_id(2), pl.program_id(3)
    row = b * nq + qi

    @pl.when(j == 0)
    def _init():
        dq_acc_ref[...] = jnp.zeros(dq_acc_ref.shape, jnp.float32)
        if cfg.has_bias:
            # A row with nothing to visit still owns one output tile, which must read as zero.
            @pl.when(count_ref[row] == 0)
            def _zero_unvisited():
                dbias_ref[...] = jnp.zeros(dbias_ref.shape, dbias_ref.dtype)

    def visit(full):
        bias = bias_ref[...] if bias_ref is not None else None
        k = k_ref[...]
        s = flash_math.scores(q_ref[...], k, cfg.scale, bias, full, tile_mask(cfg.flags, q_ids_ref, kv_ids_ref))
        _, ds = flash_math.score_grads(s, lse_ref[...], do_ref[...], v_ref[...], delta_ref[...])
        dq_acc_ref[...] += flash_math.dot_nn(ds.astype(k.dtype), k)
        if cfg.has_bias:
            dbias_ref[...] = ds.astype(dbias_ref.dtype)

    _visit_steps(full_ref, count_ref, row, nk, j, visit)

    @pl.when(j == nk - 1)
    def _finish():
        dq_ref[...] = (dq_acc_ref[...] * cfg.scale).astype(dq_ref.dtype)


def _dkv_kernel(
    index_ref, full_ref, count_ref, q_ref, k_ref, v_ref, do_ref, lse_ref, delta_ref, *refs,
    cfg: KernelConfig, nq: int, nk: int,
):  # fmt: skip
    bias_ref, refs = _split_bias(cfg, refs)
    q_ids_ref, kv_ids_ref, dk_ref, dv_ref, dk_acc_ref, dv_acc_ref = refs
    b, kj, g, i = pl.program_id(0), pl.program_id(2), pl.program_id(3), pl.program_id(4)

    @pl.when((g == 0) & (i == 0))
    def _init():
        dk_acc_ref[...] = jnp.zeros(dk_acc_ref.shape, jnp.float32)
        dv_acc_ref[...] = jnp.zeros(dv_acc_ref.shape, jnp.float32)

    def visit(full):
        bias = bias_ref[...] if bias_ref is not None else None
        q, do = q_ref[...], do_ref[...]
        s = flash_math.scores(q, k_ref[...], cfg.scale, bias, full, tile_mask(cfg.flags, q_ids_ref, kv_ids_ref))
        p, ds = flash_math.score_grads(s, lse_ref[...], do, v_ref[...], delta_ref[...])
        dv_acc_ref[...] += flash_math.dot_tn(p, do)
        dk_acc_ref[...] += flash_math.dot_tn(ds, q)

    _visit_steps(full_ref, count_ref, b * nk + kj, nq, i, visit)

    @pl.when((g == cfg.groups - 1) & (i == nq - 1))
    def _finish():
        dk_ref[...] = (dk_acc_ref[...] * cfg.scale).astype(dk_ref.dtype)
        dv_ref[...] = dv_acc_ref[...].astype(dv_ref.dtype)


def _dq(cfg: KernelConfig, q, k, v, do, lse, delta, bias, q_ids, kv_ids, visits: VisitList):
    batch, heads, q_len, head_dim = q.shape
    bq, bk = cfg.block_q, cfg.block_kv
    nq, nk = q_len // bq, k.shape[2] // bk
    specs = _QueryMajorSpecs(cfg, nq, nk, head_dim, q_ids.shape[-1])
    in_specs = [specs.q, specs.kv, specs.kv, specs.q, specs.row_stat, specs.row_stat]
    operands = [q, k, v, do, lse, delta]
    if cfg.has_bias:
        in_specs.append(specs.bias)
        operands.append(bias)
    in_specs += [specs.q_ids, specs.kv_ids]
    operands += [q_ids, kv_ids]
    out_specs = [specs.q]
    out_shape = [jax.ShapeDtypeStruct(q.shape, q.dtype)]
    aliases = {}
    if cfg.has_bias:
        # dbias is written tile by tile; tiles never visited keep the zeros it is aliased to.
        zeros = jnp.zeros((batch, heads, q_len, k.shape[2]), bias.dtype)
        in_specs.append(pl.BlockSpec(memory_space=pl.ANY))
        operands.append(zeros)
        out_specs.append(specs.score_tile)
        out_shape.append(jax.ShapeDtypeStruct(zeros.shape, zeros.dtype))
        aliases = {3 + len(operands) - 1: 1}
    grid_spec = pltpu.PrefetchScalarGridSpec(
        num_scalar_prefetch=3,
        grid=(batch, heads, nq, nk),
        in_specs=in_specs,
        out_specs=out_specs,
        scratch_shapes=[pltpu.VMEM((bq, head_dim), jnp.float32)],
    )
    outs = pl.pallas_call(
        functools.partial(_dq_kernel, cfg=cfg, nq=nq, nk=nk),
        grid_spec=grid_spec,
        out_shape=out_shape,
        input_output_aliases=aliases,
        compiler_params=pltpu.CompilerParams(dimension_semantics=("parallel", "parallel", "parallel", "arbitrary")),
        interpret=cfg.interpret,
        cost_estimate=_cost("dq", cfg, q, k, bias),
        name="flash_attention_dq",
    )(*_flat(visits), *operands)
    return outs[0], (outs[1] if cfg.has_bias else None)


def _dkv(cfg: KernelConfig, q, k, v, do, lse, delta, bias, q_ids, kv_ids, visits: VisitList):
    batch, heads, q_len, head_dim = q.shape
    kv_heads, kv_len = k.shape[1], k.shape[2]
    bq, bk, groups = cfg.block_q, cfg.block_kv, cfg.groups
    nq, nk = q_len // bq, kv_len // bk

    def q_block(b, j, i, index_ref):
        return index_ref[(b * nk + j) * nq + i]

    def q_tile(b, kh, j, g, i, idx, *_):
        return (b, kh * groups + g, q_block(b, j, i, idx), 0)

    def kv_tile(b, kh, j, g, i, *_):
        return (b, kh, j, 0)

    def bias_tile(b, kh, j, g, i, idx, *_):
        return (*_bias_block(cfg, b, kh * groups + g), q_block(b, j, i, idx), j)

    in_specs = [
        pl.BlockSpec((None, None, bq, head_dim), q_tile),
        pl.BlockSpec((None, None, bk, head_dim), kv_tile),
        pl.BlockSpec((None, None, bk, head_dim), kv_tile),
        pl.BlockSpec((None, None, bq, head_dim), q_tile),
        pl.BlockSpec((None, None, bq, 1), q_tile),
        pl.BlockSpec((None, None, bq, 1), q_tile),
    ]
    operands = [q, k, v, do, lse, delta]
    if cfg.has_bias:
        in_specs.append(pl.BlockSpec((None, None, bq, bk), bias_tile))
        operands.append(bias)
    channels = q_ids.shape[-1]
    in_specs += [
        pl.BlockSpec((None, bq, channels), lambda b, kh, j, g, i, idx, *_: (b, q_block(b, j, i, idx), 0)),
        pl.BlockSpec((None, channels, bk), lambda b, kh, j, g, i, *_: (b, 0, j)),
    ]
    operands += [q_ids, kv_ids]
    grid_spec = pltpu.PrefetchScalarGridSpec(
        num_scalar_prefetch=3,
        grid=(batch, kv_heads, nk, groups, nq),
        in_specs=in_specs,
        out_specs=[pl.BlockSpec((None, None, bk, head_dim), kv_tile)] * 2,
        scratch_shapes=[pltpu.VMEM((bk, head_dim), jnp.float32)] * 2,
    )
    semantics = ("parallel", "parallel", "parallel", "arbitrary", "arbitrary")
    return pl.pallas_call(
        functools.partial(_dkv_kernel, cfg=cfg, nq=nq, nk=nk),
        grid_spec=grid_spec,
        out_shape=[jax.ShapeDtypeStruct(k.shape, k.dtype), jax.ShapeDtypeStruct(v.shape, v.dtype)],
        compiler_params=pltpu.CompilerParams(dimension_semantics=semantics),
        interpret=cfg.interpret,
        cost_estimate=_cost("dkv", cfg, q, k, bias),
        name="flash_attention_dkv",
    )(*_flat(visits), *operands)


def backward(cfg: KernelConfig, q, k, v, bias, ids: TokenIds, out, lse, do):
    """Gradients (dq, dk, dv in the [B, T, H, D] layout, dbias f[B, H, Tp, Sp] or None)."""
    q, k, v, out, do = map(_head_major, (q, k, v, out, do))
    delta = jnp.sum(out.astype(jnp.float32) * do.astype(jnp.float32), axis=-1, keepdims=True)
    q_ids, kv_ids = stacked_ids(cfg.flags, ids)
    args = (cfg, q, k, v, do, lse, delta, bias, q_ids, kv_ids)
    dq, dbias = _dq(*args, kv_visits(cfg.flags, ids, cfg.block_q, cfg.block_kv))
    dk, dv = _dkv(*args, q_visits(cfg.flags, ids, cfg.block_q, cfg.block_kv))
    return _head_major(dq), _head_major(dk), _head_major(dv), dbias
