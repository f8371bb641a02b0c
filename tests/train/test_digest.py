"""Array digests: the same on every sharding and dtype layout, changed by any damage."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from jaxspeech.train.digest import array_digests

RNG = np.random.default_rng(0)
VALUES = RNG.standard_normal((64, 48), np.float32)


def _tree(values: np.ndarray) -> dict:
    return {
        "f32": jnp.asarray(values),
        "bf16": jnp.asarray(values, jnp.bfloat16),
        "i8": jnp.asarray(values * 10, jnp.int8),
        "flag": jnp.asarray(values > 0),
        "step": jnp.int32(7),
        "key": jax.random.key(3),
        "host": np.arange(6.0),
    }


@pytest.mark.parametrize("spec", [P("a", "b"), P("b", None), P(None, "a"), P(("a", "b"), None), P()], ids=str)
def test_sharding_does_not_change_the_digests(spec):
    mesh = jax.make_mesh((2, 4), ("a", "b"), axis_types=(jax.sharding.AxisType.Auto,) * 2)
    tree = _tree(VALUES)
    sharded = {
        k: jax.device_put(v, NamedSharding(mesh, spec)) if k in ("f32", "bf16", "i8", "flag") else v
        for k, v in tree.items()
    }
    assert array_digests(sharded) == array_digests(tree)
    assert array_digests({"key": tree["key"]})["key"] == array_digests({"key": jax.random.key_data(tree["key"])})["key"]


def _flipped(values: np.ndarray, *positions: tuple[int, int, int]) -> np.ndarray:
    words = values.copy().view(np.uint32)
    for row, col, bit in positions:
        words[row, col] ^= np.uint32(1 << bit)
    return words.view(np.float32)


def test_every_single_bit_flip_changes_the_digest():
    digest = array_digests({"x": VALUES})["x"]
    for bit in range(32):
        assert array_digests({"x": _flipped(VALUES, (bit, bit, bit))})["x"] != digest, bit


def test_damage_that_a_plain_sum_would_miss_changes_the_digest():
    digest = array_digests({"x": VALUES})["x"]
    two_sign_flips = _flipped(VALUES, (1, 2, 31), (5, 6, 31))  # +2^31 twice cancels modulo 2^32
    swapped_rows = VALUES[[1, 0] + list(range(2, 64))]  # same multiset of values, other places
    assert array_digests({"x": two_sign_flips})["x"] != digest
    assert array_digests({"x": swapped_rows})["x"] != digest
    assert (
        array_digests({"x": VALUES.reshape(48, 64)})["x"] == digest
    )  # values and order only: shape is the layout check's job
