"""The real-size configs build, from presets alone, the models they name: parameter and trained
parameter counts from the state's abstract shapes (``jax.eval_shape``: nothing allocated)."""

import math

import jax
import pytest

from jaxspeech.config_dict import load_config_file
from jaxspeech.plan.parts import planned_run
from jaxspeech.train import optim
from jaxspeech.types import Batch, BatchShape

# whisper-large-v3's encoder without its sinusoidal positions (a constant here): two convolutions
# (128 -> 1280 -> 1280, kernel 3) and 32 blocks of 19,676,160 parameters, final LayerNorm.
WHISPER_LARGE_V3_ENCODER = (128 * 1280 * 3 + 1280) + (1280 * 1280 * 3 + 1280) + 32 * 19_676_160 + 2 * 1280
# Llama-3.1-8B with one embedding row and one output column added for the audio placeholder, then
# 127 more of each: 128,257 tokens padded to 128,384 rows (vocab_multiple=128).
LLAMA_31_8B = 8_030_261_248 + 2 * 128 * 4096
FRAME_STACK_4096 = (5 * 1280 * 4096 + 4096) + (4096 * 4096 + 4096)
LORA_16 = 32 * 16 * ((4096 + 4096) * 2 + (4096 + 1024) * 2)  # q, o: 4096 -> 4096; k, v: 4096 -> 1024
EXPECTED = {  # config: (parameters, trained parameters)
    "configs/slam_asr_8b.py": (WHISPER_LARGE_V3_ENCODER + LLAMA_31_8B + FRAME_STACK_4096, FRAME_STACK_4096),
    "configs/slam_asr_8b.py:lora": (
        WHISPER_LARGE_V3_ENCODER + LLAMA_31_8B + FRAME_STACK_4096 + LORA_16,
        FRAME_STACK_4096 + LORA_16,
    ),
}


def _counts(spec: str) -> tuple[int, int]:
    run = planned_run(load_config_file(spec), local_devices=1)
    p = run.pipeline
    batch = Batch.abstract(BatchShape(1, p.clips_per_row[0], p.bucket_frames[0], p.max_tokens[0], p.n_mels))
    params = jax.eval_shape(run.task.init_params, jax.random.key(0), batch)
    params = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), params)
    trained, _ = optim.split_trainable(params, optim.trainable_mask(params, run.train.optimizer))
    count = lambda tree: sum(math.prod(x.shape) for x in jax.tree.leaves(tree))
    return count(params), count(trained)


@pytest.mark.parametrize("spec", sorted(EXPECTED))
def test_slam_asr_8b_is_whisper_large_v3_and_llama_31_8b(spec):
    assert _counts(spec) == EXPECTED[spec]


@pytest.mark.parametrize(
    "spec, billions, trained",
    [
        ("configs/salmonn_7b.py", 8.28, 0.03),
        ("configs/nvlm_7b.py:d", 8.29, 7.66),
        ("configs/nvlm_7b.py:x", 9.92, 9.29),
        ("configs/nvlm_7b.py:h", 9.92, 9.29),
        ("configs/whisper_large_v3.py", 1.54, 1.54),
    ],
)
def test_real_size_configs_have_their_size(spec, billions, trained):
    total, trainable = _counts(spec)
    assert total / 1e9 == pytest.approx(billions, abs=0.005) and trainable / 1e9 == pytest.approx(trained, abs=0.005)


@pytest.mark.parametrize(
    "spec, heads",
    [
        # Whisper-large-v3 encoder; Qwen2-7B-shaped LLM query / key-value heads; the window Q-Former's.
        ("configs/salmonn_7b.py", (20, 28, 4, 12)),
        ("configs/nvlm_7b.py:x", (20, 28, 4, 28, 4)),
    ],
)
def test_the_mesh_search_sees_every_attentions_heads(spec, heads):
    """A tensor axis must divide every attention's heads: the planner lists them, Q-Former included."""
    assert planned_run(load_config_file(spec), local_devices=1).attention_heads == heads
