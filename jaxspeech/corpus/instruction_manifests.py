"""The instruction-task manifests of a built corpus (``instructions.py``), written beside its own.

``data.instruction_tasks`` (``InstructionTasksConfig``) names them; ``write_instruction_manifests``
writes, in the corpus folder ``DIR``:

* ``DIR/<train_set>.jsonl``: the records of split ``train_split`` as a task mix (``train_mix``:
  task -> weight; ``mix_size`` examples, default one per record of the split,
  ``instructions.mix_records``);
* ``DIR/<eval_split>_<task>.jsonl`` for each of ``eval_tasks``: every record of split
  ``eval_split`` that the task applies to, asked that task (``instructions.eval_records``), so each
  task is an eval set of its own (``test_rate``, ``test_last_word``...) with its own metrics.

Audio paths stay relative to ``DIR``. The rate and pitch ranges come from the corpus's own
``corpus.json``. Each file is derived from the corpus alone, so writing again gives the same
bytes: a file that already holds them is left alone, any other is replaced whole (never half
written).
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any, Callable, Mapping

from jaxspeech import paths
from jaxspeech.config_dict import plain
from jaxspeech.corpus.build import CORPUS_JSON
from jaxspeech.corpus.instructions import check_mix, check_task_names, eval_records, mix_records
from jaxspeech.corpus.sentences import SPLITS
from jaxspeech.corpus.utterances import CorpusConfig
from jaxspeech.errors import ConfigError, KnownError, MissingFileError

WHERE = "data.instruction_tasks"


@dataclasses.dataclass(frozen=True)
class InstructionTasksConfig:
    """``data.instruction_tasks``: which instruction manifests a run writes (see the module docstring).

    ``train_mix``: task -> weight (empty: no training mix); ``train_set``: the mix's data set name
    (name it in ``data.train``); ``mix_size``: its examples (None: one per record of ``train_split``);
    ``eval_tasks``: one eval set ``<eval_split>_<task>`` per task (name them in ``data.eval_sets``);
    ``seed``: the mix's draw."""

    train_mix: Mapping[str, float] = dataclasses.field(default_factory=dict)
    train_set: str = "train_instructions"
    train_split: str = "train"
    mix_size: int | None = None
    eval_tasks: tuple[str, ...] = ()
    eval_split: str = "test"
    seed: int = 0

    def __post_init__(self):
        mix = plain(self.train_mix)
        object.__setattr__(self, "train_mix", check_mix(mix, f"{WHERE}.train_mix") if mix else {})
        check_task_names(self.eval_tasks, f"{WHERE}.eval_tasks")
        if self.mix_size is not None and self.mix_size < 1:
            raise ConfigError(f"{WHERE}.mix_size", f"expected None or an integer >= 1, got {self.mix_size}")
        for key in ("train_split", "eval_split"):
            if getattr(self, key) not in SPLITS:
                raise ConfigError(f"{WHERE}.{key}", f"expected a split of the corpus, one of {SPLITS}")
        if not self.train_set or "/" in self.train_set or self.train_set in SPLITS:
            raise ConfigError(
                f"{WHERE}.train_set", f"expected a file name other than the splits', got {self.train_set!r}"
            )

    def eval_set(self, task: str) -> str:
        """The data set name of task ``task``'s eval manifest."""
        return f"{self.eval_split}_{task}"


def corpus_config(data_dir: str) -> CorpusConfig:
    """The ``CorpusConfig`` a built corpus in ``data_dir`` was made with (its ``corpus.json``)."""
    path = paths.join(data_dir, CORPUS_JSON)
    if not paths.exists(path):
        raise MissingFileError(
            path, "instruction tasks read the corpus's rate and pitch ranges from it: build the corpus first"
        )
    return CorpusConfig.from_json(json.loads(paths.read_text(path))["config"])


def _read_split(data_dir: str, split: str) -> list[dict[str, Any]]:
    path = paths.join(data_dir, f"{split}.jsonl")
    if not paths.exists(path):
        raise MissingFileError(path, f"the corpus has no {split} manifest")
    return [json.loads(line) for line in paths.read_text(path).split("\n") if line.strip()]


def _write_if_changed(path: str, records: list[dict[str, Any]]) -> None:
    text = "".join(json.dumps(record) + "\n" for record in records)
    if not (paths.exists(path) and paths.read_text(path) == text):
        paths.write_whole(path, text)


def _derived(key: str, split: str, derive: Callable[[], list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """``derive()``, its ``ValueError`` (a record a task cannot read, a mix task without records) a
    ``ConfigError`` at ``key`` that names the split's manifest."""
    try:
        return derive()
    except KnownError:
        raise
    except ValueError as e:
        raise ConfigError(key, f"{e} ({split}.jsonl)") from None


def write_instruction_manifests(data_dir: str, config: InstructionTasksConfig) -> dict[str, str]:
    """Writes the manifests of ``config`` into the corpus folder ``data_dir``; returns {data set name:
    path}. An eval task that applies to no record of its split is an error naming it."""
    corpus = corpus_config(data_dir)
    written = {}
    if config.train_mix:
        records = _read_split(data_dir, config.train_split)
        mix = _derived(
            f"{WHERE}.train_mix",
            config.train_split,
            lambda: mix_records(records, config.train_mix, corpus, seed=config.seed, size=config.mix_size),
        )
        written[config.train_set] = paths.join(data_dir, f"{config.train_set}.jsonl")
        _write_if_changed(written[config.train_set], mix)
    if config.eval_tasks:
        records = _read_split(data_dir, config.eval_split)
        for task in config.eval_tasks:
            key = f"{WHERE}.eval_tasks"
            asked = _derived(key, config.eval_split, lambda: eval_records(records, task, corpus))
            if not asked:
                raise ConfigError(
                    key, f"task {task!r} applies to none of the {len(records)} records of {config.eval_split}.jsonl"
                )
            written[config.eval_set(task)] = paths.join(data_dir, f"{config.eval_set(task)}.jsonl")
            _write_if_changed(written[config.eval_set(task)], asked)
    return written
