"""8 fake devices (data 2 x fsdp 2 x tensor 2) train like 1 device, and their checkpoint restores
on 1 and 4 devices."""

import jax
import numpy as np

from jaxspeech.sharding.mesh import make_mesh
from jaxspeech.train.checkpoint import Checkpointer
from jaxspeech.train.config import train_config_from_dict
from jaxspeech.train.loop import train
from jaxspeech.train.metrics import read_log
from jaxspeech.train.state import build_layout

from jaxspeech.testing.tiny_task import TinyTask, grain_iterator, loop_config

CONFIG = loop_config(total_steps=5)


def test_eight_devices_match_one_and_the_checkpoint_restores_on_fewer(tmp_path):
    assert jax.device_count() == 8
    task = TinyTask()
    meshes = {
        "8": make_mesh({"data": 2, "fsdp": 2, "tensor": 2}),
        "1": make_mesh({"data": 1}, jax.devices()[:1]),
    }
    results, losses = {}, {}
    for name, mesh in meshes.items():
        workdir = tmp_path / name
        results[name] = train(task, train_config_from_dict(CONFIG), grain_iterator(batch_size=8), workdir, mesh=mesh)
        steps, values = read_log(workdir)["train/loss"]
        assert steps.tolist() == [1, 2, 3, 4, 5]
        losses[name] = values

    sharded = results["8"].state["params"]["llm_attention"]["q_proj"]["kernel"]
    assert len(sharded.sharding.device_set) == 8 and not sharded.sharding.is_fully_replicated
    relative = np.abs(losses["8"] - losses["1"]) / np.abs(losses["1"])
    assert relative.max() <= 1e-5, relative
    assert losses["1"][-1] < losses["1"][0]

    # The 8-device checkpoint restores onto 1 and 4 devices with bitwise-equal values.
    expected = jax.device_get(results["8"].state)
    batch = next(grain_iterator(batch_size=8))
    checkpointer = Checkpointer(tmp_path / "8" / "checkpoints")
    for devices, shape in ((jax.devices()[:1], {"data": 1}), (jax.devices()[4:], {"data": 2, "tensor": 2})):
        mesh = make_mesh(shape, devices)
        layout = build_layout(task, batch, train_config_from_dict(CONFIG).optimizer, mesh)
        restored = checkpointer.restore_latest(layout.abstract)
        assert restored.step == 5
        for got, want in zip(jax.tree.leaves(restored.state), jax.tree.leaves(expected), strict=True):
            assert got.sharding.device_set == set(devices)
            assert np.asarray(got).tobytes() == np.asarray(want).tobytes()
    checkpointer.close()
