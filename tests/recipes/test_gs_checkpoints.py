"""Hugging Face checkpoints (``init.whisper_dir`` / ``init.llm_dir``) and ``plan.json`` on ``gs://``,
through the local Cloud Storage emulator of tests/recipes/conftest.py (``bucket``): a bucket folder is
mirrored once into ``$JAXSPEECH_CACHE`` (``paths.local_copy``), and every reader of the checkpoint
(config.json shapes, weights, tokenizer) sees the mirror."""

import json
import os
import pathlib
import shlex

import jax
import numpy as np
import pytest
from etils import epath
from flax import traverse_util

from jaxspeech import paths
from jaxspeech.cli import main
from jaxspeech.cloud.tpu_vm import launch_steps
from jaxspeech.config_dict import load_config_file, plain
from jaxspeech.errors import MissingFileError, UsageError
from jaxspeech.plan.parts import speech_vocabulary
from jaxspeech.plan.plan_file import VERSION, read_plan, write_plan
from jaxspeech.recipes.build import read_sections
from jaxspeech.testing import hf_models
from jaxspeech.testing.tokenizer_dirs import write_chatml_dir
from jaxspeech.testing.whisper import micro_hf_model, save_micro_dir

REPO = pathlib.Path(__file__).resolve().parents[2]
PLAN = {
    "version": VERSION,
    "topology": "v5p:2x2x1",
    "devices": 4,
    "hosts": 1,
    "device_kind": "TPU v5",
    "settings": {"train.mesh": {"data": 1, "fsdp": 4, "tensor": 1}, "data.pipeline.bucket_rows": [8]},
}


def _upload(local: str, uri: str) -> str:
    for name in os.listdir(local):
        (epath.Path(uri) / name).write_bytes(pathlib.Path(local, name).read_bytes())
    return uri


@pytest.fixture(scope="module")
def checkpoints(bucket, tmp_path_factory) -> dict:
    """{"whisper": (local folder, its gs:// copy), "llm": (...)}: a micro HF Whisper (tokenizer,
    generation config) and a tiny Qwen2 with a ChatML tokenizer, safetensors both."""
    local = tmp_path_factory.mktemp("hf")
    whisper = save_micro_dir(micro_hf_model(), str(local / "whisper"))
    llm = write_chatml_dir(str(local / "qwen2"))
    hf_models.build("qwen2_bias", vocab_size=512).save_pretrained(llm, safe_serialization=True)
    return {
        "whisper": (whisper, _upload(whisper, f"{bucket}/hf/whisper-micro")),
        "llm": (llm, _upload(llm, f"{bucket}/hf/qwen2-tiny")),
    }


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv(paths.CACHE_VARIABLE, str(tmp_path / "cache"))


def _flat(tree) -> dict:
    return traverse_util.flatten_dict(jax.device_get(tree), sep="/")


def _step0(config: dict) -> tuple:
    """(task kind, flat step-0 weights) of ``config`` as a run reads them: shapes, tokenizer, weights."""
    kind, data, _, _ = read_sections(config)
    kind.setup(kind.tokenizer_path(data.dir, data.tokenizer, data.build_tokenizer))
    return kind, _flat(kind.pretrained().load())


def _assert_same(ours: dict, theirs: dict) -> None:
    assert ours.keys() == theirs.keys() and ours
    for name, value in theirs.items():
        np.testing.assert_array_equal(ours[name], value, err_msg=name, strict=True)


def test_a_whisper_run_reads_its_checkpoint_from_a_bucket(checkpoints):
    local, uri = checkpoints["whisper"]
    kind, remote = _step0({"task": {"kind": "whisper_seq2seq"}, "init": {"whisper_dir": uri}})
    mirror = paths.mirror_folder(uri)
    assert kind.init.whisper_dir == mirror and kind.tokenizer_file == mirror
    assert os.path.isfile(os.path.join(mirror, paths.MIRRORED))
    local_kind, weights = _step0({"task": {"kind": "whisper_seq2seq"}, "init": {"whisper_dir": local}})
    assert local_kind.init.whisper_dir == local  # a local folder is read where it is
    assert kind.model == local_kind.model and kind.generation == local_kind.generation
    _assert_same(remote, weights)


def test_a_speech_llm_reads_both_checkpoints_from_a_bucket(checkpoints, monkeypatch):
    monkeypatch.chdir(REPO)

    def config(part: int) -> dict:
        config = plain(load_config_file(str(REPO / "configs" / "slam_asr.py") + ":debug"))
        config["init"] = {"whisper_dir": checkpoints["whisper"][part], "llm_dir": checkpoints["llm"][part]}
        return config

    planned, data, _, _ = read_sections(config(1), need_weights=False)  # what jaxspeech plan reads
    assert not os.path.exists(os.path.join(planned.init.llm_dir, "model.safetensors"))
    vocab, source = speech_vocabulary(config(1), planned, data)
    assert source == f"the tokenizer {paths.mirror_folder(checkpoints['llm'][1])}"
    kind, remote = _step0(config(1))
    assert vocab == kind.vocab
    assert kind.tokenizer_file == paths.mirror_folder(checkpoints["llm"][1])
    local_kind, weights = _step0(config(0))
    assert kind.model == local_kind.model and kind.vocab_size == local_kind.vocab_size
    _assert_same(remote, weights)


def test_a_mirror_is_reused_and_a_half_made_one_completed(checkpoints):
    _, uri = checkpoints["llm"]
    mirror = paths.local_copy(uri, weights=False)  # what a plan reads: configs and tokenizer
    assert sorted(os.listdir(mirror)) == sorted(
        [
            paths.MIRRORED_WITHOUT_WEIGHTS,
            "config.json",
            "generation_config.json",
            "tokenizer.json",
            "tokenizer_config.json",
        ]
    )
    config_json = os.path.join(mirror, "config.json")
    written = os.stat(config_json).st_mtime_ns
    assert paths.local_copy(uri) == mirror  # the weights join the files already there
    weights = os.path.join(mirror, "model.safetensors")
    expected = epath.Path(uri, "model.safetensors").read_bytes()
    assert pathlib.Path(weights).read_bytes() == expected
    assert os.stat(config_json).st_mtime_ns == written
    mirrored = {name: os.stat(os.path.join(mirror, name)).st_mtime_ns for name in os.listdir(mirror)}
    assert paths.local_copy(uri) == mirror and paths.local_copy(uri, weights=False) == mirror
    assert {name: os.stat(os.path.join(mirror, name)).st_mtime_ns for name in os.listdir(mirror)} == mirrored

    # A copy cut short: no marker, the weights file shorter than the bucket's.
    os.remove(os.path.join(mirror, paths.MIRRORED))
    with open(weights, "r+b") as f:
        f.truncate(100)
    assert paths.local_copy(uri) == mirror
    assert pathlib.Path(weights).read_bytes() == expected
    assert os.path.isfile(os.path.join(mirror, paths.MIRRORED))
    assert os.stat(config_json).st_mtime_ns == written  # whole files of the first copy are kept


def test_a_bucket_folder_without_config_json_is_named(bucket, checkpoints):
    # ``checkpoints`` uploads the whisper folder, so that the error is the LLM folder's, in any test order.
    (epath.Path(bucket) / "hf" / "not-a-checkpoint" / "tokenizer.json").write_text("{}")
    uri = f"{bucket}/hf/not-a-checkpoint"
    with pytest.raises(MissingFileError, match=f"{uri}/config.json: init.llm_dir: expected a Hugging Face checkpoint"):
        read_sections({"init": {"whisper_dir": f"{bucket}/hf/whisper-micro", "llm_dir": uri}})
    with pytest.raises(FileNotFoundError, match=f"{bucket}/hf/nothing: no files to copy there"):
        paths.local_copy(f"{bucket}/hf/nothing")


def test_plan_json_on_a_bucket(bucket):
    uri = f"{bucket}/plans/run/plan.json"
    write_plan(PLAN, uri)
    assert read_plan(uri) == PLAN
    assert json.loads(epath.Path(uri).read_text()) == PLAN
    (epath.Path(bucket) / "plans" / "broken.json").write_text("{")
    with pytest.raises(UsageError, match=f"{bucket}/plans/broken.json: cannot be read as a plan"):
        read_plan(f"{bucket}/plans/broken.json")

    steps = {
        step.name: step.command
        for step in launch_steps(
            PLAN, name="run", zone="z", project=None, config="c.py", workdir=f"{bucket}/runs/x", plan_path=uri
        )
    }
    assert uri not in steps["scp"]  # the workers read the plan on the bucket
    train = shlex.split(steps["train"][-1].removeprefix("cd jaxspeech && "))
    assert train[train.index("--plan") + 1] == uri
    launch = ["launch", "--plan", uri, "--config", "c.py", "--name", "n", "--zone", "z", "--dry-run"]
    assert main(launch + ["--workdir", f"{bucket}/runs/x"]) == 0  # jaxspeech launch reads the plan there
