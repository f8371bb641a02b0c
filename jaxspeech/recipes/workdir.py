"""A run's folder: the resolved experiment config it saves (``config.json``) and reads back."""

from __future__ import annotations

import json
import os

import ml_collections

from jaxspeech.config_dict import plain
from jaxspeech.errors import MissingFileError

CONFIG_JSON = "config.json"


def save_config(config: ml_collections.ConfigDict, workdir: str) -> None:
    """Writes ``config`` to ``<workdir>/config.json`` (reread by ``jaxspeech eval`` / ``transcribe --checkpoint``)."""
    os.makedirs(workdir, exist_ok=True)
    with open(os.path.join(workdir, CONFIG_JSON), "w") as f:
        json.dump(plain(config), f, indent=2)


def load_config(workdir: str) -> ml_collections.ConfigDict:
    """The experiment config a run saved in its workdir."""
    path = os.path.join(workdir, CONFIG_JSON)
    if not os.path.exists(path):
        raise MissingFileError(path, f"not found: {workdir} is not a jaxspeech training workdir")
    with open(path) as f:
        return ml_collections.ConfigDict(json.load(f))
