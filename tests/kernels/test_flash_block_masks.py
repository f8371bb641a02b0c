"""Block maps against the dense mask: SKIP only where a tile is empty, FULL only where it is
complete, exact on the usual masks; the in-kernel element mask equals ``dense_mask``."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxspeech.kernels import block_masks
from jaxspeech.kernels.block_masks import FULL, PARTIAL, SKIP
from jaxspeech.kernels.masks import MaskSpec, dense_mask
from jaxspeech.testing.flash_cases import packed_segments, spans

B, T, S = 2, 40, 40
SEG = packed_segments([[13, 20, 7], [9, 24]], T)
BIDIR = spans([[(0, 12, 1)], [(3, 9, 1), (20, 26, 2)]], T)
SHIFTED = jnp.broadcast_to(jnp.arange(T, dtype=jnp.int32) * 3 + 5, (B, T))

MASKS = {
    "none": None,
    "causal": MaskSpec(causal=True),
    "key_lengths": MaskSpec(kv_lengths=jnp.array([40, 23])),
    "segments": MaskSpec(q_segment_ids=SEG, kv_segment_ids=SEG),
    "prefix_lm": MaskSpec(causal=True, q_bidir_ids=BIDIR, kv_bidir_ids=BIDIR, kv_lengths=jnp.array([37, 31])),
    "local_window": MaskSpec(window_left=9, window_right=4),
    "sliding_causal": MaskSpec(causal=True, window_left=11),
    "chunked": MaskSpec(chunk_size=8, chunk_left=1),
    "chunked_all_left": MaskSpec(chunk_size=12),
    "packed_causal_window": MaskSpec(causal=True, window_left=10, q_segment_ids=SEG, kv_segment_ids=SEG),
    "explicit_positions": MaskSpec(causal=True, window_left=40, q_positions=SHIFTED, kv_positions=SHIFTED),
}


def _map_and_dense(spec, block_q, block_kv):
    q_padded, kv_padded = -(-T // block_q) * block_q, -(-S // block_kv) * block_kv
    flags = block_masks.mask_flags(spec, padded_keys=kv_padded != S)
    ids = block_masks.token_ids(spec, flags, B, T, S, q_padded, kv_padded)
    states = np.asarray(block_masks.block_states(flags, ids, block_q, block_kv))
    dense = np.zeros((B, q_padded, kv_padded), bool)
    dense[:, :T, :S] = np.asarray(dense_mask(spec, B, T, S))
    tiles = dense.reshape(B, q_padded // block_q, block_q, kv_padded // block_kv, block_kv)
    return flags, ids, states, tiles.any(axis=(2, 4)), tiles.all(axis=(2, 4))


@pytest.mark.parametrize("name", MASKS)
@pytest.mark.parametrize("blocks", [(16, 16), (8, 16), (16, 8)])
def test_states_match_dense_mask_exactly(name, blocks):
    """On these masks the block-level bounds are tight: SKIP <=> empty tile, FULL <=> complete tile."""
    _, _, states, any_allowed, all_allowed = _map_and_dense(MASKS[name], *blocks)
    np.testing.assert_array_equal(states == SKIP, ~any_allowed)
    if name != "prefix_lm":
        np.testing.assert_array_equal(states == FULL, all_allowed)
    else:
        # Prefix-LM spans are bounded by id ranges, so FULL may be under-claimed but never wrong.
        assert not np.any((states == FULL) & ~all_allowed)


def test_states_are_conservative_for_scattered_ids():
    """Non-contiguous segment and span ids: never SKIP a tile with an allowed pair, never FULL an incomplete one."""
    rng = np.random.default_rng(0)
    seg = jnp.asarray(rng.integers(0, 3, (B, T)), jnp.int32)
    bidir = jnp.asarray(rng.integers(0, 3, (B, T)), jnp.int32)
    positions = jnp.asarray(np.sort(rng.integers(0, 60, (B, T)), axis=1), jnp.int32)
    spec = MaskSpec(
        causal=True, q_segment_ids=seg, kv_segment_ids=seg, q_bidir_ids=bidir, kv_bidir_ids=bidir,
        q_positions=positions, kv_positions=positions, window_left=20, chunk_size=7, chunk_left=2,
    )  # fmt: skip
    _, _, states, any_allowed, all_allowed = _map_and_dense(spec, 8, 8)
    assert not np.any((states == SKIP) & any_allowed)
    assert not np.any((states == FULL) & ~all_allowed)
    assert np.any(states == SKIP) and np.any(states == PARTIAL)


@pytest.mark.parametrize("name", MASKS)
def test_element_mask_equals_dense_mask(name):
    """The element mask a kernel evaluates on partial tiles, applied to whole sequences."""
    spec = MASKS[name]
    flags, ids, *_ = _map_and_dense(spec, 8, 8)
    q = {c: ids.q[c][:, :T, None] for c in ids.q}
    kv = {c: ids.kv[c][:, None, :S] for c in ids.kv}
    allowed = block_masks.element_mask(flags, q, kv)
    allowed = np.ones((B, T, S), bool) if allowed is None else np.asarray(allowed)
    np.testing.assert_array_equal(allowed, np.asarray(dense_mask(spec, B, T, S)))


def test_visit_list_compacts_in_order_and_repeats_the_last_index():
    states = jnp.asarray([[[SKIP, FULL, SKIP, PARTIAL], [SKIP] * 4, [PARTIAL, FULL, FULL, FULL]]], jnp.int32)
    visits = jax.jit(block_masks.visit_list)(states)
    np.testing.assert_array_equal(visits.count, [[2, 0, 4]])
    np.testing.assert_array_equal(visits.index, [[[1, 3, 3, 3], [0, 0, 0, 0], [0, 1, 2, 3]]])
    np.testing.assert_array_equal(visits.full[0, 0, :2], [1, 0])
    np.testing.assert_array_equal(visits.full[0, 2], [0, 1, 1, 1])


def test_causal_visits_skip_the_upper_triangle():
    spec = MaskSpec(causal=True)
    flags = block_masks.mask_flags(spec, padded_keys=False)

    @jax.jit
    def visits():
        ids = block_masks.token_ids(spec, flags, 1, 64, 64, 64, 64)
        return block_masks.kv_visits(flags, ids, 16, 16), block_masks.q_visits(flags, ids, 16, 16)

    kv, q = visits()
    np.testing.assert_array_equal(kv.count, [[1, 2, 3, 4]])
    np.testing.assert_array_equal(q.count, [[4, 3, 2, 1]])
    np.testing.assert_array_equal(kv.full[0, 3], [1, 1, 1, 0])  # only the diagonal tile needs the mask


def test_bad_mask_shapes_name_the_field():
    with pytest.raises(ValueError, match="kv_segment_ids"):
        block_masks.validate_mask(MaskSpec(kv_segment_ids=jnp.ones((B, S + 1), jnp.int32)), B, T, S)
    with pytest.raises(ValueError, match="kv_lengths"):
        block_masks.validate_mask(MaskSpec(kv_lengths=jnp.ones((B, 1), jnp.int32)), B, T, S)
    with pytest.raises(ValueError, match="bidir"):
        block_masks.validate_mask(MaskSpec(causal=True, q_bidir_ids=BIDIR), B, T, S)
