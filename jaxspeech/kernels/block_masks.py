"""From a ``MaskSpec`` to what a flash-attention kernel needs: per-token id channels, a per-block
map of which (query block, key block) tiles can hold an allowed pair, and the element mask that
partial tiles evaluate inside the kernel.

A tile is in one of three states: ``SKIP`` (provably no allowed pair: never visited), ``FULL``
(provably every pair allowed: visited without an element mask) or ``PARTIAL`` (visited with the
element mask). The states come from block-level min/max of the token ids, so they are
conservative: ``SKIP`` and ``FULL`` are only claimed when they are certain.

Channels (i32 per token, padded tokens carry segment 0):
  * ``segment``: segment id, 0 = padding (key lengths and internal padding are folded in here);
  * ``position``: for causal and local-window masks;
  * ``bidir``: prefix-LM bidirectional span ids (causal masks only);
  * ``chunk``: ``position // chunk_size``, precomputed so kernels never divide.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import pallas as pl

from jaxspeech.kernels.masks import MaskSpec

SKIP, PARTIAL, FULL = 0, 1, 2
SEGMENT, POSITION, BIDIR, CHUNK = "segment", "position", "bidir", "chunk"
# Sentinel for empty ranges; small enough that differences of two sentinels fit in int32.
_BIG = 2**29


@dataclasses.dataclass(frozen=True)
class MaskFlags:
    """Static description of the element checks a partial tile must evaluate."""

    segments: bool = False  # compare segment ids (user segments, key lengths or key padding)
    causal: bool = False
    bidir: bool = False  # causal pairs may be re-allowed inside a shared bidirectional span
    window_left: int | None = None
    window_right: int | None = None
    chunks: bool = False
    chunk_left: int | None = None

    @property
    def checks_elements(self) -> bool:
        return (
            self.segments
            or self.causal
            or self.window_left is not None
            or (self.window_right is not None or self.chunks)
        )

    @property
    def channels(self) -> tuple[str, ...]:
        """Channel names in the order kernels receive them; ``segment`` is always first."""
        names = [SEGMENT]
        if self.causal or self.window_left is not None or self.window_right is not None:
            names.append(POSITION)
        if self.bidir:
            names.append(BIDIR)
        if self.chunks:
            names.append(CHUNK)
        return tuple(names)


@dataclasses.dataclass(frozen=True)
class TokenIds:
    """Per-token channels: ``q[name]`` i32[B, Tp], ``kv[name]`` i32[B, Sp] (padded lengths)."""

    q: Mapping[str, jax.Array]
    kv: Mapping[str, jax.Array]


jax.tree_util.register_dataclass(TokenIds, data_fields=["q", "kv"], meta_fields=[])


def _check_shape(name: str, array: jax.Array | None, expected: tuple[int, ...]) -> None:
    if array is not None and tuple(array.shape) != expected:
        raise ValueError(f"MaskSpec.{name} has shape {tuple(array.shape)}; expected {expected}")


def validate_mask(spec: MaskSpec | None, batch: int, q_len: int, kv_len: int) -> None:
    """Raises ValueError naming the MaskSpec field whose shape or setting is inconsistent."""
    if spec is None:
        return
    for name in ("q_segment_ids", "q_positions", "q_bidir_ids"):
        _check_shape(name, getattr(spec, name), (batch, q_len))
    for name in ("kv_segment_ids", "kv_positions", "kv_bidir_ids"):
        _check_shape(name, getattr(spec, name), (batch, kv_len))
    _check_shape("kv_lengths", spec.kv_lengths, (batch,))
    if (spec.q_bidir_ids is None) != (spec.kv_bidir_ids is None):
        raise ValueError("MaskSpec.q_bidir_ids and kv_bidir_ids must be given together")
    if spec.chunk_size is not None and spec.chunk_size <= 0:
        raise ValueError(f"MaskSpec.chunk_size must be positive, got {spec.chunk_size}")


def mask_flags(spec: MaskSpec | None, padded_keys: bool) -> MaskFlags:
    """Static checks for ``spec``; ``padded_keys`` when the kernel pads the key axis."""
    if spec is None:
        return MaskFlags(segments=padded_keys)
    has_segments = spec.q_segment_ids is not None or spec.kv_segment_ids is not None
    return MaskFlags(
        segments=has_segments or spec.kv_lengths is not None or padded_keys,
        causal=spec.causal,
        bidir=spec.causal and spec.q_bidir_ids is not None,
        window_left=spec.window_left,
        window_right=spec.window_right,
        chunks=spec.chunk_size is not None,
        chunk_left=spec.chunk_left if spec.chunk_size is not None else None,
    )


def _pad(x: jax.Array, length: int) -> jax.Array:
    return jnp.pad(x.astype(jnp.int32), ((0, 0), (0, length - x.shape[1])))


def token_ids(
    spec: MaskSpec | None, flags: MaskFlags, batch: int, q_len: int, kv_len: int, q_padded: int, kv_padded: int
) -> TokenIds:
    """Channels of ``flags`` for each query/key token, padded to ``q_padded`` / ``kv_padded``."""
    spec = spec or MaskSpec()
    ones_q, ones_kv = jnp.ones((batch, q_len), jnp.int32), jnp.ones((batch, kv_len), jnp.int32)
    q_seg = spec.q_segment_ids if spec.q_segment_ids is not None else ones_q
    kv_seg = spec.kv_segment_ids if spec.kv_segment_ids is not None else ones_kv
    if spec.kv_lengths is not None:
        kv_seg = jnp.where(jnp.arange(kv_len)[None, :] < spec.kv_lengths[:, None], kv_seg, 0)
    q = {SEGMENT: q_seg}
    kv = {SEGMENT: kv_seg}
    arange_q = jnp.broadcast_to(jnp.arange(q_len, dtype=jnp.int32), (batch, q_len))
    arange_kv = jnp.broadcast_to(jnp.arange(kv_len, dtype=jnp.int32), (batch, kv_len))
    q_pos = spec.q_positions if spec.q_positions is not None else arange_q
    kv_pos = spec.kv_positions if spec.kv_positions is not None else arange_kv
    channels = flags.channels
    if POSITION in channels:
        q[POSITION], kv[POSITION] = q_pos, kv_pos
    if BIDIR in channels:
        q[BIDIR], kv[BIDIR] = spec.q_bidir_ids, spec.kv_bidir_ids
    if CHUNK in channels:
        q[CHUNK], kv[CHUNK] = q_pos // spec.chunk_size, kv_pos // spec.chunk_size
    return TokenIds(
        q={name: _pad(x, q_padded) for name, x in q.items()},
        kv={name: _pad(x, kv_padded) for name, x in kv.items()},
    )


def element_mask(flags: MaskFlags, q: Mapping[str, jax.Array], kv: Mapping[str, jax.Array]) -> jax.Array | None:
    """bool[bq, bk] from q channels i32[bq, 1] and kv channels i32[1, bk]; None if no check applies.

    Runs inside kernels on partial tiles; must agree with ``jaxspeech.kernels.masks.dense_mask``.
    """
    allowed = None

    def conjoin(term):
        nonlocal allowed
        allowed = term if allowed is None else allowed & term

    if flags.segments:
        conjoin((q[SEGMENT] == kv[SEGMENT]) & (q[SEGMENT] != 0))
    if flags.causal:
        causal_ok = kv[POSITION] <= q[POSITION]
        if flags.bidir:
            causal_ok = causal_ok | ((q[BIDIR] == kv[BIDIR]) & (q[BIDIR] != 0))
        conjoin(causal_ok)
    if flags.window_left is not None:
        conjoin(q[POSITION] - kv[POSITION] <= flags.window_left)
    if flags.window_right is not None:
        conjoin(kv[POSITION] - q[POSITION] <= flags.window_right)
    if flags.chunks:
        delta = q[CHUNK] - kv[CHUNK]
        conjoin(delta >= 0)
        if flags.chunk_left is not None:
            conjoin(delta <= flags.chunk_left)
    return allowed


def stacked_ids(flags: MaskFlags, ids: TokenIds) -> tuple[jax.Array, jax.Array]:
    """(q_ids i32[B, Tp, C], kv_ids i32[B, C, Sp]) in ``flags.channels`` order: a query tile reads
    its channels as columns, a key tile as rows, so the element mask needs no transpose."""
    channels = flags.channels
    return jnp.stack([ids.q[c] for c in channels], axis=-1), jnp.stack([ids.kv[c] for c in channels], axis=1)


def tile_mask(
    flags: MaskFlags, q_ids_ref, kv_ids_ref, q_rows=slice(None), kv_cols=slice(None)
) -> Callable[[], jax.Array] | None:
    """A thunk building one tile's element mask bool[bq, bk] from the stacked id refs inside a
    kernel (None when ``flags`` checks nothing). ``q_rows`` / ``kv_cols`` select the tile when
    the refs hold more than one block."""
    if not flags.checks_elements:
        return None

    def build():
        q, kv = {}, {}
        for c, name in enumerate(flags.channels):
            if name == SEGMENT and not flags.segments:
                continue
            q[name] = q_ids_ref[q_rows, pl.ds(c, 1)]
            kv[name] = kv_ids_ref[pl.ds(c, 1), kv_cols]
        return element_mask(flags, q, kv)

    return build


@dataclasses.dataclass(frozen=True)
class _BlockRange:
    """Per-block min/max of one channel over live (segment != 0) tokens; empty blocks give min > max."""

    low: jax.Array  # i32[B, N]
    high: jax.Array  # i32[B, N]


def _block_range(values: jax.Array, live: jax.Array, block: int, xp=jnp) -> _BlockRange:
    batch, length = values.shape
    values = values.reshape(batch, length // block, block)
    live = live.reshape(batch, length // block, block)
    return _BlockRange(
        low=xp.min(xp.where(live, values, _BIG), axis=-1),
        high=xp.max(xp.where(live, values, -_BIG), axis=-1),
    )


def _uniform(values: jax.Array, block: int, xp=jnp) -> jax.Array:
    """bool[B, N]: every token of the block has the same non-zero value."""
    batch, length = values.shape
    values = values.reshape(batch, length // block, block)
    return xp.all(values == values[..., :1], axis=-1) & (values[..., 0] != 0)


def _pairwise(q: jax.Array, kv: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Broadcasts per-block q values i32[B, NQ] and kv values i32[B, NK] to [B, NQ, NK]."""
    return q[:, :, None], kv[:, None, :]


def block_states(flags: MaskFlags, ids: TokenIds, block_q: int, block_kv: int, xp=jnp) -> jax.Array:
    """i32[B, NQ, NK] of SKIP / PARTIAL / FULL for tiles of ``block_q`` x ``block_kv`` tokens
    (``xp``: ``jnp``, or ``np`` for ids known on the host)."""
    q_live, kv_live = ids.q[SEGMENT] != 0, ids.kv[SEGMENT] != 0

    def ranges(name, q_mask=q_live, kv_mask=kv_live):
        q_range = _block_range(ids.q[name], q_mask, block_q, xp)
        kv_range = _block_range(ids.kv[name], kv_mask, block_kv, xp)
        q_low, kv_low = _pairwise(q_range.low, kv_range.low)
        q_high, kv_high = _pairwise(q_range.high, kv_range.high)
        return q_low, q_high, kv_low, kv_high

    def same_uniform(name):
        q_uniform, kv_uniform = _pairwise(_uniform(ids.q[name], block_q, xp), _uniform(ids.kv[name], block_kv, xp))
        q_first, kv_first = _pairwise(ids.q[name][:, ::block_q], ids.kv[name][:, ::block_kv])
        return q_uniform & kv_uniform & (q_first == kv_first)

    q_low, q_high, kv_low, kv_high = ranges(SEGMENT)
    possible = (q_low <= kv_high) & (kv_low <= q_high)
    full = same_uniform(SEGMENT)
    if POSITION in flags.channels:
        q_low, q_high, kv_low, kv_high = ranges(POSITION)
        if flags.causal:
            causal_possible, causal_full = kv_low <= q_high, kv_high <= q_low
            if flags.bidir:
                # Only non-zero span ids re-allow a pair; blocks without one have an empty range.
                bq_low, bq_high, bkv_low, bkv_high = ranges(
                    BIDIR, q_live & (ids.q[BIDIR] != 0), kv_live & (ids.kv[BIDIR] != 0)
                )
                spans_meet = (bq_low <= bkv_high) & (bkv_low <= bq_high)
                causal_possible |= spans_meet
                causal_full |= same_uniform(BIDIR)
            possible &= causal_possible
            full &= causal_full
        if flags.window_left is not None:
            possible &= q_low - kv_high <= flags.window_left
            full &= q_high - kv_low <= flags.window_left
        if flags.window_right is not None:
            possible &= kv_low - q_high <= flags.window_right
            full &= kv_high - q_low <= flags.window_right
    if flags.chunks:
        q_low, q_high, kv_low, kv_high = ranges(CHUNK)
        possible &= q_high - kv_low >= 0
        full &= q_low - kv_high >= 0
        if flags.chunk_left is not None:
            possible &= q_low - kv_high <= flags.chunk_left
            full &= q_high - kv_low <= flags.chunk_left
    return xp.where(possible, xp.where(full, FULL, PARTIAL), SKIP).astype(xp.int32)


@dataclasses.dataclass(frozen=True)
class VisitList:
    """Which tiles each row of blocks visits, in increasing order: for row r, entries
    ``index[..., r, :count[..., r]]`` with ``full`` telling whether the element mask can be skipped.
    Entries past ``count`` repeat the last visited index (0 if none) so that a pipelined kernel
    that steps past the end re-uses the block already in memory instead of fetching another.
    """

    index: jax.Array  # i32[B, R, N]
    full: jax.Array  # i32[B, R, N]: 1 when the tile is FULL
    count: jax.Array  # i32[B, R]


jax.tree_util.register_dataclass(VisitList, data_fields=["index", "full", "count"], meta_fields=[])


def visit_list(states: jax.Array) -> VisitList:
    """Compacts states i32[B, R, N] (rows = the blocks a kernel program owns) into a VisitList."""
    order = jnp.argsort(states == SKIP, axis=-1, stable=True).astype(jnp.int32)
    count = jnp.sum(states != SKIP, axis=-1).astype(jnp.int32)
    last = jnp.take_along_axis(order, jnp.maximum(count - 1, 0)[..., None], axis=-1)
    last = jnp.where(count[..., None] > 0, last, 0)
    steps = jnp.arange(states.shape[-1], dtype=jnp.int32).reshape(1, 1, -1)
    index = jnp.where(steps < count[..., None], order, last)
    full = (jnp.take_along_axis(states, index, axis=-1) == FULL).astype(jnp.int32)
    return VisitList(index=index, full=full, count=count)


def kv_visits(flags: MaskFlags, ids: TokenIds, block_q: int, block_kv: int) -> VisitList:
    """For each query block, the key blocks to visit (forward and dq kernels)."""
    return visit_list(block_states(flags, ids, block_q, block_kv))


def q_visits(flags: MaskFlags, ids: TokenIds, block_q: int, block_kv: int) -> VisitList:
    """For each key block, the query blocks to visit (dk/dv kernel)."""
    return visit_list(jnp.swapaxes(block_states(flags, ids, block_q, block_kv), 1, 2))


def static_tile_count(
    spec: MaskSpec | None,
    flags: MaskFlags,
    q_len: int,
    kv_len: int,
    q_padded: int,
    kv_padded: int,
    block_q: int,
    block_kv: int,
) -> int:
    """Tiles of ``block_q`` x ``block_kv`` that one (example, head) visits as far as the mask's
    static structure tells: internal padding, and causality, windows and chunks over default
    positions. What only the arrays tell (segment ids, key lengths, explicit positions,
    bidirectional spans) is unknown at trace time: segment ids and key lengths can only skip
    more tiles, bidirectional spans re-allow a few above the diagonal (not counted), and explicit
    positions make every tile count. Kernels declare their cost from this count."""
    positional = spec is not None and spec.q_positions is None and spec.kv_positions is None
    known = MaskFlags(
        segments=True,
        causal=flags.causal and positional,
        window_left=flags.window_left if positional else None,
        window_right=flags.window_right if positional else None,
        chunks=flags.chunks and positional,
        chunk_left=flags.chunk_left if positional else None,
    )

    def channels(length: int, padded: int) -> dict[str, np.ndarray]:
        positions = np.arange(padded, dtype=np.int64)[None]
        ids = {SEGMENT: (positions < length).astype(np.int64), POSITION: positions}
        if known.chunks:
            ids[CHUNK] = positions // spec.chunk_size
        return ids

    ids = TokenIds(q=channels(q_len, q_padded), kv=channels(kv_len, kv_padded))
    return int(np.sum(block_states(known, ids, block_q, block_kv, xp=np) != SKIP))
