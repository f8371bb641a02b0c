"""Reopening a finished (or running) training workdir of any task kind: config, tokenizer and the
newest checkpoint's parameters, without the training data."""

from __future__ import annotations

import jax
import numpy as np

from jaxspeech import paths
from jaxspeech.recipes.build import Run, build
from jaxspeech.recipes.workdir import load_config
from jaxspeech.errors import MissingFileError
from jaxspeech.sharding.mesh import make_mesh
from jaxspeech.train.checkpoint import Checkpointer
from jaxspeech.train.state import build_layout


def restore(workdir: str, *, progress: bool = False) -> tuple[Run, dict, int]:
    """(run, params, step) of the newest readable checkpoint in ``workdir``."""
    run = build(load_config(workdir), progress, build_data=False)  # reopening a run never synthesises data
    train_config = run.train
    layout = build_layout(
        run.task,
        run.example_batch(),
        train_config.optimizer,
        make_mesh({"data": 1}, jax.devices()[:1]),
        train_config.sharding_rules,
    )
    # Read-only: reopening a run never moves or writes anything under its checkpoints.
    checkpointer = Checkpointer(
        paths.join(workdir, train_config.checkpoint.subdir), train_config.checkpoint, read_only=True
    )
    try:
        # Only the parameters: the optimizer state's layout may differ between versions.
        restored = checkpointer.restore_latest({"params": layout.abstract["params"]}, with_data=False, partial=True)
    finally:
        checkpointer.close()
    if restored is None:
        raise MissingFileError(paths.join(workdir, train_config.checkpoint.subdir), "holds no checkpoint")
    params = jax.tree.map(np.asarray, restored.state["params"])
    return run, params, restored.step
