"""The instruction study's table from finished runs: per task, exact match, the share of answers of
the right task type (a rate class for ``rate``, a number word for ``number``, one word for
``last_word``...), the share of the commonest answer (1.0: one answer whatever the audio) and the
transcript echo, read from each run's ``eval/test_<task>.jsonl``.

  python experiments/instructions/summarize.py runs/instructions_balanced runs/instructions_asr_heavy
"""

from __future__ import annotations

import argparse
import collections
import json
import pathlib

from jaxspeech.corpus.instructions import PITCH_CLASSES, RATE_CLASSES, TASKS, word_class

WORD_SLOTS = {"number": ("number", "clock"), "color": ("color",), "name": ("name",)}


def right_type(task: str, answer: str) -> bool:
    """Whether ``answer`` is of the kind ``task`` asks for, right or wrong."""
    if task in WORD_SLOTS:
        words = word_class(WORD_SLOTS[task])
        return answer in words.answers | words.doubtful
    if task == "rate":
        return answer in RATE_CLASSES
    if task == "pitch":
        return answer in PITCH_CLASSES
    if task == "last_word":
        return len(answer.split()) == 1
    raise ValueError(f"no answer type for task {task!r}")


def task_row(task: str, records: list[dict]) -> dict[str, float]:
    answers = [record["hypothesis"].strip() for record in records]
    return {
        "examples": len(records),
        "exact match %": 100 * sum(record["exact_match"] for record in records) / len(records),
        "right type %": 100 * sum(right_type(task, answer) for answer in answers) / len(records),
        "commonest answer %": 100 * collections.Counter(answers).most_common(1)[0][1] / len(records),
        "transcript echo %": 100 * sum(record["transcript_echo"] for record in records) / len(records),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", help="finished configs/instructions.py run folders")
    args = parser.parse_args()
    columns = ["examples", "exact match %", "right type %", "commonest answer %", "transcript echo %"]
    print("| run | task | " + " | ".join(columns) + " |")
    print("|---|---|" + "---:|" * len(columns))
    for run in args.runs:
        for task in TASKS:
            path = pathlib.Path(run, "eval", f"test_{task}.jsonl")
            if task == "asr" or not path.exists():
                continue
            row = task_row(task, [json.loads(line) for line in path.read_text().splitlines()])
            cells = [f"{row[c]:.0f}" if c == "examples" else f"{row[c]:.1f}" for c in columns]
            print(f"| {pathlib.Path(run).name} | {task} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
