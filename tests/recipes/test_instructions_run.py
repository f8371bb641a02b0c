"""configs/instructions.py: prompts checked by key, the debug variant trained a few steps on its task
mix and evaluated on one set per task (exact match and transcript echo beside ASR's WER), and the run
reopened by ``jaxspeech eval``."""

import collections
import json
import os
import pathlib

import pytest

from jaxspeech.cli import main
from jaxspeech.testing.debug_runs import train_debug_run
from jaxspeech.config_dict import dataclass_from_dict, load_config_file
from jaxspeech.corpus.instructions import PITCH_CLASSES, RATE_CLASSES, task_prompts
from jaxspeech.errors import ConfigError
from jaxspeech.recipes.build import build
from jaxspeech.tasks.speech_llm_kind import SpeechLLMTaskConfig

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# Builds or reads data/tiny_debug in the checkout, as test_speech_recipe.py does: one xdist worker.
pytestmark = pytest.mark.xdist_group("repo_data")
CONFIG = os.path.join(REPO, "configs", "instructions.py")
DEBUG_SETS = ("test_asr", "test_rate", "test_pitch", "test_last_word")


def _jsonl(path):
    return [json.loads(line) for line in pathlib.Path(path).read_text().splitlines() if line.strip()]


def test_prompt_config_names_a_bad_prompt_or_an_instruction_without_one():
    with pytest.raises(ConfigError, match=r"^task\.prompt\.prompts: .*'rate'.*has no \{audio\} slot"):
        dataclass_from_dict(SpeechLLMTaskConfig, {"prompt": {"prompts": {"rate": "Fast or slow?"}}}, "task")
    with pytest.raises(ConfigError, match=r"^task\.prompt\.instruction: 'rate' has no prompt; known: \['asr'"):
        dataclass_from_dict(SpeechLLMTaskConfig, {"prompt": {"instruction": "rate"}}, "task")
    task = dataclass_from_dict(SpeechLLMTaskConfig, {"prompt": {"instruction": "rate", "prompts": task_prompts()}})
    assert task.prompt.prompts["rate"] == "{audio}\nIs the speech slow, normal or fast?"


def test_instruction_tasks_need_a_prompt_for_each_task():
    config = load_config_file(f"{CONFIG}:debug")
    config.task.prompt.prompts = {}
    with pytest.raises(ConfigError, match=r"^task\.prompt\.prompts: has no prompt for the instruction task\(s\) "):
        build(config, progress=False, build_data=False)
    config = load_config_file(f"{CONFIG}:debug")
    config.data.instruction_tasks.eval_tasks = ("asr", "speed")
    with pytest.raises(ConfigError, match=r"^data\.instruction_tasks\.eval_tasks: unknown instruction task\(s\) "):
        build(config, progress=False, build_data=False)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    return train_debug_run(REPO, CONFIG, tmp_path_factory.mktemp("instructions_debug_run"))


@pytest.mark.slow
def test_debug_run_trains_on_the_mix_and_scores_each_task(run_dir):
    mix = _jsonl(pathlib.Path(REPO, "data/tiny_debug/train_debug.jsonl"))
    train = _jsonl(pathlib.Path(REPO, "data/tiny_debug/train.jsonl"))
    shares = collections.Counter(r["instruction"] for r in mix)
    assert len(mix) == len(train) and max(shares.values()) - min(shares.values()) <= 1 and len(shares) == 4
    report = (run_dir / "report.md").read_text()
    assert "| test_asr | 4 |" in report  # WER of the ASR set
    for name in DEBUG_SETS[1:]:
        assert f"| {name} | 4 | " in report.split("Exact match")[1]
        assert f"| {name} | 4 | 0.5 | " in report.split("Transcript echo")[1]
    rate = _jsonl(run_dir / "eval" / "test_rate.jsonl")
    assert len(rate) == 4 and {r["reference"] for r in rate} <= set(RATE_CLASSES)
    assert all(r["instruction"] == "rate" and isinstance(r["transcript_echo"], bool) for r in rate)
    pitch = _jsonl(run_dir / "eval" / "test_pitch.jsonl")
    assert {r["reference"] for r in pitch} <= set(PITCH_CLASSES)
    last = _jsonl(run_dir / "eval" / "test_last_word.jsonl")
    assert all(r["reference"] == r["text"].split()[-1] for r in last)
    assert (
        main(["eval", "--workdir", str(run_dir), "--sets", "test_pitch", "--max-examples", "2", "--no-progress"]) == 0
    )
    assert len(_jsonl(run_dir / "eval" / "test_pitch.jsonl")) == 2
