"""Skipped tiles are not computed: NaNs placed in keys/values (or queries) that the mask hides
from some rows must not reach those rows. A kernel that computed a masked tile and discarded it
would still propagate them (0 * NaN = NaN in p @ v and in dO @ v^T), so these tests fail unless
the forward, dq and dk/dv kernels all skip the tiles the block map marks SKIP.

The shapes and mask structures equal those of parity cases, so the compiled programs are shared.
"""

import jax.numpy as jnp
import numpy as np
import pytest

from jaxspeech.kernels.masks import MaskSpec
from jaxspeech.testing.flash_cases import SMALL_BLOCKS, flash_vjp, packed_segments, random_inputs


def _run(backend, q, k, v, do, mask):
    out, (dq, dk, dv, _) = flash_vjp(q, k, v, None, do, mask, backend=backend, block_sizes=SMALL_BLOCKS)
    return {"out": np.asarray(out), "dq": np.asarray(dq), "dk": np.asarray(dk), "dv": np.asarray(dv)}


def _assert_untouched(poisoned, clean, names, rows):
    for name in names:
        assert np.all(np.isfinite(poisoned[name][:, rows])), f"{name}[:, {rows}] saw a skipped tile"
        np.testing.assert_array_equal(poisoned[name][:, rows], clean[name][:, rows])


@pytest.mark.parametrize("backend", ["gpu", "tpu"])
def test_block_diagonal_segments_skip_off_diagonal_tiles(backend):
    """Segments aligned with the 16-token blocks: tile (i, j) is visited only when i == j."""
    seg = packed_segments([[16, 16, 8], [16, 16, 8]], 40)
    mask = MaskSpec(q_segment_ids=seg, kv_segment_ids=seg)
    q, k, v, _, do = random_inputs(2, 2, 40, 40, 4, 1, 16)
    clean = _run(backend, q, k, v, do, mask)
    poisoned = _run(backend, q, k.at[:, 32:].set(jnp.nan), v.at[:, 32:].set(jnp.nan), do, mask)
    # Rows of the poisoned segment do see NaN, so the poison is live ...
    assert np.all(np.isnan(poisoned["out"][:, 32:]))
    # ... while every other row, and the keys/values of the other blocks, never touch it.
    _assert_untouched(poisoned, clean, ("out", "dq", "dk", "dv"), slice(0, 32))


@pytest.mark.parametrize("backend", ["gpu", "tpu"])
def test_causal_skips_tiles_above_the_diagonal(backend):
    mask = MaskSpec(causal=True)
    q, k, v, _, do = random_inputs(3, 2, 40, 40, 4, 2, 16)
    clean = _run(backend, q, k, v, do, mask)
    # Keys 32.. (block 2) are in the future of query blocks 0 and 1.
    late_keys = _run(backend, q, k.at[:, 32:].set(jnp.nan), v.at[:, 32:].set(jnp.nan), do, mask)
    assert np.all(np.isnan(late_keys["out"][:, 32:]))
    _assert_untouched(late_keys, clean, ("out", "dq"), slice(0, 32))
    # Queries 0..15 (block 0) are in the past of key blocks 1 and 2: dk/dv there never read them.
    early_queries = _run(backend, q.at[:, :16].set(jnp.nan), k, v, do.at[:, :16].set(jnp.nan), mask)
    assert np.all(np.isnan(early_queries["dk"][:, :16]))
    _assert_untouched(early_queries, clean, ("dk", "dv"), slice(16, 40))
