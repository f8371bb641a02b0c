"""SpecAugment: masks stay inside valid frames, widths within bounds, per-example, per-key."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxspeech.features.specaugment import SpecAugmentConfig, spec_augment

B, T, F = 16, 120, 40
augment = jax.jit(spec_augment, static_argnames="config")


def masked_cells(config, lengths, key=0):
    """bool[B, T, F]: which cells the augmentation changed (features are all ones)."""
    features = jnp.ones((B, T, F))
    out = augment(features, jnp.asarray(lengths), jax.random.key(key), config)
    assert out.shape == features.shape and out.dtype == features.dtype
    return np.asarray(out) != 1.0


def lengths_for_test():
    return np.random.default_rng(0).integers(10, T + 1, size=B).astype(np.int32)


def test_masks_only_inside_valid_frames():
    lengths = lengths_for_test()
    masked = masked_cells(
        SpecAugmentConfig(num_freq_masks=3, max_freq_width=20, num_time_masks=3, max_time_width=30), lengths
    )
    for b in range(B):
        assert not masked[b, lengths[b] :].any(), f"example {b} masked past its {lengths[b]} valid frames"
    assert masked.any()


def test_widths_within_bounds_and_time_ratio():
    lengths = lengths_for_test()
    freq_only = SpecAugmentConfig(num_freq_masks=1, max_freq_width=7, num_time_masks=0)
    time_only = SpecAugmentConfig(num_freq_masks=0, num_time_masks=1, max_time_width=25, max_time_ratio=0.1)
    widths_seen = set()
    for key in range(20):
        masked = masked_cells(freq_only, lengths, key)
        for b in range(B):
            columns = masked[b, : lengths[b]].all(axis=0)  # a frequency mask covers whole valid columns
            width = int(columns.sum())
            assert width <= 7
            assert not masked[b, : lengths[b], ~columns].any()
            if width:
                start = int(np.argmax(columns))
                assert columns[start : start + width].all()  # one contiguous band
            widths_seen.add(width)
        masked = masked_cells(time_only, lengths, key)
        for b in range(B):
            rows = masked[b].all(axis=1)
            assert int(rows.sum()) <= min(25, int(0.1 * lengths[b]))
            assert not masked[b, ~rows].any()
    assert {0, 7} <= widths_seen  # the bounds are reachable


def test_examples_differ_and_key_determinism():
    lengths = np.full(B, T, np.int32)
    config = SpecAugmentConfig()
    first = masked_cells(config, lengths, key=3)
    np.testing.assert_array_equal(first, masked_cells(config, lengths, key=3))
    assert not np.array_equal(first, masked_cells(config, lengths, key=4))
    distinct = {first[b].tobytes() for b in range(B)}
    assert len(distinct) > B // 2


def test_mask_value_and_zero_mask_config_is_identity():
    features = jax.random.normal(jax.random.key(1), (B, T, F))
    lengths = jnp.asarray(lengths_for_test())
    same = augment(features, lengths, jax.random.key(0), SpecAugmentConfig(num_freq_masks=0, num_time_masks=0))
    np.testing.assert_array_equal(np.asarray(same), np.asarray(features))
    out = np.asarray(augment(features, lengths, jax.random.key(0), SpecAugmentConfig(mask_value=-7.0)))
    changed = out != np.asarray(features)
    assert changed.any() and np.all(out[changed] == -7.0)


def test_zero_length_examples_untouched():
    features = jnp.ones((2, T, F))
    out = augment(features, jnp.array([0, T]), jax.random.key(0), SpecAugmentConfig(max_time_ratio=0.2))
    np.testing.assert_array_equal(np.asarray(out[0]), 1.0)


def test_bad_config_and_shapes():
    with pytest.raises(ValueError, match="num_time_masks"):
        SpecAugmentConfig(num_time_masks=-1)
    with pytest.raises(ValueError, match="max_time_ratio"):
        SpecAugmentConfig(max_time_ratio=1.5)
    with pytest.raises(ValueError, match=r"f\[B, T, F\]"):
        spec_augment(jnp.ones((T, F)), jnp.array([T]), jax.random.key(0), SpecAugmentConfig())
    with pytest.raises(ValueError, match="lengths"):
        spec_augment(jnp.ones((2, T, F)), jnp.array([T]), jax.random.key(0), SpecAugmentConfig())
