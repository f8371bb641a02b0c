"""Starting a run from another run's trained parameters: ``init.from_run``.

    init.from_run = "runs/X"                       # every parameter of run X, at the same paths
    init.from_run = {"encoder": "runs/ctc",        # target subtree <- run folder [":" source subtree]
                     "ctc_head": "runs/ctc",
                     "llm": "runs/text:llm"}

Each entry fills one subtree of this model (a top-level name such as ``encoder``, or a deeper path
such as ``llm/embed_tokens``) with the subtree of the source run's parameters named after the
colon (default: the same path). Everything else keeps its random init (or the task's pretrained
checkpoints, e.g. ``init.whisper_dir``, for subtrees no entry names), and LoRA adapters missing
from a source start fresh. Source runs are read by the ``read_params`` the recipe gives
(``recipes/restore.py``: read-only, never a file written under them), newest checkpoint, parameters only; the values land bit for bit in
step 0 of the new run (``train/warm_start.py``). A source without the subtree is refused, naming
the subtrees it has; a parameter whose shape differs from the model's is refused, naming its path
and both shapes.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping

from flax import traverse_util

from jaxspeech.config_dict import plain
from jaxspeech.errors import ConfigError
from jaxspeech.layers.lora import LORA_A, LORA_B

LORA_ADAPTERS = rf"(.*/)?({LORA_A}|{LORA_B})"


@dataclasses.dataclass(frozen=True)
class Take:
    """``target`` subtree of this model <- ``source`` subtree of the run in ``run`` ("" = everything)."""

    target: str
    run: str
    source: str

    def describe(self) -> str:
        source = f"{self.run}:{self.source}" if self.source else self.run
        return f"{self.target or 'all'} <- {source}"


def parse_from_run(value: Any) -> tuple[Take, ...]:
    """The entries of ``init.from_run`` (a run folder, or {target subtree: "RUN[:SUBTREE]"})."""
    value = plain(value)
    if isinstance(value, str) and value:
        return (Take("", value, ""),)
    if not isinstance(value, Mapping) or not value:
        raise ConfigError(
            "init.from_run", f"expected a run folder or a mapping {{subtree: 'RUN[:SUBTREE]'}}, got {value!r}"
        )
    takes = []
    for target, spec in value.items():
        if not isinstance(spec, str) or not spec:
            raise ConfigError(f"init.from_run.{target}", f"expected 'RUN' or 'RUN:SUBTREE', got {spec!r}")
        run, _, source = spec.partition(":")
        takes.append(Take(target.strip("/"), run, (source or target).strip("/")))
    targets = [t.target for t in takes]
    for a in targets:
        for b in targets:
            if a != b and b.startswith(a + "/"):
                raise ConfigError("init.from_run", f"names {b!r} inside {a!r}: one subtree can come from one run only")
    return tuple(takes)


def _subtree(flat: Mapping[str, Any], path: str) -> dict[str, Any]:
    """{relative path: value} of the parameters under ``path`` ("" = all)."""
    if not path:
        return dict(flat)
    return {name[len(path) + 1 :]: value for name, value in flat.items() if name.startswith(path + "/")}


def _children(flat: Mapping[str, Any], parent: str) -> list[str]:
    """The subtrees one level below ``parent`` ("" = the top level)."""
    names = {name.split("/")[0] for name in (_subtree(flat, parent) if parent else flat)}
    return sorted(f"{parent}/{name}" if parent else name for name in names)


@dataclasses.dataclass(frozen=True)
class FromRuns:
    """Step-0 weights taken from other runs (see the module docstring), over the task's own
    ``pretrained`` checkpoints (or None), which fill the subtrees no entry names. Follows
    ``Pretrained`` (``tasks/kinds.py``); ``subtrees`` are the paths it fills whole (None: the
    top-level names of what ``load`` returns)."""

    takes: tuple[Take, ...]
    read_params: Callable[[str], Mapping[str, Any]]  # run folder -> its newest parameters (nested, numpy)
    pretrained: Any = None

    @property
    def source(self) -> str:
        described = "init.from_run: " + ", ".join(t.describe() for t in self.takes)
        return described + (f"; {self.pretrained.source}" if self._checkpoint_parts() != () else "")

    @property
    def fresh(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys((LORA_ADAPTERS, *(self.pretrained.fresh if self.pretrained else ()))))

    @property
    def subtrees(self) -> tuple[str, ...] | None:
        if any(not t.target for t in self.takes):
            return None
        parts = self._checkpoint_parts()
        return tuple(sorted({t.target for t in self.takes} | set(parts or ())))

    def _checkpoint_parts(self) -> tuple[str, ...] | None:
        """The pretrained checkpoints' parts still needed (None: all of them, () none)."""
        if self.pretrained is None or any(not t.target for t in self.takes):
            return ()
        parts = getattr(self.pretrained, "parts", None)
        targets = {t.target for t in self.takes}
        return None if parts is None else tuple(p for p in parts if p not in targets)

    def load(self) -> dict[str, Any]:
        """The parameters (numpy, nested, without the "params" level) at their target paths."""
        parts = self._checkpoint_parts()
        pretrained = (
            self.pretrained if parts is None else (dataclasses.replace(self.pretrained, parts=parts) if parts else None)
        )
        placed = traverse_util.flatten_dict(pretrained.load(), sep="/") if pretrained is not None else {}
        params_of: dict[str, dict[str, Any]] = {}
        for take in self.takes:
            if take.run not in params_of:
                params_of[take.run] = traverse_util.flatten_dict(self.read_params(take.run), sep="/")
            subtree = _subtree(params_of[take.run], take.source)
            if not subtree:
                parent = take.source.rpartition("/")[0]
                raise ConfigError(
                    "init.from_run",
                    f"the parameters of {take.run} have no subtree {take.source!r}; "
                    f"{parent + ' has' if parent else 'they have'} {_children(params_of[take.run], parent)}",
                )
            placed = {
                name: value
                for name, value in placed.items()
                if not (not take.target or name == take.target or name.startswith(take.target + "/"))
            }
            for name, value in subtree.items():
                placed["/".join(p for p in (take.target, name) if p)] = value
        return traverse_util.unflatten_dict(placed, sep="/")
