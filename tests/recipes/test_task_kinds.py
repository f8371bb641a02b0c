"""The encoder-only CTC and text-only LM task kinds: the Speech LLM's own parameter paths, their
losses, greedy-CTC decoding and held-out perplexity."""

import contextlib
import io
import json
import os

import jax
import numpy as np
import pytest
from flax import linen as nn
from flax import traverse_util

from jaxspeech.cli import main
from jaxspeech.config_dict import load_config_file
from jaxspeech.recipes.build import build
from jaxspeech.recipes.run import train_and_evaluate
from jaxspeech.tasks.text_lm import perplexity

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
pytestmark = pytest.mark.xdist_group("repo_data")  # builds / reads data/tiny_debug in the checkout


def debug_config(**task):
    os.chdir(REPO)
    config = load_config_file("configs/tiny_asr.py:debug")
    if task:
        config.task = task
    return config


def unboxed(tree):
    is_box = lambda x: isinstance(x, nn.Partitioned)
    return jax.tree.map(lambda x: x.value if is_box(x) else x, tree, is_leaf=is_box)


def param_shapes(run):
    params = unboxed(jax.eval_shape(run.task.init_params, jax.random.key(0), run.example_batch()))
    return {path: leaf.shape for path, leaf in traverse_util.flatten_dict(params, sep="/").items()}


@pytest.fixture(scope="module")
def speech_shapes():
    return param_shapes(build(debug_config(), progress=False))


def test_ctc_encoder_has_exactly_the_speech_llm_encoder_and_ctc_head(speech_shapes):
    shapes = param_shapes(build(debug_config(kind="ctc_encoder"), progress=False))
    expected = {p: s for p, s in speech_shapes.items() if p.split("/")[0] in ("encoder", "ctc_head")}
    assert shapes == expected and any(p.startswith("ctc_head/") for p in shapes)


def test_text_lm_has_exactly_the_speech_llm_llm(speech_shapes):
    shapes = param_shapes(build(debug_config(kind="text_lm", rows=2, length=32), progress=False))
    assert shapes == {p: s for p, s in speech_shapes.items() if p.startswith("llm/")}


def test_perplexity_is_exp_of_the_mean_target_nll():
    run = build(debug_config(kind="text_lm", rows=2, length=32), progress=False)
    params = unboxed(run.task.init_params(jax.random.key(1), run.example_batch()))
    batches = [next(run.kind.train_pipeline(run.manifest).iterator())]
    result = perplexity(run.task, params, batches)
    batch = batches[0]
    log_probs = jax.nn.log_softmax(run.task.logits(params, batch)[:, :-1], axis=-1)
    picked = np.take_along_axis(np.asarray(log_probs), np.asarray(batch.tokens)[:, 1:, None], axis=-1)[..., 0]
    mask = np.asarray(batch.loss_mask)[:, 1:]
    assert result.tokens == mask.sum() > 0
    np.testing.assert_allclose(result.perplexity, np.exp(-(picked * mask).sum() / mask.sum()), rtol=1e-5)


@pytest.mark.parametrize(
    "task, headline",
    [
        (dict(kind="ctc_encoder"), "| test/ctc | 4 |"),  # of eval.decoders, the one a CTC encoder has
        (dict(kind="text_lm", rows=2, length=48, eval_sentences=8), "| dev sentences |"),
    ],
)
def test_debug_run_trains_evaluates_and_reports(tmp_path, task, headline):
    config = debug_config(**task)
    config.train.total_steps = 2
    summary = train_and_evaluate(config, str(tmp_path), progress=False)
    assert summary["step"] == 2 and all(np.isfinite(v) for v in summary["scores"].values())
    assert headline in (tmp_path / "report.md").read_text()
    metrics = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    loss = "train/ctc_loss" if task["kind"] == "ctc_encoder" else "train/nll"
    assert [m["step"] for m in metrics if loss in m] == [1, 2]
    assert (tmp_path / "eval" / "test.ctc.jsonl").exists() == (task["kind"] == "ctc_encoder")
    assert not (tmp_path / "eval" / "test.llm.jsonl").exists()
    if task["kind"] == "ctc_encoder":
        _transcribe_decodes_as_the_ctc_eval(tmp_path)
    else:
        assert main(["transcribe", "--checkpoint", str(tmp_path), "x.flac"]) == 2  # a text LM transcribes nothing


def _transcribe_decodes_as_the_ctc_eval(workdir):
    """``jaxspeech transcribe --checkpoint`` of a CTC-encoder run prints, per file, what its eval wrote."""
    records = [json.loads(line) for line in (workdir / "eval" / "test.ctc.jsonl").read_text().splitlines()][:3]
    files = [r["audio_filepath"] for r in records]
    with contextlib.redirect_stdout(io.StringIO()) as out:
        assert main(["transcribe", "--checkpoint", str(workdir), *files]) == 0
    printed = dict(line.split("\t", 1) for line in out.getvalue().splitlines())
    assert printed == {r["audio_filepath"]: r["hypothesis"] for r in records}
    assert main(["transcribe", "--checkpoint", str(workdir), "--beam", "4", *files]) == 2  # greedy only
