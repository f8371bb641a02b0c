"""Pretrained weights as the trainer's step-0 checkpoint.

A recipe that starts from converted checkpoints calls ``write_step0_checkpoint`` before training:
it builds the train state with the trainer's own ``build_layout`` / ``init_state``, puts the
converted weights in (each device receives only its shards) and saves that state as step 0 in the
workdir. The trainer then starts by restoring it, exactly as when resuming, so nothing is embedded
in a compiled program, and a restarted run resumes from its newest checkpoint instead (the
pretrained weights are then not even read).

The converted tree may cover the whole model (a fine-tuned Whisper) or only some of its subtrees
(a Speech LLM's ``encoder`` and ``llm``; another run's ``llm/embed_tokens``): every other parameter
keeps its random init (connector, cross-attention, and leaves matching a ``fresh`` pattern inside
the given subtrees, such as LoRA adapters on a pretrained LLM).
"""

from __future__ import annotations

import logging
import re
from typing import Any, Callable, Mapping, Protocol, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn
from flax import traverse_util
from jax.sharding import Mesh

from jaxspeech import paths
from jaxspeech.train.checkpoint import Checkpointer
from jaxspeech.train.config import TrainConfig
from jaxspeech.train.state import State, StateLayout, build_layout, init_state
from jaxspeech.types import Batch

log = logging.getLogger(__name__)


class Run(Protocol):
    """What ``write_step0_checkpoint`` needs of a recipe's run (``jaxspeech.recipes.build.Run``)."""

    task: Any
    train: TrainConfig

    def train_pipeline(self) -> Any: ...

    def example_batch(self) -> Any: ...


def kept_params(
    params: Mapping[str, Any],
    layout: StateLayout,
    fresh: Sequence[str] = (),
    subtrees: Sequence[str] | None = None,
    source: str = "pretrained params",
) -> list[str]:
    """Paths of the model's parameters that ``params`` leaves at their initial values: those outside
    the ``subtrees`` it fills (default: the top-level names it holds), and those fully matching a
    ``fresh`` regex.

    Raises, naming ``source``, the parameters ``params`` lacks inside its subtrees, the ones the
    model does not have, and any whose shape differs from the model's (its path and both shapes)."""
    expected = traverse_util.flatten_dict(layout.abstract["params"], sep="/")
    given = traverse_util.flatten_dict(params, sep="/")
    patterns = [re.compile(p) for p in fresh]
    is_fresh = lambda path: any(p.fullmatch(path) for p in patterns)
    covered = tuple(subtrees) if subtrees is not None else tuple({path.split("/", 1)[0] for path in given})
    inside = lambda path: any(path == c or path.startswith(c + "/") for c in covered)
    kept = sorted(p for p in expected if p not in given and (not inside(p) or is_fresh(p)))
    missing = sorted(set(expected) - set(given) - set(kept))
    extra = sorted(set(given) - set(expected))
    if missing or extra:
        raise ValueError(
            f"{source}: the parameters do not match the model: missing {_listing(missing)}, "
            f"unexpected {_listing(extra)}"
        )
    for path, value in given.items():
        if tuple(np.shape(value)) != tuple(expected[path].shape):
            raise ValueError(
                f"{source}: parameter {path} has shape {tuple(np.shape(value))}, "
                f"the model expects {tuple(expected[path].shape)}"
            )
    return kept


def _listing(paths: list[str], most: int = 5) -> str:
    return f"{paths[:most]}" + (f" (+{len(paths) - most} more)" if len(paths) > most else "")


def place_params(
    params: Mapping[str, Any],
    layout: StateLayout,
    initialised: Mapping[str, Any] | None = None,
    fresh: Sequence[str] = (),
    subtrees: Sequence[str] | None = None,
    source: str = "pretrained params",
) -> Mapping[str, Any]:
    """Host arrays -> the train state's params: master dtype, and each device gets only its shards.

    ``params`` (nested, without the "params" level) overrides the subtrees it holds; the
    parameters ``kept_params`` names come from ``initialised`` (the initialised state's params),
    which may be None only when there are none. Raises as ``kept_params`` does."""
    kept = kept_params(params, layout, fresh, subtrees, source)
    if kept and initialised is None:
        raise ValueError(
            f"pretrained params leave {_listing(kept)} at their initial values, but no initialised params "
            "were given to take them from"
        )
    expected = traverse_util.flatten_dict(layout.abstract["params"], sep="/")
    given = traverse_util.flatten_dict(params, sep="/")
    kept = set(kept)
    placed = {
        path: value for path, value in traverse_util.flatten_dict(initialised or {}, sep="/").items() if path in kept
    }
    for path, value in given.items():
        target = expected[path]
        value = np.asarray(value).astype(target.dtype)
        placed[path] = jax.make_array_from_callback(target.shape, target.sharding, lambda index, v=value: v[index])
    return traverse_util.unflatten_dict(placed, sep="/")


class _ZeroInitialised:
    """``task`` with all-zero initial parameters: ``init_state`` then builds the step-0 state
    (optimizer state, counters, shardings) without compiling the random initialisers, whose values
    the pretrained weights replace anyway (for a large unscanned model that compile is the slow part)."""

    def __init__(self, task):
        self.task = task

    def init_params(self, rng: jax.Array, batch: Batch) -> Mapping[str, Any]:
        boxed = jax.eval_shape(self.task.init_params, rng, batch)
        is_box = lambda x: isinstance(x, nn.Partitioned)
        return jax.tree.map(
            lambda box: box.replace_boxed(jnp.zeros(box.value.shape, box.value.dtype)), boxed, is_leaf=is_box
        )

    def loss(self, params, batch: Batch, rng: jax.Array, *, train: bool):
        return self.task.loss(params, batch, rng, train=train)


def write_step0_checkpoint(
    run: Run,
    workdir: str,
    mesh: Mesh,
    load: Callable[[], Mapping[str, Any]],
    source: str,
    fresh: Sequence[str] = (),
    subtrees: Sequence[str] | None = None,
) -> State | None:
    """Saves the initial train state holding the weights ``load()`` returns (nested host arrays,
    without the "params" level; see ``place_params``: ``fresh``, ``subtrees``) as step 0 of
    ``workdir``'s checkpoints, with the data iterator at its start, and returns it. Does nothing
    (None, ``load`` not called) when the workdir already has a checkpoint to resume from. ``source``
    names the weights in the log and in errors."""
    checkpointer = Checkpointer(paths.join(workdir, run.train.checkpoint.subdir), run.train.checkpoint)
    try:
        if checkpointer.latest_step() is not None:
            return None
        pipeline = run.train_pipeline()
        batch = run.example_batch()  # parameter shapes do not depend on the bucket
        layout = build_layout(run.task, batch, run.train.optimizer, mesh, run.train.sharding_rules)
        params = load()
        random_init = bool(kept_params(params, layout, fresh, subtrees, source))
        state = init_state(run.task if random_init else _ZeroInitialised(run.task), batch, layout, run.train.seed)
        state["params"] = place_params(
            params, layout, state["params"] if random_init else None, fresh, subtrees, source
        )
        with pipeline.iterator() as iterator:
            checkpointer.save(0, state, iterator)
            checkpointer.wait()
        log.info("step 0 of %s holds the weights of %s", checkpointer.directory, source)
        return state
    finally:
        checkpointer.close()
