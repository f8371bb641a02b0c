"""Damaged checkpoints: bit flips in the arrays' stored data are caught, named and skipped; only a
writable (training) Checkpointer moves a damaged step aside, and only for damage; a read-only one
changes nothing on disk; a layout mismatch or a failed read is reported as what it is."""

import glob
import json
import logging
import os
import random
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest

from jaxspeech.train.checkpoint import (
    CheckpointConfig,
    Checkpointer,
    CheckpointIntegrityError,
    CheckpointMismatchError,
    CheckpointReadError,
    CheckpointRestoreError,
)

ARRAYS = ("params/dense", "params/embed", "params/norm", "opt_state/count", "rng", "step")


def _state(seed: int, compressible: bool = False) -> dict:
    """Arrays of realistic size, ~1.2 MB: float32 and bfloat16 noise (which orbax's zstd barely
    compresses) and small integers (which it does); or, ``compressible``, small integers only."""
    rng = np.random.default_rng(seed)

    def values(shape, dtype=np.float32):
        if compressible:
            return jnp.asarray(rng.integers(0, 4, shape).astype(np.float32), dtype)
        return jnp.asarray(rng.standard_normal(shape, np.float32), dtype)

    return {
        "params": {"dense": values((256, 256)), "embed": values((512, 256)), "norm": values((256, 256), jnp.bfloat16)},
        "opt_state": {"count": jnp.asarray(rng.integers(0, 3, (256, 256), np.int32))},
        "step": jnp.asarray(seed, jnp.int32),
        "rng": jax.random.key_data(jax.random.key(seed)),
    }


def _abstract(state: dict) -> dict:
    sharding = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding), state)


ABSTRACT = _abstract(_state(0))


def _save(directory, steps, compressible: bool = False) -> None:
    checkpointer = Checkpointer(directory, CheckpointConfig(max_to_keep=None))
    for step in steps:
        checkpointer.save(step, _state(step, compressible))
    checkpointer.wait()
    checkpointer.close()


def _equal(a, b) -> bool:
    return all(
        np.asarray(x).tobytes() == np.asarray(y).tobytes()
        for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True)
    )


def _bulk_files(step_directory) -> list[str]:
    """The files that hold the arrays' values (OCDBT data files of the writing process), not the
    index, manifests or metadata."""
    files = glob.glob(f"{step_directory}/state/ocdbt.process_*/d/*")
    return sorted(f for f in files if os.path.getsize(f) >= 4096)


def _flip_bit(step_directory, rng: random.Random) -> tuple[str, int]:
    """Flips one random bit at a random offset of the bulk data, uniformly over its bytes."""
    files = _bulk_files(step_directory)
    sizes = [os.path.getsize(f) for f in files]
    offset, index = rng.randrange(sum(sizes)), 0
    while offset >= sizes[index]:
        offset, index = offset - sizes[index], index + 1
    path = files[index]
    with open(path, "r+b") as f:
        f.seek(offset)
        byte = f.read(1)[0]
        f.seek(offset)
        f.write(bytes([byte ^ (1 << rng.randrange(8))]))
    return path, offset


def _listing(directory) -> dict[str, int]:
    """Every path under ``directory``'s parent (so a new sibling shows) with its mtime in ns."""
    parent = os.path.dirname(directory)
    entries = {}
    for root, dirs, files in os.walk(parent):
        for name in dirs + files:
            path = os.path.join(root, name)
            entries[os.path.relpath(path, parent)] = os.stat(path).st_mtime_ns
    return entries


def _damaged_arrays(step_directory, expected: dict) -> set[str] | None:
    """The arrays whose restored values differ, read with orbax alone (None if orbax cannot read them)."""
    try:
        raw = ocp.StandardCheckpointer().restore(os.path.join(step_directory, "state"), ABSTRACT)
    except Exception:
        return None
    leaves = jax.tree_util.tree_leaves_with_path
    return {
        jax.tree_util.keystr(p, simple=True, separator="/")
        for (p, x), (_, y) in zip(leaves(raw), leaves(expected))
        if np.asarray(x).tobytes() != np.asarray(y).tobytes()
    }


@pytest.mark.parametrize("compressible", [False, True], ids=["noise", "compressible"])
def test_every_bit_flip_in_the_array_data_is_detected_and_names_the_array(tmp_path, compressible):
    """24 flips that damage the data (orbax alone restores other values, or refuses), each caught
    and named. A flip into bits that zstd decoding ignores (rare) leaves every value intact: then
    the restore must succeed with the right values (no false alarm)."""
    pristine = tmp_path / "pristine"
    _save(pristine, [1], compressible)
    assert sum(os.path.getsize(f) for f in _bulk_files(pristine / "1")) > (100_000 if compressible else 800_000)
    rng = random.Random(0)
    by_digest = by_storage = harmless = 0
    while by_digest + by_storage < 24:
        assert harmless <= 4, "too many flips without effect: are these the array data files?"
        directory = tmp_path / f"trial{by_digest + by_storage + harmless}"
        shutil.copytree(pristine, directory)
        path, offset = _flip_bit(directory / "1", rng)
        truth = _damaged_arrays(directory / "1", _state(1, compressible))
        checkpointer = Checkpointer(directory, read_only=True)
        try:
            if truth == set():  # the decoded values are all intact
                harmless += 1
                assert _equal(checkpointer.restore(1, ABSTRACT).state, _state(1, compressible)), (path, offset)
                continue
            with pytest.raises(CheckpointIntegrityError) as info:
                checkpointer.restore(1, ABSTRACT)
        finally:
            checkpointer.close()
            shutil.rmtree(directory)
        error = info.value
        assert str(directory / "1") in str(error), (path, offset)
        assert error.arrays and set(error.arrays) <= set(ARRAYS), (path, offset, error)
        assert all(name in str(error) for name in error.arrays)
        if truth is None:  # the storage layer refused the bytes (a compressed chunk no longer decodes)
            by_storage += 1
        else:  # orbax alone restores wrong values without a word: the digests name exactly those arrays
            by_digest += 1
            assert set(error.arrays) == truth, (path, offset, truth, error)
    # Both ways of finding damage are exercised: the digests (most flips in noise, whose chunks zstd
    # stores nearly raw) and, where the data compresses, the storage layer (about half the flips;
    # the noise state's small-integer array compresses too, so a few flips there may land in it).
    assert by_digest >= 1 and (by_storage >= 1 if compressible else by_digest >= 12), (by_digest, by_storage)


def test_training_falls_back_past_a_damaged_step_names_it_and_moves_it_aside(tmp_path, caplog):
    directory = tmp_path / "ckpt"
    _save(directory, [1, 2, 3])
    _flip_bit(directory / "3", random.Random(3))
    checkpointer = Checkpointer(directory, CheckpointConfig(max_to_keep=None))
    with caplog.at_level(logging.WARNING, logger="jaxspeech.train.checkpoint"):
        restored = checkpointer.restore_latest(ABSTRACT)
    assert restored.step == 2 and _equal(restored.state, _state(2))
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and str(directory / "3") in errors[0] and "damaged" in errors[0]
    assert any(name in errors[0] for name in ARRAYS)
    # Kept aside, not deleted; step 3 can be saved again.
    assert [name.split("-")[0] for name in os.listdir(f"{directory}.corrupt")] == ["3"]
    assert checkpointer.all_steps() == [1, 2]
    assert checkpointer.save(3, _state(33))
    checkpointer.wait()
    assert _equal(checkpointer.restore_latest(ABSTRACT).state, _state(33))
    checkpointer.close()


def test_read_only_restore_falls_back_but_changes_nothing_on_disk(tmp_path, caplog):
    directory = tmp_path / "run" / "checkpoints"
    _save(directory, [1, 2])
    _flip_bit(directory / "2", random.Random(5))
    before = _listing(directory)
    checkpointer = Checkpointer(directory, read_only=True)
    with caplog.at_level(logging.WARNING, logger="jaxspeech.train.checkpoint"):
        restored = checkpointer.restore_latest(ABSTRACT)
    assert restored.step == 1 and _equal(restored.state, _state(1))
    assert any("left in place" in r.getMessage() for r in caplog.records)
    with pytest.raises(PermissionError):
        checkpointer.save(3, _state(3))
    checkpointer.close()
    assert _listing(directory) == before

    _flip_bit(directory / "1", random.Random(6))  # now nothing restores: an error, and still nothing moves
    before = _listing(directory)
    checkpointer = Checkpointer(directory, read_only=True)
    with pytest.raises(CheckpointRestoreError) as info:
        checkpointer.restore_latest(ABSTRACT)
    checkpointer.close()
    assert str(directory / "1") in str(info.value) and str(directory / "2") in str(info.value)
    assert "\n" not in str(info.value)
    assert _listing(directory) == before


def test_nothing_restorable_in_training_raises_and_moves_nothing(tmp_path):
    directory = tmp_path / "ckpt"
    _save(directory, [1, 2])
    for step in (1, 2):
        _flip_bit(directory / str(step), random.Random(step))
    checkpointer = Checkpointer(directory)
    with pytest.raises(CheckpointRestoreError, match="no checkpoint passes its integrity check"):
        checkpointer.restore_latest(ABSTRACT)
    checkpointer.close()
    assert sorted(os.listdir(directory)) == ["1", "2"] and not os.path.exists(f"{directory}.corrupt")


def test_read_only_on_a_missing_folder_restores_nothing_and_creates_nothing(tmp_path):
    checkpointer = Checkpointer(tmp_path / "absent", read_only=True)
    assert checkpointer.restore_latest(ABSTRACT) is None
    checkpointer.close()
    assert os.listdir(tmp_path) == []


def test_a_changed_layout_is_a_mismatch_that_names_the_array_not_damage(tmp_path):
    directory = tmp_path / "ckpt"
    _save(directory, [1, 2])
    grown = {
        **ABSTRACT,
        "params": {
            **ABSTRACT["params"],
            "dense": jax.ShapeDtypeStruct((256, 384), jnp.float32, sharding=ABSTRACT["step"].sharding),
        },
    }
    cast = {**ABSTRACT, "params": {**ABSTRACT["params"], "norm": ABSTRACT["params"]["dense"]}}  # bf16 -> f32
    before = _listing(directory)
    checkpointer = Checkpointer(directory)  # writable: it still must not take a mismatch for damage
    with pytest.raises(
        CheckpointMismatchError,
        match=r"ckpt/2: .*params/dense is float32\[256, 256\], "
        r"expected float32\[256, 384\]",
    ):
        checkpointer.restore_latest(grown)
    with pytest.raises(CheckpointMismatchError, match=r"params/norm is bfloat16\[256, 256\], expected float32"):
        checkpointer.restore_latest(cast)
    checkpointer.close()
    assert _listing(directory) == before


@pytest.mark.parametrize(
    "failure",
    [MemoryError("Unable to allocate 256. GiB"), OSError(5, "Input/output error")],
    ids=["out_of_memory", "io_error"],
)
def test_a_failed_read_is_reported_as_such_and_nothing_moves(tmp_path, monkeypatch, failure):
    directory = tmp_path / "ckpt"
    _save(directory, [1, 2])
    before = _listing(directory)

    def failing_restore(self, *args, **kwargs):  # what orbax raises when the host runs out of memory / the disk fails
        raise failure

    monkeypatch.setattr(ocp.CheckpointManager, "restore", failing_restore)
    checkpointer = Checkpointer(directory)
    with pytest.raises(CheckpointReadError) as info:
        checkpointer.restore_latest(ABSTRACT)
    checkpointer.close()
    assert str(directory / "2") in str(info.value)  # the newest, not a fallback to 1
    assert ("out of memory" if isinstance(failure, MemoryError) else "Input/output error") in str(info.value)
    assert _listing(directory) == before


def test_a_checkpoint_saved_without_digests_restores_with_a_warning(tmp_path, caplog):
    directory = tmp_path / "ckpt"
    _save(directory, [1])
    meta_file = next(
        p for p in glob.glob(f"{directory}/1/meta/*") if os.path.isfile(p) and p.endswith((".json", "metadata"))
    )
    meta = json.loads(open(meta_file).read())
    del meta["digests"]
    open(meta_file, "w").write(json.dumps(meta))
    checkpointer = Checkpointer(directory, read_only=True)
    with caplog.at_level(logging.WARNING, logger="jaxspeech.train.checkpoint"):
        restored = checkpointer.restore_latest(ABSTRACT)
    checkpointer.close()
    assert restored.step == 1 and _equal(restored.state, _state(1))
    assert any("no array digests" in r.getMessage() for r in caplog.records)
