"""The training loop: logs, eval, checkpoints, resume, the time budget and the non-finite limit."""

import glob
import json

import jax
import numpy as np
import pytest

from jaxspeech.sharding.mesh import make_mesh
from jaxspeech.train import optim
from jaxspeech.train.checkpoint import Checkpointer
from jaxspeech.train.config import train_config_from_dict
from jaxspeech.train.loop import NonFiniteError, train
from jaxspeech.train.metrics import read_log
from jaxspeech.train.state import build_layout

from .tiny_task import FREEZE_OPTIMIZER, TinyTask, grain_iterator, loop_config, make_batch


def _one_device():
    return make_mesh({"data": 1}, jax.devices()[:1])


def test_logs_evaluates_checkpoints_and_resumes(tmp_path):
    evaluated = []

    def eval_fn(params, step):
        evaluated.append(step)
        return {"wer": 1.0 / step, "param_norm": float(_norm(params))}

    config = loop_config(
        total_steps=6, eval_every=3, checkpoint={"every_steps": 3},
        metrics={"log_every": 2, "tensorboard": True, "peak_flops_per_device": 1e9},
    )
    result = train(TinyTask(), train_config_from_dict(config), grain_iterator(8), tmp_path, eval_fn=eval_fn, mesh=_one_device())
    assert (result.step, result.stop_reason) == (6, "completed")
    assert evaluated == [3, 6]
    assert result.compile_seconds > 0

    log = read_log(tmp_path)
    assert log["train/loss"][0].tolist() == [2, 4, 6] and log["eval/wer"][0].tolist() == [3, 6]
    for key in ("accuracy", "grad_norm", "learning_rate", "examples_per_s", "tokens_per_s", "steps_per_s", "mfu", "skipped_steps"):
        assert np.all(np.isfinite(log[f"train/{key}"][1])), key
    assert np.all(log["train/mfu"][1] > 0) and np.all(log["train/examples_per_s"][1] > 0)
    optimizer = train_config_from_dict(config).optimizer
    np.testing.assert_allclose(log["train/learning_rate"][1][0], np.mean([optim.learning_rate(s, optimizer) for s in (0, 1)]), rtol=1e-6)
    assert glob.glob(str(tmp_path / "tensorboard" / "events.out.tfevents.*"))
    checkpointer = Checkpointer(tmp_path / "checkpoints")
    assert checkpointer.all_steps() == [3, 6]
    checkpointer.close()

    resumed = train(TinyTask(), train_config_from_dict({**config, "total_steps": 8}), grain_iterator(8), tmp_path, eval_fn=eval_fn, mesh=_one_device())
    assert (resumed.step, resumed.stop_reason) == (8, "completed")
    assert evaluated == [3, 6, 8]  # eval runs at the end when the last step is not an eval step
    assert read_log(tmp_path)["train/loss"][0].tolist() == [2, 4, 6, 8]


def _norm(tree):
    return np.sqrt(sum(np.sum(np.square(np.asarray(x))) for x in jax.tree.leaves(tree)))


def test_time_budget_stops_and_checkpoints(tmp_path):
    config = train_config_from_dict(loop_config(total_steps=1000, time_budget_s=0.0))
    result = train(TinyTask(), config, grain_iterator(8), tmp_path, mesh=_one_device())
    assert (result.step, result.stop_reason) == (1, "time_budget")
    checkpointer = Checkpointer(tmp_path / "checkpoints")
    assert checkpointer.latest_step() == 1
    checkpointer.close()


def test_data_exhausted_stops_and_checkpoints(tmp_path):
    batches = iter([make_batch(8, offset=8 * i) for i in range(3)])
    result = train(TinyTask(), train_config_from_dict(loop_config(total_steps=10)), batches, tmp_path, mesh=_one_device())
    assert (result.step, result.stop_reason) == (3, "data_exhausted")


def test_too_many_non_finite_steps_stop_with_an_error_and_a_finite_last_checkpoint(tmp_path):
    """From the 5th batch on every gradient is NaN: steps 5 and 6 are skipped (limit 2), step 7
    raises. The checkpoint of step 6 holds the parameters of step 4, all finite."""

    def batches():
        for i in range(100):
            yield {**make_batch(8, offset=8 * i), "poison": np.full(8, float(i >= 4), np.float32)}

    config = train_config_from_dict(
        loop_config(total_steps=20, optimizer=FREEZE_OPTIMIZER, max_consecutive_skipped_steps=2, checkpoint={"every_steps": 2})
    )
    with pytest.raises(NonFiniteError, match=r"3 consecutive steps up to step 7 .* last checkpoint: step 6"):
        train(TinyTask(), config, batches(), tmp_path, mesh=_one_device())

    log = read_log(tmp_path)
    assert log["train/skipped_steps"][1][log["train/skipped_steps"][0].tolist().index(6)] == 2
    layout = build_layout(TinyTask(), {**make_batch(8), "poison": np.zeros(8, np.float32)}, config.optimizer, _one_device())
    checkpointer = Checkpointer(tmp_path / "checkpoints")
    assert checkpointer.latest_step() == 6
    at_6, at_4 = (checkpointer.restore(step, layout.abstract).state for step in (6, 4))
    checkpointer.close()
    assert int(at_6["skipped_steps"]) == 2
    for a, b in zip(jax.tree.leaves(at_6["params"]), jax.tree.leaves(at_4["params"])):
        assert np.all(np.isfinite(a)) and np.asarray(a).tobytes() == np.asarray(b).tobytes()
    assert json.loads(open(tmp_path / "metrics.jsonl").readlines()[-1])["step"] >= 6
