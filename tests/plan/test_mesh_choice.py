"""The planner chooses the mesh: candidate splits of a slice, each one's train-state bytes per chip
and weight traffic from shapes alone (no compile), and the search on small configs, compiled for
this machine's 8 CPU devices against a chip whose HBM is made small enough that the choice matters
(the search is the same for TPU devices; ``test_planner.py`` plans a TPU slice)."""

import dataclasses

import jax
import pytest

from jaxspeech.config_dict import load_config_file
from jaxspeech.plan.chips import CHIPS
from jaxspeech.plan.measure import measure_step
from jaxspeech.plan.mesh_choice import mesh_cost, mesh_shapes
from jaxspeech.plan.parts import planned_run
from jaxspeech.plan.search import search
from jaxspeech.sharding.mesh import make_mesh
from jaxspeech.train import optim
from jaxspeech.train.state import build_layout
from jaxspeech.types import Batch, BatchShape
from tests.plan.small_configs import small_speech_llm

SHAPE = BatchShape(batch_size=8, clips=1, frames=300, tokens=96, n_mels=80)


def _layout(run, shape):
    mesh = make_mesh(shape, jax.devices()[:8])
    return build_layout(run.task, Batch.abstract(SHAPE), run.train.optimizer, mesh, run.train.sharding_rules)


def test_candidates_are_the_splits_whose_tensor_size_divides_every_attention_within_a_host():
    assert mesh_shapes(8, 1, (4, 2, 1)) == [{"data": 8 // f, "fsdp": f, "tensor": 1} for f in (1, 2, 4, 8)]
    slice_64 = mesh_shapes(64, 16, (20, 32, 8))  # v5p:4x4x4 (4 chips a host), Whisper-large + Llama-3.1-8B heads
    assert {s["tensor"] for s in slice_64} == {1, 2, 4}
    assert all(s["data"] * s["fsdp"] * s["tensor"] == 64 for s in slice_64) and len(slice_64) == 7 + 6 + 5
    assert {s["tensor"] for s in mesh_shapes(16, 4, (28, 4, 20, 28, 4))} == {1, 2, 4}  # Qwen2.5-7B, cross-attention


def test_state_bytes_and_weight_traffic_per_chip_from_the_layout_without_compiling():
    run = planned_run(load_config_file("configs/slam_asr.py:debug"), local_devices=8)  # encoder and LLM frozen
    traced = _layout(run, {"data": 8})
    trained, _ = optim.split_trainable(traced.abstract["params"], traced.trainable)
    trained_bytes = sum(x.size * 4 for x in jax.tree.leaves(trained))
    for shape in ({"data": 8}, {"data": 2, "fsdp": 4}, {"fsdp": 8}):
        placed = traced.on_mesh(make_mesh(shape, jax.devices()[:8]))
        assert placed.shardings == _layout(run, shape).shardings  # as if traced on that mesh
        cost = mesh_cost(placed)
        state = jax.tree.map(lambda a: jax.numpy.zeros(a.shape, a.dtype, device=a.sharding), placed.abstract)
        # What device 0 really holds of arrays laid out so:
        held = lambda tree: sum(
            s.data.nbytes for x in jax.tree.leaves(tree) for s in x.addressable_shards if s.device == jax.devices()[0]
        )
        assert (cost.params, cost.optimizer) == (held(state["params"]), held(state["opt_state"]))
        if shape == {"data": 8}:
            # Frozen weights cost nothing; trained ones are whole on every chip, their gradients all-reduced.
            assert cost.gradients == trained_bytes
            assert cost.traffic == pytest.approx(2 * trained_bytes * 7 / 8)
    sharded = mesh_cost(traced.on_mesh(make_mesh({"fsdp": 8}, jax.devices()[:8])))
    assert sharded.state < mesh_cost(traced).state and sharded.traffic > mesh_cost(traced).traffic


@pytest.mark.slow  # ~34 CPU-s; the default run plans a TPU slice through the same search (test_planner.py)
def test_fsdp_is_chosen_when_the_state_does_not_fit_with_data_parallelism_alone():
    config = small_speech_llm("xla", **{"train.optimizer.lr_rules": ()})  # everything trains: 16 bytes a parameter
    run = planned_run(config, local_devices=8)
    data_only = mesh_cost(_layout(run, {"data": 8}))
    chip = dataclasses.replace(CHIPS["v5e"], hbm_bytes=int(0.8 * data_only.state / 0.9))  # budget: 80 % of it
    result = search(run, jax.devices()[:8], chip, headroom=0.1, remat="none", buckets=(300,), max_rows_per_device=1)

    assert result.mesh["fsdp"] > 1 and result.mesh["tensor"] == 1
    assert "does not fit with data parallelism alone" in result.why
    refused = {tuple(c.shape.values()): c.refused for c in result.candidates}
    assert "train state alone needs" in refused[(8, 1, 1)]
    (bucket,) = result.buckets
    assert bucket.batch == 8 and bucket.measure.memory.total <= 0.9 * chip.hbm_bytes
    assert len(bucket.compiles) <= 2  # the probe compile, and one on the chosen mesh unless it was the probe's


@pytest.mark.slow
def test_tensor_parallelism_is_chosen_when_one_row_per_chip_does_not_fit_without_it():
    """Heads 4 / 2 (LLM), 2 (encoder): tensor 2 divides them. A budget between what one row per
    chip needs with tensor 1 and with tensor 2 leaves tensor parallelism the only way."""
    config = small_speech_llm(
        "xla",
        **{"init.random.llm.num_heads": 4, "init.random.llm.num_kv_heads": 2, "data.pipeline.max_tokens": (2048, 2048)},
    )
    run = planned_run(config, local_devices=8).with_remat("full")
    shape = dataclasses.replace(SHAPE, tokens=2048)
    need = {
        t: measure_step(
            run,
            make_mesh({"fsdp": 8 // t, "tensor": t}, jax.devices()[:8]),
            dataclasses.replace(shape, batch_size=8 // t),
        ).memory.total
        for t in (1, 2)
    }
    assert need[2] < need[1]
    chip = dataclasses.replace(CHIPS["v5e"], hbm_bytes=int((need[1] + need[2]) / 2 / 0.9))
    result = search(run, jax.devices()[:8], chip, headroom=0.1, remat="full", buckets=(300,), max_rows_per_device=1)
    assert result.mesh["tensor"] == 2 and "tensor 2 divides every attention's heads" in result.why
