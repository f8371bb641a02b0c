"""``jaxspeech plan`` on small configs: a TPU plan compiled on this CPU machine (Pallas kernels
through Mosaic), its memory figures against what training compiles on the CPU backend, refusals
with the numbers, and plan.json applied to a training config."""

import jax
import pytest

from jaxspeech.config_dict import load_config_file
from jaxspeech.plan.measure import measure_step
from jaxspeech.plan.parts import planned_run
from jaxspeech.plan.plan_file import apply_plan, check_devices, read_plan, write_plan
from jaxspeech.platforms import libtpu_installed
from jaxspeech.sharding.mesh import make_mesh
from jaxspeech.train.state import build_layout
from jaxspeech.train.step import CompiledStep
from jaxspeech.types import Batch, BatchShape
from tests.plan.small_configs import small_speech_llm

GIB = 2**30
needs_libtpu = pytest.mark.skipif(
    not libtpu_installed(), reason="libtpu is not installed (the [dev] and [tpu] extras bring it): no TPU compiler"
)


def _device_bytes(tree, device) -> int:
    """Bytes of ``device``'s shards of the arrays in ``tree``."""
    return sum(s.data.nbytes for x in jax.tree.leaves(tree) for s in x.addressable_shards if s.device == device)


def test_memory_figures_are_what_training_compiles_on_the_cpu_backend():
    run = planned_run(load_config_file("configs/slam_asr.py:debug"), local_devices=8)
    mesh = make_mesh({"data": 2, "fsdp": 4}, jax.devices()[:8])
    shape = BatchShape(batch_size=8, clips=1, frames=300, tokens=96, n_mels=80)
    planned = measure_step(run, mesh, shape).memory

    # What training builds and compiles for a host batch of that shape (train/loop.py), and arrays
    # laid out as its state.
    batch = Batch.padding(shape)
    layout = build_layout(run.task, batch, run.train.optimizer, mesh, run.train.sharding_rules)
    state = jax.tree.map(lambda a: jax.numpy.zeros(a.shape, a.dtype, device=a.sharding), layout.abstract)
    stats = CompiledStep(run.task, layout, run.train.optimizer).lowered(batch).compile().memory_analysis()
    compiled_total = (
        stats.argument_size_in_bytes
        + stats.output_size_in_bytes
        - stats.alias_size_in_bytes
        + stats.temp_size_in_bytes
        + stats.generated_code_size_in_bytes
    )
    assert planned.total == compiled_total
    device = mesh.devices.flat[0]
    assert planned.params == _device_bytes(state["params"], device) > 0
    assert planned.optimizer == _device_bytes(state["opt_state"], device) > 0


@needs_libtpu
def test_plan_for_a_tpu_slice_compiles_the_pallas_train_step_and_round_trips(tmp_path):
    from jaxspeech.plan.planner import make_plan

    plan = make_plan(
        small_speech_llm(),
        config_name="small",
        sets=[],
        topology="v5e:2x2",
        remat="none",
        buckets=(300,),
        max_rows_per_device=1,
        decode=False,
    )
    (bucket,) = plan["buckets"]
    assert plan["mesh"] in [c["mesh"] for c in plan["mesh_choice"]["candidates"]] and plan["mesh_choice"]["why"]
    assert bucket["batch"] == 4  # one row per chip: the cap given
    assert 0 < bucket["memory_per_device"]["total"] <= 0.9 * 16 * GIB
    assert [c["batch"] for c in bucket["compiles"]] == [4]
    estimate = bucket["estimate"]
    assert estimate["source"] == "roofline" and "Pallas kernel call(s)" in estimate["why"]
    assert estimate["model_flops"] > 0 and 0 < estimate["mfu"] <= 1

    path = tmp_path / "plan.json"
    write_plan(plan, str(path))
    config = small_speech_llm()
    apply_plan(config, read_plan(str(path)))
    assert tuple(config.data.pipeline.bucket_frames) == (300,)
    assert tuple(config.data.pipeline.bucket_rows) == (4,)
    assert dict(config.train.mesh) == plan["mesh"]
    assert config.model.llm.remat_policy == "none"
    with pytest.raises(ValueError, match=r"made for v5e:2x2 \(4 x TPU v5 lite, 1 host"):
        check_devices(plan, jax.devices(), 1)


@needs_libtpu
def test_a_run_whose_state_does_not_fit_is_refused_with_the_numbers():
    from jaxspeech.plan.planner import make_plan
    from jaxspeech.plan.search import PlanRefused

    config = load_config_file("configs/slam_asr_8b.py")
    config.train.optimizer.lr_rules = ()  # every parameter of the 8.7B trains: 16 bytes each with Adam
    with pytest.raises(PlanRefused, match=r"the train state alone needs \d+\.\d GiB per chip .*v5e has 16 GiB"):
        make_plan(config, config_name="slam_asr_8b", sets=[], topology="v5e:2x2", decode=False)


@needs_libtpu
@pytest.mark.slow
@pytest.mark.parametrize("tokens", [4096, 8192])
def test_flash_attention_holds_no_score_matrix(tokens):
    """The XLA path keeps every layer's softmax probabilities (heads x T x T per row) for the
    backward pass; the flash kernels keep one row statistic per token."""
    from jaxspeech.sharding.topology import tpu_topology

    mesh = make_mesh({"data": 4}, tpu_topology("v5e:2x2").devices)
    shape = BatchShape(batch_size=4, clips=1, frames=300, tokens=tokens, n_mels=80)
    activations = {}
    for impl in ("xla", "pallas"):
        run = planned_run(small_speech_llm(impl, **{"data.pipeline.max_tokens": (tokens, tokens)}), local_devices=4)
        activations[impl] = measure_step(run, mesh, shape).memory.activations
    scores = 2 * 2 * tokens * tokens * 2  # layers x heads x T x T in bf16, one row per chip
    assert activations["xla"] >= scores
    assert activations["pallas"] < scores / 4
