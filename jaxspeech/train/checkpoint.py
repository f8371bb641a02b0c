"""Orbax checkpoints of the train state together with the data iterator's state.

One checkpoint step holds three items: ``state`` (params, optimizer state, step, RNG, skip
counters; sharded arrays), ``data`` (the data iterator's ``get_state()``, one JSON file per
process) and ``meta`` (JSON: the step and a time stamp).

Saves are asynchronous: ``save`` returns once the arrays are copied off the accelerator, and the
write finishes in the background. Orbax writes into a temporary directory and renames it only
once complete, and deletes old steps (``max_to_keep``) only after a newer one is committed, so a
crash mid-save never costs a good checkpoint.

``restore_latest`` restores onto the shardings of the given abstract state, which may come from a
different mesh or device count. If the newest step cannot be read, the error is reported with
the checkpoint's path and older steps are tried; the unreadable one is moved aside to
``<directory>.corrupt/<step>-<time>`` (never deleted) once an older one has restored, so that
training can save that step number again.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
from typing import Any, Protocol

import jax
import orbax.checkpoint as ocp
from etils import epath

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


class CheckpointRestoreError(RuntimeError):
    """No checkpoint in the directory could be restored."""


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
            raise FileNotFoundError(
                f"data iterator state {path} is missing (checkpoints written with a different process count "
                f"cannot restore the data position)"
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


def _restore_subset(directory: epath.Path, abstract_state: State) -> State:
    """The entries of ``abstract_state`` (a subset of the saved tree) from a saved state folder."""
    restore_args = ocp.checkpoint_utils.construct_restore_args(abstract_state)
    with ocp.PyTreeCheckpointer() as checkpointer:
        return checkpointer.restore(directory, args=ocp.args.PyTreeRestore(abstract_state, restore_args=restore_args,
                                                                           partial_restore=True))


class Checkpointer:
    """Saves and restores train states under ``directory`` (one orbax ``CheckpointManager``)."""

    def __init__(self, directory: str | os.PathLike, config: CheckpointConfig = CheckpointConfig()):
        self.directory = epath.Path(directory).absolute()
        self.config = config
        self._manager = self._open()

    def _open(self) -> ocp.CheckpointManager:
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

    def save(self, step: int, state: State, data_iterator: CheckpointableIterator | None = None) -> bool:
        """Starts saving ``state`` (and the iterator's position) as ``step``; False if it exists."""
        if step in self._manager.all_steps():
            return False
        items = {
            "state": ocp.args.StandardSave(state),
            "meta": ocp.args.JsonSave({"step": int(step), "time": time.time()}),
        }
        if data_iterator is not None:
            items["data"] = IteratorStateSave(data_iterator.get_state())
        return self._manager.save(step, args=ocp.args.Composite(**items), force=True)

    def wait(self) -> None:
        """Blocks until pending asynchronous saves are committed."""
        self._manager.wait_until_finished()

    def close(self) -> None:
        self._manager.close()

    def restore(self, step: int, abstract_state: State, with_data: bool = True, partial: bool = False) -> Restored:
        """Restores ``step`` onto the shardings carried by ``abstract_state``'s leaves; ``partial``:
        ``abstract_state`` names a subset of the saved entries (e.g. only ``params``, which
        eval and transcribe read from checkpoints of any version of the optimizer state)."""
        items = {"meta": ocp.args.JsonRestore()}
        if not partial:
            items["state"] = ocp.args.StandardRestore(abstract_state)
        has_data = with_data and (self.step_directory(step) / "data").exists()
        if has_data:
            items["data"] = IteratorStateRestore()
        restored = self._manager.restore(step, args=ocp.args.Composite(**items))
        if int(restored["meta"]["step"]) != step:
            raise ValueError(f"checkpoint {self.step_directory(step)} claims step {restored['meta']['step']}")
        state = restored["state"] if not partial else _restore_subset(self.step_directory(step) / "state", abstract_state)
        return Restored(state, step, restored["data"] if has_data else None)

    def restore_latest(self, abstract_state: State, with_data: bool = True, partial: bool = False) -> Restored | None:
        """The newest readable checkpoint (None if there is none); see the module docstring."""
        self._manager.reload()
        failures: list[tuple[int, str]] = []
        for step in sorted(self._manager.all_steps(), reverse=True):
            try:
                restored = self.restore(step, abstract_state, with_data, partial)
            except Exception as error:  # any unreadable checkpoint: report it and try the one before
                message = f"{type(error).__name__}: {error}"
                log.error("checkpoint %s could not be restored (%s); trying the previous one", self.step_directory(step), message)
                failures.append((step, message))
                continue
            if failures:
                self._quarantine([s for s, _ in failures])
                log.warning("restored checkpoint %s instead of the newer unreadable %s", self.step_directory(step), [s for s, _ in failures])
            return restored
        if failures:
            details = "\n".join(f"  {self.step_directory(s)}: {m[:500]}" for s, m in failures)
            raise CheckpointRestoreError(f"no checkpoint under {self.directory} could be restored:\n{details}")
        return None

    def _quarantine(self, steps: list[int]) -> None:
        """Moves unreadable step directories out of the manager's sight (they are kept on disk)."""
        if jax.process_index() == 0:
            target_root = epath.Path(f"{self.directory}.corrupt")
            target_root.mkdir(parents=True, exist_ok=True)
            for step in steps:
                target = target_root / f"{step}-{int(time.time())}"
                self.step_directory(step).rename(target)
                log.warning("moved unreadable checkpoint %s to %s", self.step_directory(step), target)
        ocp.multihost.sync_global_processes("jaxspeech_checkpoint_quarantine")
        self._manager.close()
        self._manager = self._open()
