"""Checkpoints: round trip with the data iterator, keep-N, interrupted saves, partial restores.
(Damaged data and read-only use: test_checkpoint_integrity.py.)"""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxspeech.train.checkpoint import CheckpointConfig, Checkpointer, CheckpointMismatchError

from jaxspeech.testing.tiny_task import grain_iterator


def _state(value: float) -> dict:
    return {
        "params": {"w": jnp.full((4, 3), value, jnp.float32), "b": jnp.arange(3, dtype=jnp.float32) + value},
        "step": jnp.asarray(int(value), jnp.int32),
        "rng": jax.random.key_data(jax.random.key(int(value))),
    }


def _abstract(state: dict) -> dict:
    sharding = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding), state)


def _saved(directory, steps, config=CheckpointConfig(max_to_keep=None), iterator=None) -> Checkpointer:
    checkpointer = Checkpointer(directory, config)
    for step in steps:
        if iterator is not None:
            next(iterator)
        checkpointer.save(step, _state(step), iterator)
    checkpointer.wait()
    return checkpointer


def _assert_state_equal(a, b):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        assert np.asarray(x).tobytes() == np.asarray(y).tobytes()


def test_round_trip_restores_state_and_data_position(tmp_path):
    iterator = grain_iterator(batch_size=2)
    checkpointer = _saved(tmp_path / "ckpt", [1, 2], iterator=iterator)
    expected_next = next(iterator)
    restored = checkpointer.restore_latest(_abstract(_state(0)))
    assert restored.step == 2
    _assert_state_equal(restored.state, _state(2))

    fresh = grain_iterator(batch_size=2)
    fresh.set_state(restored.data_state)
    actual_next = next(fresh)
    for key in expected_next:
        np.testing.assert_array_equal(actual_next[key], expected_next[key])
    assert checkpointer.restore_latest(_abstract(_state(0)), with_data=False).data_state is None
    checkpointer.close()


def test_bytes_iterator_state_round_trips(tmp_path):
    class BytesStateIterator:  # grain.DataLoaderIterator keeps its state as JSON bytes
        def __init__(self):
            self.position = 7

        def get_state(self):
            return b'{"position": 7}'

        def set_state(self, state):
            raise AssertionError("not used")

    checkpointer = _saved(tmp_path / "ckpt", [3], iterator=None)
    checkpointer.save(4, _state(4), BytesStateIterator())
    checkpointer.wait()
    assert checkpointer.restore_latest(_abstract(_state(0))).data_state == b'{"position": 7}'
    checkpointer.close()


def test_keeps_only_the_newest_n(tmp_path):
    checkpointer = _saved(tmp_path / "ckpt", [1, 2, 3, 4], CheckpointConfig(max_to_keep=2))
    assert checkpointer.all_steps() == [3, 4]
    assert sorted(os.listdir(tmp_path / "ckpt")) == ["3", "4"]
    assert not checkpointer.save(4, _state(4))  # an existing step is not overwritten
    checkpointer.close()


def test_an_interrupted_save_is_ignored(tmp_path):
    directory = tmp_path / "ckpt"
    _saved(directory, [1]).close()
    # What a save killed mid-write leaves behind: orbax's temporary directory, never renamed.
    os.makedirs(directory / "2.orbax-checkpoint-tmp-1234567" / "state")
    checkpointer = Checkpointer(directory)
    assert checkpointer.restore_latest(_abstract(_state(0))).step == 1
    checkpointer.close()


def test_empty_directory_restores_nothing(tmp_path):
    checkpointer = Checkpointer(tmp_path / "ckpt")
    assert checkpointer.restore_latest(_abstract(_state(0))) is None
    checkpointer.close()


def test_partial_restore_reads_the_params_of_a_state_whose_other_entries_changed(tmp_path):
    # An older state layout (here: an optimizer entry the current code does not know) still gives
    # its parameters to eval/transcribe, which ask for ``params`` only; a full restore refuses it.
    checkpointer = Checkpointer(tmp_path / "ckpt", CheckpointConfig(max_to_keep=None))
    checkpointer.save(3, {**_state(3), "opt_state": {"old_field": jnp.ones((2,))}})
    checkpointer.wait()
    only_params = {"params": _abstract(_state(0))["params"]}
    restored = checkpointer.restore_latest(only_params, with_data=False, partial=True)
    assert restored.step == 3 and set(restored.state) == {"params"}
    _assert_state_equal(restored.state["params"], _state(3)["params"])
    with pytest.raises(CheckpointMismatchError, match=r"ckpt/3: .*opt_state/old_field is saved but not expected"):
        checkpointer.restore_latest(_abstract(_state(0)), with_data=False)
    assert checkpointer.all_steps() == [3]  # a layout that changed is not damage: nothing moved
    checkpointer.close()
