"""A run's folder: the resolved experiment config it saves (``config.json``) and reads back."""

from __future__ import annotations

import json

import ml_collections

from jaxspeech import paths
from jaxspeech.config_dict import plain
from jaxspeech.errors import MissingFileError, UsageError
from jaxspeech.recipes.config import SECTIONS

CONFIG_JSON = "config.json"


def save_config(config: ml_collections.ConfigDict, workdir: str) -> None:
    """Writes ``config`` to ``<workdir>/config.json`` (reread by ``jaxspeech eval`` / ``transcribe --checkpoint``)."""
    paths.make_dirs(workdir)
    paths.write_whole(paths.join(workdir, CONFIG_JSON), json.dumps(plain(config), indent=2))


def load_config(workdir: str) -> ml_collections.ConfigDict:
    """The experiment config a run saved in its workdir."""
    path = paths.join(workdir, CONFIG_JSON)
    if not paths.exists(path):
        raise MissingFileError(path, f"not found: {workdir} is not a jaxspeech training workdir")
    try:
        config = json.loads(paths.read_text(path))
    except (OSError, ValueError) as e:
        raise UsageError(path, f"cannot be read as JSON ({e})") from e
    unknown = sorted(set(config) - set(SECTIONS)) if isinstance(config, dict) else f"a JSON {type(config).__name__}"
    if unknown:
        raise UsageError(
            path,
            f"is not a jaxspeech run's config (it holds {unknown[:6]}, not only the sections "
            f"{list(SECTIONS)}): {workdir} is not a jaxspeech training workdir",
        )
    return ml_collections.ConfigDict(config)
