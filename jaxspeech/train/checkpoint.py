"""Orbax checkpoints of the train state together with the data iterator's state.

One checkpoint step holds three items: ``state`` (params, optimizer state, step, RNG, skip
counters; sharded arrays), ``data`` (the data iterator's ``get_state()``, one JSON file per
process) and ``meta`` (JSON: the step, a time stamp, a digest of every array of ``state`` and
what the caller adds, e.g. the trainer's seconds of training so far).

Saves are asynchronous: ``save`` returns once the arrays are copied off the accelerator, and the
write finishes in the background. Orbax writes into a temporary directory and renames it only
once complete, and deletes old steps (``max_to_keep``) only after a newer one is committed, so a
crash mid-save never costs a good checkpoint.

Integrity: orbax checksums its index, not the arrays' bytes, so ``save`` records a digest of each
array's values (``jaxspeech.train.digest``: the same on any mesh or host count) in ``meta``, and
``restore`` compares the restored values with them. A checkpoint whose digests differ, or whose
bytes the storage layer itself reports as corrupt, raises ``CheckpointIntegrityError`` naming the
step folder and the arrays. Anything else that stops a restore is reported as what it is:
``CheckpointMismatchError`` (the saved entries, shapes or dtypes are not what is asked for: the
code or config changed) or ``CheckpointReadError`` (out of memory, an I/O error, ...); those say
nothing about the data, so they are never treated as damage.

``restore_latest`` restores onto the shardings of the given abstract state, which may come from a
different mesh or device count. A step that fails its integrity check is reported and the step
before it is tried. Only a writable ``Checkpointer`` (the one training uses) then moves the damaged
steps aside, to ``<directory>.corrupt/<step>-<time>`` (never deleted), so that training can save
those step numbers again; a ``read_only`` one (eval, transcribe, notebooks) never creates, renames
or writes anything under the directory.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
import time
from typing import Any, Protocol

import jax
import numpy as np
import orbax.checkpoint as ocp
from etils import epath
from jax.experimental import multihost_utils

from jaxspeech import paths
from jaxspeech.errors import KnownError
from jaxspeech.train.digest import array_digests, leaf_name
from jaxspeech.train.state import State

log = logging.getLogger(__name__)


class CheckpointableIterator(Protocol):
    def get_state(self) -> Any: ...

    def set_state(self, state: Any) -> None: ...


@dataclasses.dataclass(frozen=True)
class CheckpointConfig:
    """Where and how often to checkpoint. ``every_steps`` 0 = only at the end of training.

    ``restore_data_state`` False resumes the model but starts the data iterator afresh (e.g.
    after the data changed); the default resumes the data exactly where the checkpoint was.
    """

    every_steps: int = 1000
    max_to_keep: int | None = 3
    async_save: bool = True
    subdir: str = "checkpoints"
    restore_data_state: bool = True

    def __post_init__(self):
        if self.every_steps < 0:
            raise ValueError(f"checkpoint every_steps must be >= 0, got {self.every_steps}")
        if self.max_to_keep is not None and self.max_to_keep < 1:
            raise ValueError(f"checkpoint max_to_keep must be >= 1 or None, got {self.max_to_keep}")


class CheckpointIntegrityError(KnownError, RuntimeError):
    """A checkpoint's stored data is damaged: restored arrays differ from the digests recorded at
    save, or the storage layer found corrupt bytes. ``path``: the step folder; ``arrays``: names."""

    def __init__(self, path: str, arrays: list[str], what: str):
        self.path, self.arrays, self.what = path, list(arrays), what
        super().__init__(f"{path}: {what}")


class CheckpointMismatchError(KnownError, ValueError):
    """A checkpoint that does not hold what is asked for (entries, shapes or dtypes differ)."""

    def __init__(self, path: str, what: str):
        self.path, self.what = path, what
        super().__init__(f"{path}: {what}")


class CheckpointReadError(KnownError, RuntimeError):
    """Reading a checkpoint failed for a reason that says nothing about its data (e.g. out of memory)."""

    def __init__(self, path: str, what: str):
        self.path, self.what = path, what
        super().__init__(f"{path}: {what}")


class CheckpointRestoreError(KnownError, RuntimeError):
    """No checkpoint in the directory could be restored (every one failed its integrity check)."""


# ----------------------------------------------------------------------------- data iterator item
def _encode_iterator_state(state: Any) -> dict:
    if isinstance(state, bytes):  # e.g. grain.DataLoaderIterator: JSON text as bytes
        return {"encoding": "utf-8-bytes", "state": state.decode("utf-8")}
    return {"encoding": "json", "state": state}


def _decode_iterator_state(record: dict) -> Any:
    if record["encoding"] == "utf-8-bytes":
        return record["state"].encode("utf-8")
    return record["state"]


class IteratorStateHandler(ocp.CheckpointHandler):
    """Writes each process's iterator state to ``process_<i>-of-<n>.json`` (synchronously)."""

    @staticmethod
    def _filename(directory: epath.Path) -> epath.Path:
        return directory / f"process_{jax.process_index()}-of-{jax.process_count()}.json"

    def save(self, directory: epath.Path, args: "IteratorStateSave"):
        self._filename(directory).write_text(json.dumps(_encode_iterator_state(args.state)))

    def restore(self, directory: epath.Path, args: "IteratorStateRestore | None" = None) -> Any:
        path = self._filename(directory)
        if not path.exists():
            raise CheckpointMismatchError(
                str(path),
                "missing: this data iterator state was written with a different process count (restore "
                "without the data position: checkpoint.restore_data_state=False)",
            )
        return _decode_iterator_state(json.loads(path.read_text()))


@ocp.args.register_with_handler(IteratorStateHandler, for_save=True)
@dataclasses.dataclass
class IteratorStateSave(ocp.args.CheckpointArgs):
    state: Any


@ocp.args.register_with_handler(IteratorStateHandler, for_restore=True)
@dataclasses.dataclass
class IteratorStateRestore(ocp.args.CheckpointArgs):
    pass


# ----------------------------------------------------------------------------- manager
@dataclasses.dataclass
class Restored:
    state: State
    step: int
    data_state: Any | None  # what the iterator's get_state() returned at save time (None if not saved)
    meta: dict = dataclasses.field(default_factory=dict)  # the step's meta data (see the module docstring)


def _restore_subset(directory: epath.Path, abstract_state: State) -> State:
    """The entries of ``abstract_state`` (a subset of the saved tree) from a saved state folder."""
    restore_args = ocp.checkpoint_utils.construct_restore_args(abstract_state)
    with ocp.PyTreeCheckpointer() as checkpointer:
        return checkpointer.restore(
            directory, args=ocp.args.PyTreeRestore(abstract_state, restore_args=restore_args, partial_restore=True)
        )


def _describe(shape, dtype) -> str:
    return f"{np.dtype(dtype).name}[{', '.join(map(str, shape))}]"


def _check_layout(path: epath.Path, abstract_state: State, partial: bool) -> None:
    """Raises ``CheckpointMismatchError`` unless the saved state holds every array of
    ``abstract_state`` with its shape and dtype (and, unless ``partial``, nothing else)."""
    saved = {
        leaf_name(p): leaf
        for p, leaf in jax.tree_util.tree_leaves_with_path(
            ocp.StandardCheckpointHandler().metadata(path / "state").tree
        )
    }
    wanted = {leaf_name(p): leaf for p, leaf in jax.tree_util.tree_leaves_with_path(abstract_state)}
    problems = [f"{name} is not in the checkpoint" for name in sorted(set(wanted) - set(saved))]
    if not partial:
        problems += [f"{name} is saved but not expected" for name in sorted(set(saved) - set(wanted))]
    for name in sorted(set(wanted) & set(saved)):
        want, have = wanted[name], saved[name]
        if tuple(want.shape) != tuple(have.shape) or np.dtype(want.dtype) != np.dtype(have.dtype):
            problems.append(
                f"{name} is {_describe(have.shape, have.dtype)}, expected {_describe(want.shape, want.dtype)}"
            )
    if problems:
        shown = "; ".join(problems[:5]) + (f"; and {len(problems) - 5} more" if len(problems) > 5 else "")
        raise CheckpointMismatchError(
            str(path),
            f"the saved state does not fit the model and optimizer of this "
            f"config (changed since it was written?): {shown}",
        )


# The storage layer's (tensorstore's) own reports of damaged bytes: checksum mismatches in OCDBT
# nodes, compressed chunks that no longer decode. Anything else (missing or short files, I/O
# errors) may be an incomplete copy or a passing fault, so it is not taken as proof of damage.
_CORRUPT_STORAGE = re.compile(r"DATA_LOSS|Error decoding|ZSTD_decompress\w*\(\) failed")
_ARRAY_READ = re.compile(r'Error reading "([^"/]+)/')


def _storage_corruption(error: BaseException) -> tuple[list[str], str] | None:
    """(array names, what) if ``error`` or one of its causes is a storage-layer corruption report."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        message = str(error)
        if _CORRUPT_STORAGE.search(message):
            arrays = sorted({name.replace(".", "/") for name in _ARRAY_READ.findall(message)})
            where = f" in {', '.join(arrays)}" if arrays else ""
            detail = message.splitlines()[0][:300]
            return arrays, f"the stored data is corrupt{where} ({detail})"
        error = error.__cause__ or error.__context__
    return None


class Checkpointer:
    """Saves and restores train states under ``directory`` (one orbax ``CheckpointManager``).

    ``read_only``: for processes that only read a run's checkpoints; ``save`` refuses and nothing
    under ``directory`` is ever created, renamed or written (see the module docstring)."""

    def __init__(
        self, directory: str | os.PathLike, config: CheckpointConfig = CheckpointConfig(), *, read_only: bool = False
    ):
        self.directory = epath.Path(paths.absolute(directory))  # epath's absolute() breaks gs:// URIs
        self.config = config
        self.read_only = read_only
        self._manager = self._open()

    def _open(self) -> ocp.CheckpointManager:
        if self.read_only:
            options = ocp.CheckpointManagerOptions(read_only=True, create=False)
        else:
            options = ocp.CheckpointManagerOptions(
                max_to_keep=self.config.max_to_keep,
                enable_async_checkpointing=self.config.async_save,
                create=True,
            )
        return ocp.CheckpointManager(self.directory, item_names=("state", "data", "meta"), options=options)

    def all_steps(self) -> list[int]:
        return sorted(self._manager.all_steps())

    def latest_step(self) -> int | None:
        return self._manager.latest_step()

    def step_directory(self, step: int) -> epath.Path:
        return self.directory / str(step)

    def save(
        self, step: int, state: State, data_iterator: CheckpointableIterator | None = None, meta: dict | None = None
    ) -> bool:
        """Starts saving ``state`` (and the iterator's position, and JSON ``meta`` fields) as ``step``;
        False if it exists. The arrays' digests are computed before this returns (a collective on
        several processes)."""
        if self.read_only:
            raise PermissionError(f"{self.directory}: opened read-only, cannot save step {step}")
        if step in self._manager.all_steps():
            return False
        meta = {**(meta or {}), "step": int(step), "time": time.time(), "digests": array_digests(state)}
        items = {"state": ocp.args.StandardSave(state), "meta": ocp.args.JsonSave(meta)}
        if data_iterator is not None:
            items["data"] = IteratorStateSave(data_iterator.get_state())
        return self._manager.save(step, args=ocp.args.Composite(**items), force=True)

    def wait(self) -> None:
        """Blocks until pending asynchronous saves are committed."""
        self._manager.wait_until_finished()

    def close(self) -> None:
        self._manager.close()

    def restore(self, step: int, abstract_state: State, with_data: bool = True, partial: bool = False) -> Restored:
        """Restores ``step`` onto the shardings carried by ``abstract_state``'s leaves and checks
        every restored array against its digest; ``partial``: ``abstract_state`` names a subset of
        the saved entries (e.g. only ``params``, which eval and transcribe read from checkpoints of
        any version of the optimizer state). Raises the errors of the module docstring."""
        path = self.step_directory(step)
        items = {"meta": ocp.args.JsonRestore()}
        if not partial:
            items["state"] = ocp.args.StandardRestore(abstract_state)
        has_data = with_data and (path / "data").exists()
        if has_data:
            items["data"] = IteratorStateRestore()
        try:
            _check_layout(path, abstract_state, partial)
            restored = self._manager.restore(step, args=ocp.args.Composite(**items))
            state = restored["state"] if not partial else _restore_subset(path / "state", abstract_state)
        except (CheckpointMismatchError, CheckpointIntegrityError):
            raise
        except MemoryError as error:
            raise CheckpointReadError(str(path), f"out of memory while reading it ({error})") from error
        except Exception as error:
            damaged = _storage_corruption(error)
            if damaged is not None:
                raise CheckpointIntegrityError(str(path), *damaged) from error
            raise CheckpointReadError(str(path), f"reading it failed: {type(error).__name__}: {error}") from error
        meta = restored["meta"]
        if int(meta["step"]) != step:
            raise CheckpointIntegrityError(str(path), [], f"its meta data claims step {meta['step']}")
        self._verify(path, state, meta.get("digests"))
        return Restored(state, step, restored["data"] if has_data else None, dict(meta))

    @staticmethod
    def _verify(path: epath.Path, state: State, saved: dict[str, str] | None) -> None:
        if saved is None:
            log.warning(
                "checkpoint %s has no array digests (written before they were recorded): its values cannot be verified",
                path,
            )
            return
        actual = array_digests(state)
        damaged = sorted(name for name, digest in actual.items() if saved.get(name) != digest)
        if damaged:
            shown = ", ".join(damaged[:8]) + (f" and {len(damaged) - 8} more" if len(damaged) > 8 else "")
            raise CheckpointIntegrityError(
                str(path),
                damaged,
                f"restored values differ from the digests recorded at save (damaged data) in {shown}",
            )

    def restore_latest(self, abstract_state: State, with_data: bool = True, partial: bool = False) -> Restored | None:
        """The newest checkpoint that passes its integrity check (None if there is none); see the
        module docstring. Other errors are raised at once: they would hit the older steps too,
        and resuming from an older step would leave the newer ones to collide with later saves."""
        self._manager.reload()
        damaged: dict[int, str] = {}
        for step in sorted(self._manager.all_steps(), reverse=True):
            try:
                restored = self._agreed(lambda: self.restore(step, abstract_state, with_data, partial))
            except CheckpointIntegrityError as error:
                log.error(
                    "checkpoint %s is damaged: %s; trying the previous one", self.step_directory(step), error.what
                )
                damaged[step] = error.what
                continue
            if damaged and self.read_only:
                log.warning(
                    "restored checkpoint %s instead of the newer damaged %s (left in place: opened read-only)",
                    self.step_directory(step),
                    sorted(damaged),
                )
            elif damaged:
                self._quarantine(sorted(damaged))
                log.warning(
                    "restored checkpoint %s instead of the newer damaged %s", self.step_directory(step), sorted(damaged)
                )
            return restored
        if damaged:
            details = "; ".join(f"{self.step_directory(step)}: {what[:300]}" for step, what in damaged.items())
            raise CheckpointRestoreError(f"{self.directory}: no checkpoint passes its integrity check ({details})")
        return None

    @staticmethod
    def _agreed(restore):
        """``restore()``, with every process raising an integrity error if any process found one
        (each process reads its own shards), so all of them go on to the same step."""
        try:
            result, error = restore(), None
        except CheckpointIntegrityError as e:
            result, error = None, e
        if jax.process_count() > 1:
            flags = multihost_utils.process_allgather(np.int32(error is not None))
            if error is None and np.any(flags):
                raise CheckpointIntegrityError("", [], "another process found damaged data in this step")
        if error is not None:
            raise error
        return result

    def _quarantine(self, steps: list[int]) -> None:
        """Moves damaged step directories out of the manager's sight (they are kept on disk)."""
        if jax.process_index() == 0:
            target_root = epath.Path(f"{self.directory}.corrupt")
            target_root.mkdir(parents=True, exist_ok=True)
            for step in steps:
                target = target_root / f"{step}-{int(time.time())}"
                self.step_directory(step).rename(target)
                log.warning("moved damaged checkpoint %s to %s", self.step_directory(step), target)
        ocp.multihost.sync_global_processes("jaxspeech_checkpoint_quarantine")
        self._manager.close()
        self._manager = self._open()
