"""Instruction tasks on the embedded corpus: questions about an utterance whose answers are exact,
because the corpus knows every field of every utterance. No audio is synthesised for them.

A task record is a manifest record of the corpus (``build.py``: ``audio_filepath``, ``duration``,
``text``, ``voice``, ``rate``, ``pitch``, ``held_out_voice``, ``split``, ...: the same audio and
metadata) with

* ``id``: ``"<utterance id>/<task>"`` (``"/<k>"`` appended to the k-th repeat of an utterance in a
  training mix);
* ``instruction``: the task's name, a key of the prompts of ``task_prompts()`` (what the model is
  asked; pass them as ``task.prompt.prompts``);
* ``target``: the answer (``data.sources.answer_text``); an ``asr`` record has none: its answer is
  its transcript ``text``, which every task record keeps.

Tasks (``TASKS``):

* ``asr``: the transcript;
* ``number``, ``color``, ``name``: the one word of that word class (numbers and clock hours, colours,
  first names: ``words.py``) that the transcript holds. Only records whose transcript holds exactly
  one such word, and no word that might or might not be one (``brown`` the colour or the surname,
  ``thirty`` after a clock hour, ``a hundred``), have the task (``WordClass``);
* ``rate``: ``slow`` / ``normal`` / ``fast``: the lower, middle or upper third of the corpus's rate
  range (``CorpusConfig.rate_wpm``, drawn uniformly) that the record's eSpeak rate lies in;
* ``pitch``: ``low`` / ``mid`` / ``high`` from the record's ``pitch`` and ``CorpusConfig.pitch`` likewise.
  eSpeak's pitch setting shifts each voice's own base pitch: a property of the rendering that the
  held-out voice has too, unlike the voice's name;
* ``last_word``: the transcript's last word.

Every prompt holds the audio (an ``{audio}`` slot): a manifest record needs ``audio_filepath``
(``data.sources.ManifestSource``) and every instruction prompt an ``{audio}`` slot
(``data.prompts``), so text-only instructions have no place in these manifests.

``mix_records`` turns a split's records into a training mix (a task per example, in shares set by
weights, seeded); ``eval_records`` gives one task's eval set.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from jaxspeech.corpus.sentences import english_grammar, rule_literals, slot_words
from jaxspeech.corpus.utterances import CorpusConfig
from jaxspeech.data.prompts import DEFAULT_INSTRUCTION_PROMPTS
from jaxspeech.errors import ConfigError

Record = Mapping[str, Any]
RATE_CLASSES = ("slow", "normal", "fast")
PITCH_CLASSES = ("low", "mid", "high")


@dataclasses.dataclass(frozen=True)
class WordClass:
    """The words of some grammar word classes, split by whether a transcript word is surely one of them.

    ``answers``: one-word entries that nothing else in the grammar writes; ``doubtful``: one-word
    entries that another class or the rules also write ("brown": a colour or a surname); ``phrases``:
    entries of several words ("a hundred")."""

    answers: frozenset[str]
    doubtful: frozenset[str]
    phrases: tuple[tuple[str, ...], ...]

    def the_one_in(self, transcript: str) -> str | None:
        """The answer word ``transcript`` holds if it holds exactly one (however often) and nothing doubtful."""
        words = transcript.split()
        found = set(words) & self.answers
        if len(found) != 1 or set(words) & self.doubtful:
            return None
        for phrase in self.phrases:
            n = len(phrase)
            if any(tuple(words[k : k + n]) == phrase for k in range(len(words) - n + 1)):
                return None
        return found.pop()


@functools.lru_cache(maxsize=None)
def word_class(slots: tuple[str, ...]) -> WordClass:
    """The ``WordClass`` of the grammar's word classes ``slots`` (``sentences._SLOT_TABLE`` names)."""
    grammar = english_grammar()
    elsewhere = rule_literals() | {word for slot in grammar.slots if slot not in slots for word in slot_words(slot)}
    entries = {entry for slot in slots for entry in grammar.slots[slot].entries}
    single = {entry for entry in entries if " " not in entry}
    return WordClass(
        answers=frozenset(single - elsewhere),
        doubtful=frozenset(single & elsewhere),
        phrases=tuple(sorted(tuple(entry.split()) for entry in entries - single)),
    )


def third(value: float, low: float, high: float, where: str) -> int:
    """0, 1 or 2: the third of the integer range ``low .. high`` (inclusive) that ``value`` lies in."""
    if not low <= value <= high:
        raise ValueError(f"{where}: {value} lies outside the corpus's range {low} .. {high}")
    return min(2, int(3 * (value - low) // (high - low + 1)))


def _word_answer(slots: tuple[str, ...]) -> Callable[[Record, CorpusConfig], str | None]:
    return lambda record, corpus: word_class(slots).the_one_in(record["text"])


def _third_answer(field: str, range_field: str, classes: tuple[str, str, str]):
    def answer(record: Record, corpus: CorpusConfig) -> str:
        where = f"record {record.get('id')!r} field {field!r}"
        if not isinstance(record.get(field), (int, float)):
            raise ValueError(f"{where}: expected a number, got {record.get(field)!r} (a record of the embedded corpus)")
        low, high = getattr(corpus, range_field)
        return classes[third(record[field], low, high, where)]

    return answer


@dataclasses.dataclass(frozen=True)
class Task:
    """An instruction task: its prompt (a user turn with an ``{audio}`` slot) and
    ``answer(record, corpus) -> str`` (None: the task does not apply to the record)."""

    name: str
    prompt: str
    answer: Callable[[Record, CorpusConfig], str | None]


TASKS: Mapping[str, Task] = {
    task.name: task
    for task in (
        Task("asr", DEFAULT_INSTRUCTION_PROMPTS["asr"], lambda record, corpus: record["text"]),
        Task("number", "{audio}\nWhich number was mentioned?", _word_answer(("number", "clock"))),
        Task("color", "{audio}\nWhich color was mentioned?", _word_answer(("color",))),
        Task("name", "{audio}\nWhich first name was mentioned?", _word_answer(("name",))),
        Task("rate", "{audio}\nIs the speech slow, normal or fast?", _third_answer("rate", "rate_wpm", RATE_CLASSES)),
        Task(
            "pitch", "{audio}\nIs the voice pitched low, mid or high?", _third_answer("pitch", "pitch", PITCH_CLASSES)
        ),
        Task("last_word", "{audio}\nSay only the last word.", lambda record, corpus: record["text"].split()[-1]),
    )
}


def check_task_names(names: Sequence[str], where: str) -> None:
    """Raises ``ConfigError(where, ...)`` naming the names that are not tasks of ``TASKS``."""
    unknown = [name for name in names if name not in TASKS]
    if unknown:
        raise ConfigError(where, f"unknown instruction task(s) {unknown}; expected names of {list(TASKS)}")


def check_mix(weights: Mapping[str, Any], where: str) -> dict[str, float]:
    """``weights`` (task -> weight) as floats; ``ConfigError(where, ...)`` for an unknown task or a
    weight that is not a finite number >= 0, or all weights 0."""
    check_task_names(list(weights), where)
    numbers = [w for w in weights.values() if isinstance(w, (int, float)) and not isinstance(w, bool)]
    if len(numbers) != len(weights) or not all(math.isfinite(w) and w >= 0 for w in numbers) or sum(numbers) <= 0:
        raise ConfigError(where, f"expected finite weights >= 0, not all 0, got {dict(weights)}")
    return {task: float(w) for task, w in weights.items()}


def task_prompts(names: Sequence[str] | None = None) -> dict[str, str]:
    """{instruction: prompt} of the tasks ``names`` (default: all), for ``task.prompt.prompts``."""
    names = list(TASKS) if names is None else list(names)
    check_task_names(names, "instruction tasks")
    return {name: TASKS[name].prompt for name in names}


def task_record(record: Record, task: str, corpus: CorpusConfig, repeat: int = 0) -> dict[str, Any] | None:
    """``record`` asked task ``task`` (see the module docstring), or None when the task does not apply."""
    answer = TASKS[task].answer(record, corpus)
    if answer is None:
        return None
    out = {**record, "id": f"{record['id']}/{task}" + (f"/{repeat}" if repeat else ""), "instruction": task}
    if task != "asr":
        out["target"] = answer
    return out


def eval_records(records: Sequence[Record], task: str, corpus: CorpusConfig) -> list[dict[str, Any]]:
    """Task ``task`` on every record of ``records`` it applies to, in their order (one eval set)."""
    check_task_names([task], "instruction task")
    asked = (task_record(record, task, corpus) for record in records)
    return [record for record in asked if record is not None]


def task_counts(weights: Mapping[str, float], size: int) -> dict[str, int]:
    """Examples per task: ``size`` split in proportion to ``weights`` (largest remainders; ties to
    the earlier task of ``TASKS``), so each share is within 1 / ``size`` of its weight's share."""
    names = [name for name in TASKS if name in weights]
    total = float(sum(weights[name] for name in names))
    exact = {name: size * weights[name] / total for name in names}
    counts = {name: int(exact[name]) for name in names}
    by_remainder = sorted(names, key=lambda name: -(exact[name] - counts[name]))
    for name in by_remainder[: size - sum(counts.values())]:
        counts[name] += 1
    return counts


def mix_records(
    records: Sequence[Record],
    weights: Mapping[str, float],
    corpus: CorpusConfig,
    *,
    seed: int = 0,
    size: int | None = None,
) -> list[dict[str, Any]]:
    """``size`` task records (default: one per record) drawn from ``records``, task ``t`` on
    ``task_counts(weights, size)[t]`` of them: each task draws the records it applies to in a seeded
    random order, all of them before any twice (a repeat's id gains ``/<k>``). The mix comes out
    shuffled; the same records, weights and seed give the same mix."""
    weights = check_mix(weights, "instruction task mix")
    size = len(records) if size is None else size
    rng = np.random.default_rng(seed)
    mixed: list[dict[str, Any]] = []
    for task, count in task_counts(weights, size).items():
        if count == 0:
            continue
        pool = [record for record in records if TASKS[task].answer(record, corpus) is not None]
        if not pool:
            raise ValueError(f"instruction task {task!r} applies to none of the {len(records)} records of the mix")
        order = np.concatenate([rng.permutation(len(pool)) for _ in range(-(-count // len(pool)))])[:count]
        mixed += [task_record(pool[i], task, corpus, k // len(pool)) for k, i in enumerate(order)]
    return [mixed[i] for i in rng.permutation(len(mixed))]
