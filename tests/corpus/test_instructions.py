"""Instruction tasks on the corpus: exact answers on hand-built records, the word classes the grammar
gives, the task mix's shares and determinism, the manifests on disk, and errors that name the task."""

import collections
import json
import os

import pytest

from jaxspeech.config_dict import dataclass_from_dict
from jaxspeech.corpus.instruction_manifests import InstructionTasksConfig, write_instruction_manifests
from jaxspeech.corpus.instructions import (
    TASKS,
    eval_records,
    mix_records,
    task_counts,
    task_prompts,
    task_record,
    third,
    word_class,
)
from jaxspeech.corpus.utterances import CorpusConfig
from jaxspeech.data.prompts import instruction_prompts
from jaxspeech.errors import ConfigError, MissingFileError
from jaxspeech.recipes.config import DataConfig

CORPUS = CorpusConfig()  # rate 140 .. 200, pitch 30 .. 70


def record(index: int, text: str, rate: int = 170, pitch: int = 50, split: str = "test") -> dict:
    return {
        "id": f"{split}-{index:07d}",
        "audio_filepath": f"{split}/{split}-{index:07d}.flac",
        "duration": 3.0,
        "text": text,
        "voice": "en-us",
        "rate": rate,
        "pitch": pitch,
        "split": split,
        "held_out_voice": False,
    }


def answers(r: dict) -> dict:
    return {task: TASKS[task].answer(r, CORPUS) for task in TASKS}


def test_answers_are_exact_on_hand_built_records():
    assert answers(record(1, "the red car stopped at five in the morning", rate=140, pitch=70)) == {
        "asr": "the red car stopped at five in the morning",
        "number": "five",
        "color": "red",
        "name": None,
        "rate": "slow",
        "pitch": "high",
        "last_word": "morning",
    }
    brown = answers(record(2, "mister brown gave two apples to anna", rate=181, pitch=44))
    assert (brown["color"], brown["number"], brown["name"]) == (None, "two", "anna")  # brown: a colour or a surname
    assert (brown["rate"], brown["pitch"]) == ("fast", "mid")
    doubtful = answers(record(3, "we met james and lucy at five thirty"))  # james: also a surname
    assert (doubtful["name"], doubtful["number"]) == (None, None)  # thirty: also the rules' "five thirty"
    assert answers(record(4, "a hundred people saw three red and blue birds"))["number"] is None  # a hundred
    assert answers(record(4, "a hundred people saw three red and blue birds"))["color"] is None  # two colours
    assert answers(record(5, "she drank two cups and then two more"))["number"] == "two"  # one number, twice


def test_word_classes_keep_only_words_nothing_else_in_the_grammar_writes():
    colors = word_class(("color",))
    assert colors.answers == {"red", "blue", "yellow", "purple", "pink", "black"}
    assert colors.doubtful == {"brown", "golden", "gray", "green", "orange", "silver", "white"}
    numbers = word_class(("number", "clock"))
    assert {"one", "two", "twelve", "fifteen", "fifty"} <= numbers.answers and "thirty" in numbers.doubtful
    assert numbers.phrases == (("a", "hundred"),)
    names = word_class(("name",))
    assert {"anna", "lucy", "oliver"} <= names.answers and {"james", "austin", "jordan"} <= names.doubtful


def test_rate_and_pitch_split_the_corpus_ranges_into_thirds():
    for low, high in (CORPUS.rate_wpm, CORPUS.pitch, (0, 8)):
        sizes = collections.Counter(third(v, low, high, "x") for v in range(low, high + 1))
        assert sorted(sizes) == [0, 1, 2] and max(sizes.values()) - min(sizes.values()) <= 1
    assert [TASKS["rate"].answer(record(0, "a b", rate=r), CORPUS) for r in (160, 161, 180, 181)] == [
        "slow",
        "normal",
        "normal",
        "fast",
    ]
    assert [TASKS["pitch"].answer(record(0, "a b", pitch=p), CORPUS) for p in (30, 43, 44, 57, 58)] == [
        "low",
        "low",
        "mid",
        "mid",
        "high",
    ]
    with pytest.raises(ValueError, match=r"record 'test-0000000' field 'rate': 139 lies outside .* 140 \.\. 200"):
        TASKS["rate"].answer(record(0, "a b", rate=139), CORPUS)
    with pytest.raises(ValueError, match=r"record 'x' field 'pitch': expected a number, got None"):
        TASKS["pitch"].answer({"id": "x", "text": "a b"}, CORPUS)


def test_task_records_keep_the_utterance_and_carry_instruction_and_target():
    r = record(7, "please call oliver tomorrow")
    asked = task_record(r, "name", CORPUS)
    assert asked == {**r, "id": "test-0000007/name", "instruction": "name", "target": "oliver"}
    assert "target" not in task_record(r, "asr", CORPUS)  # the transcript is the answer
    assert task_record(r, "color", CORPUS) is None
    assert task_record(r, "last_word", CORPUS, repeat=2)["id"] == "test-0000007/last_word/2"
    prompts = instruction_prompts(task_prompts())  # every task prompt is a valid instruction prompt
    assert set(TASKS) <= set(prompts) and prompts["asr"] == "{audio}\nTranscribe the audio."


def _records(n: int) -> list[dict]:
    return [record(k, f"they saw {'two' if k % 5 == 0 else 'many'} birds", rate=140 + k % 61) for k in range(n)]


def test_the_mix_matches_its_weights_and_repeats_scarce_records_evenly():
    records = _records(40)
    mix = mix_records(records, {"asr": 4, "rate": 2, "pitch": 1, "last_word": 1}, CORPUS, seed=3)
    assert collections.Counter(r["instruction"] for r in mix) == {"asr": 20, "rate": 10, "pitch": 5, "last_word": 5}
    assert len({r["id"] for r in mix}) == 40
    assert task_counts({"asr": 1, "rate": 1, "pitch": 1}, 10) == {"asr": 4, "rate": 3, "pitch": 3}
    # "number" applies to the 8 records with "two": its 20 examples use each of them 2 or 3 times.
    mix = mix_records(records, {"asr": 1, "number": 1}, CORPUS, seed=0)
    numbers = collections.Counter(r["id"].split("/")[0] for r in mix if r["instruction"] == "number")
    assert sum(numbers.values()) == 20 and len(numbers) == 8 and set(numbers.values()) == {2, 3}
    assert all(r["target"] == "two" for r in mix if r["instruction"] == "number")
    assert len({r["id"] for r in mix}) == 40


def test_the_mix_is_deterministic_per_seed():
    records, weights = _records(30), {"asr": 1, "rate": 1, "last_word": 1}
    assert mix_records(records, weights, CORPUS, seed=1) == mix_records(records, weights, CORPUS, seed=1)
    assert mix_records(records, weights, CORPUS, seed=1) != mix_records(records, weights, CORPUS, seed=2)
    # Which records a task asks is drawn too, not the first ones of the split.
    asked = [
        {r["id"] for r in mix_records(records, weights, CORPUS, seed=s) if r["instruction"] == "rate"} for s in (1, 2)
    ]
    assert len(asked[0]) == len(asked[1]) == 10 and asked[0] != asked[1]


def test_unknown_tasks_and_bad_weights_are_named():
    with pytest.raises(ConfigError, match=r"unknown instruction task\(s\) \['colour'\]; expected names of \['asr'"):
        mix_records(_records(3), {"asr": 1, "colour": 1}, CORPUS)
    with pytest.raises(
        ConfigError, match=r"^data\.instruction_tasks\.eval_tasks: unknown instruction task\(s\) \['speed'\]"
    ):
        dataclass_from_dict(DataConfig, {"instruction_tasks": {"eval_tasks": ("asr", "speed")}}, "data")
    with pytest.raises(
        ConfigError, match=r"^data\.instruction_tasks\.train_mix: unknown instruction task\(s\) \['x'\]"
    ):
        InstructionTasksConfig(train_mix={"x": 1.0})
    for weights in ({"asr": -1.0}, {"asr": 0.0}, {"asr": float("nan")}, {"asr": "1"}):
        with pytest.raises(ConfigError, match=r"^data\.instruction_tasks\.train_mix: expected finite weights >= 0"):
            InstructionTasksConfig(train_mix=weights)
    with pytest.raises(ConfigError, match=r"^data\.instruction_tasks\.mix_size: expected None or an integer >= 1"):
        InstructionTasksConfig(train_mix={"asr": 1}, mix_size=0)
    with pytest.raises(ValueError, match="instruction task 'color' applies to none of the 3 records"):
        mix_records(_records(3), {"color": 1}, CORPUS)


def _corpus_folder(folder) -> str:
    (folder / "corpus.json").write_text(json.dumps({"config": CORPUS.to_json()}))
    for split, texts in {
        "train": ["we saw red birds", "call anna now", "the cat sleeps"],
        "test": ["they ate five apples", "the blue car is fast", "mister brown left"],
    }.items():
        lines = [json.dumps(record(k, text, split=split)) for k, text in enumerate(texts)]
        (folder / f"{split}.jsonl").write_text("\n".join(lines) + "\n")
    return str(folder)


def test_manifests_are_written_once_deterministically(tmp_path):
    folder = _corpus_folder(tmp_path)
    config = InstructionTasksConfig(train_mix={"asr": 1, "rate": 1, "color": 1}, eval_tasks=("rate", "number"))
    written = write_instruction_manifests(folder, config)
    assert sorted(written) == ["test_number", "test_rate", "train_instructions"]
    contents = {name: open(path).read() for name, path in written.items()}
    stamps = {name: os.stat(path).st_mtime_ns for name, path in written.items()}
    assert write_instruction_manifests(folder, config) == written
    assert {name: open(path).read() for name, path in written.items()} == contents
    assert {name: os.stat(path).st_mtime_ns for name, path in written.items()} == stamps  # left alone
    number = [json.loads(line) for line in contents["test_number"].splitlines()]
    assert [(r["id"], r["target"], r["audio_filepath"]) for r in number] == [
        ("test-0000000/number", "five", "test/test-0000000.flac")
    ]
    assert len(contents["test_rate"].splitlines()) == 3
    sized = InstructionTasksConfig(train_mix={"asr": 1, "rate": 1}, train_set="train_sized", mix_size=7)
    lines = open(write_instruction_manifests(folder, sized)["train_sized"]).read().splitlines()
    assert collections.Counter(json.loads(line)["instruction"] for line in lines) == {"asr": 4, "rate": 3}


def test_manifest_errors_name_the_task_or_the_file(tmp_path):
    folder = _corpus_folder(tmp_path)
    with pytest.raises(ConfigError, match=r"eval_tasks: task 'name' applies to none of the 3 records of test\.jsonl"):
        write_instruction_manifests(folder, InstructionTasksConfig(eval_tasks=("name",)))
    with pytest.raises(ConfigError, match=r"train_mix: instruction task 'number' applies to none .*\(train\.jsonl\)"):
        write_instruction_manifests(folder, InstructionTasksConfig(train_mix={"number": 1}))
    os.remove(tmp_path / "corpus.json")
    with pytest.raises(MissingFileError, match="corpus.json: instruction tasks read the corpus's rate and pitch"):
        write_instruction_manifests(folder, InstructionTasksConfig(eval_tasks=("rate",)))


def test_eval_records_keep_the_order_of_the_split():
    records = [record(k, text) for k, text in enumerate(["one cat", "no number", "six dogs"])]
    assert [(r["id"], r["target"]) for r in eval_records(records, "number", CORPUS)] == [
        ("test-0000000/number", "one"),
        ("test-0000002/number", "six"),
    ]
