"""``init.from_run``: a Speech LLM started from a CTC run's encoder and a text run's LLM, bit for bit,
everything else at its random init; shape mismatches and missing subtrees are named."""

import os

import jax
import numpy as np
import pytest
from flax import traverse_util

from jaxspeech.config_dict import load_config_file
from jaxspeech.recipes.build import build
from jaxspeech.recipes.restore import restore
from jaxspeech.recipes.run import train_and_evaluate, write_pretrained
from jaxspeech.sharding.mesh import make_mesh
from jaxspeech.train.state import build_layout, init_state

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
pytestmark = pytest.mark.xdist_group("repo_data")  # builds / reads data/tiny_debug in the checkout


def debug_config(**task):
    os.chdir(REPO)
    config = load_config_file("configs/tiny_asr.py:debug")
    config.train.total_steps = 1
    config.eval.max_examples = 1
    if task:
        config.task = task
    return config


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    """A one-step CTC-encoder run and a one-step text-LM run."""
    folders = {}
    for name, task in (
        ("ctc", dict(kind="ctc_encoder")),
        ("text", dict(kind="text_lm", rows=2, length=48, eval_sentences=4)),
    ):
        folders[name] = str(tmp_path_factory.mktemp(name))
        train_and_evaluate(debug_config(**task), folders[name], progress=False)
    return folders


def flat(params):
    return traverse_util.flatten_dict(jax.device_get(params), sep="/")


def step0(config, workdir):
    run = build(config, progress=False)
    return run, flat(write_pretrained(run, str(workdir), make_mesh(run.train.mesh))["params"])


def test_subtrees_come_bitwise_from_their_runs_and_the_rest_is_random_init(sources, tmp_path):
    config = debug_config()
    config.init = dict(from_run=dict(encoder=sources["ctc"], ctc_head=sources["ctc"], llm=f"{sources['text']}:llm"))
    run, params = step0(config, tmp_path)
    ctc, text = flat(restore(sources["ctc"])[1]), flat(restore(sources["text"])[1])
    for path, value in params.items():
        source = ctc if path.startswith(("encoder/", "ctc_head/")) else text if path.startswith("llm/") else None
        if source is not None:
            assert value.dtype == source[path].dtype and np.array_equal(value, source[path]), path
    layout = build_layout(run.task, run.example_batch(), run.train.optimizer, make_mesh(run.train.mesh))
    fresh = flat(init_state(run.task, run.example_batch(), layout, run.train.seed)["params"])
    connector = [p for p in params if p.startswith("connector/")]
    assert connector and all(np.array_equal(params[p], fresh[p]) for p in connector)
    assert any(not np.array_equal(params[p], fresh[p]) for p in params if p.startswith("llm/"))


def test_a_whole_run_continues_at_the_same_paths(sources, tmp_path):
    config = debug_config(kind="ctc_encoder")
    config.init = dict(from_run=sources["ctc"])
    _, params = step0(config, tmp_path)
    source = flat(restore(sources["ctc"])[1])
    assert params.keys() == source.keys() and all(np.array_equal(params[p], source[p]) for p in params)


def test_a_shape_mismatch_names_the_parameter_and_both_shapes(sources, tmp_path):
    config = debug_config()
    config.model.llm.intermediate_size = 40  # the text run's MLP is 48 wide
    config.init = dict(from_run=dict(llm=sources["text"]))
    with pytest.raises(
        ValueError,
        match=r"init.from_run: llm <- .*: parameter llm/layers/mlp/down_proj/kernel has "
        r"shape \(1, 48, 32\), the model expects \(1, 40, 32\)",
    ):
        step0(config, tmp_path)
    assert not (tmp_path / "checkpoints").exists() or not os.listdir(tmp_path / "checkpoints")


def test_a_missing_subtree_names_what_the_source_has(sources, tmp_path):
    config = debug_config()
    config.init = dict(from_run=dict(llm=sources["ctc"]))
    with pytest.raises(ValueError, match=r"have no subtree 'llm'; they have \['ctc_head', 'encoder'\]"):
        step0(config, tmp_path)
    config.init = dict(from_run=dict(encoder=f"{sources['ctc']}:encoder/nothing"))
    with pytest.raises(ValueError, match=r"no subtree 'encoder/nothing'; encoder has \['encoder/conformer'\]"):
        step0(config, tmp_path)
