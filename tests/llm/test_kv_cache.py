"""KV-cache row reordering: gathering only the recent slots equals gathering every slot."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxspeech.decoding.search import phase_widths
from jaxspeech.llm.kv_cache import reorder_recent_slots


def _beams_sharing_a_prompt(batch, beams, slots, index, recent, seed=0):
    """f32[batch * beams, 2, slots, 3]: beams of one row equal before slot index - recent, distinct
    in [index - recent, index), zeros from index on."""
    rng = np.random.default_rng(seed)
    shared = np.repeat(rng.normal(size=(batch, 1, 2, slots, 3)), beams, axis=1)
    own = rng.normal(size=(batch, beams, 2, slots, 3))
    slot = np.arange(slots)[None, None, None, :, None]
    x = np.where(slot < index - recent, shared, np.where(slot < index, own, 0.0))
    return x.reshape(batch * beams, 2, slots, 3).astype(np.float32)


@pytest.mark.parametrize("recent", [0, 1, 15, 16, 17, 40, 100])
@pytest.mark.parametrize("index_offset", [3, 0])  # the prompt's length before the recent slots
def test_recent_slot_reorder_equals_a_full_gather(recent, index_offset):
    slots = 120  # neither a window width nor a multiple of one: the last window is all slots
    index = min(slots, recent + index_offset)
    batch, beams = 2, 3
    x = _beams_sharing_a_prompt(batch, beams, slots, index, recent)
    rows = jnp.asarray(np.random.default_rng(1).integers(0, beams, (batch, beams)) + np.arange(batch)[:, None] * beams)
    rows = rows.reshape(-1)
    segments = jnp.asarray(np.broadcast_to(np.arange(slots) < index, (batch * beams, slots)).astype(np.int32))
    # The phase's width a beam search would use at this step, the tightest one, and more than all slots.
    phase = next(w for w in phase_widths(slots) if recent < w)
    for width in sorted({phase, max(recent, 1), slots + 8}):
        fn = jax.jit(lambda a, s, r, i, n, w=width: reorder_recent_slots((a, s), (2, 1), r, i, n, w))
        got, got_segments = fn(jnp.asarray(x), segments, rows, jnp.int32(index), jnp.int32(recent))
        np.testing.assert_array_equal(got, x[np.asarray(rows)], err_msg=f"width {width}")
        np.testing.assert_array_equal(got_segments, np.asarray(segments)[np.asarray(rows)])


def test_phase_widths_cover_every_step_with_a_window_that_holds_its_recent_slots():
    for steps in (1, 10, 16, 17, 80, 224, 600):
        widths = phase_widths(steps)
        assert widths[-1] == steps and list(widths) == sorted(set(widths))
        for step in range(steps):  # the phase that runs step t is the first whose width exceeds t
            assert step < next(w for w in widths if step < w) <= steps
    assert phase_widths(80) == (16, 48, 80)
