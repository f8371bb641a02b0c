"""TFDS datasets named in a config (``data.train`` / ``data.eval_sets`` = ``tfds:NAME/SPLIT``, read as
``data.tfds`` says) through the run's sources, batches and evaluation."""

import json
import os

import jax
import numpy as np
import pytest
from flax import linen as nn

from jaxspeech.config_dict import load_config_file
from jaxspeech.data.sources import ConcatSource, ManifestSource, TfdsSource
from jaxspeech.errors import ConfigError
from jaxspeech.recipes.build import build, read_sections
from jaxspeech.recipes.evaluate import evaluate_sets

pytest.importorskip("tensorflow_datasets", reason="TFDS data sets need the [tfds] extra")
from jaxspeech.testing.tfds_data import TINY_SPEECH_UTTERANCES, write_tiny_speech  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
pytestmark = pytest.mark.xdist_group("repo_data")  # builds / reads data/tiny_debug in the checkout
TINY = "tfds:tiny_speech/train"


def tfds_config(data_dir: str):
    os.chdir(REPO)
    config = load_config_file("configs/tiny_asr.py:debug").to_dict()
    config["data"].update(
        train=("train", TINY),
        eval_sets=(TINY,),
        tfds={"data_dir": data_dir, "sample_rate": 16000},  # "speech" is a plain int16 tensor
    )
    config["eval"].update(
        decoders=("ctc",), metrics=("wer", "bleu", "exact_match"), max_examples=None
    )  # greedy CTC: cheap to compile
    return config


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tfds")
    write_tiny_speech(str(folder / "data"), str(folder))
    return build(tfds_config(str(folder / "data")), progress=False)


def test_train_and_eval_sets_read_the_tfds_dataset(run):
    train = run.train_source()
    assert isinstance(train, ConcatSource) and isinstance(train.sources[1], TfdsSource)
    manifest = len(ManifestSource(run.manifest("train")))
    assert len(train) == manifest + TINY_SPEECH_UTTERANCES
    assert train[manifest]["id"].startswith("utt-") and train[manifest]["sample_rate"] == 16000
    assert run.set_label(TINY) == "tiny_speech-train"
    texts = []
    with run.eval_data(TINY).iterator() as batches:
        for host_batch in batches:
            features = np.asarray(host_batch.batch.features)
            for meta in host_batch.metadata:
                texts.append(meta["text"])
                assert np.abs(features[meta["row"], meta["clip"]]).sum() > 0
            assert not host_batch.rejects
    assert sorted(texts) == [f"utterance {i}" for i in range(TINY_SPEECH_UTTERANCES)]


def test_a_tfds_eval_set_is_scored_with_the_configs_metrics(run, tmp_path):
    params = nn.unbox(jax.jit(run.task.init_params)(jax.random.key(0), run.example_batch()))
    scores = evaluate_sets(run, params, str(tmp_path), progress=False)
    assert sorted(scores) == [f"tiny_speech-train/ctc {m}" for m in ("BLEU", "EXACT_MATCH", "WER")]
    assert len(scores["tiny_speech-train/ctc EXACT_MATCH"].matches) == TINY_SPEECH_UTTERANCES
    lines = (tmp_path / "eval" / "tiny_speech-train.ctc.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]  # the audio arrays stay out of the file
    # The examples' answers are their targets, not their transcripts.
    assert sorted(r["reference"] for r in records) == [f"answer {i}" for i in range(TINY_SPEECH_UTTERANCES)]
    assert sorted(r["text"] for r in records) == [f"utterance {i}" for i in range(TINY_SPEECH_UTTERANCES)]
    assert all("exact_match" in r and "wer" in r and "audio" not in r for r in records)


@pytest.mark.parametrize("key", ["train", "eval_sets"])
def test_a_malformed_tfds_name_is_named_with_its_key(key):
    config = load_config_file(os.path.join(REPO, "configs/tiny_asr.py:debug")).to_dict()
    config["data"][key] = ("tfds:tiny_speech",)
    with pytest.raises(ConfigError, match=rf"data.{key}: 'tfds:tiny_speech': expected 'tfds:NAME/SPLIT'"):
        read_sections(config, need_weights=False)
