"""A config's debug variant trained by ``jaxspeech train`` into a fresh folder, for tests that read
its run folder (config, checkpoints, report, evaluation outputs)."""

from __future__ import annotations

import os
import pathlib

from jaxspeech.cli import main


def train_debug_run(repo: str, config: str, workdir: pathlib.Path) -> pathlib.Path:
    """Runs ``jaxspeech train --config <config>:debug --workdir <workdir>`` from ``repo`` (where its
    debug corpus is built once, in ``data/``) and returns ``workdir``; fails the test if it fails."""
    os.chdir(repo)
    code = main(["train", "--config", f"{config}:debug", "--workdir", str(workdir), "--no-progress"])
    assert code == 0, f"jaxspeech train --config {config}:debug exited with {code}"
    return workdir
