"""flash_attention (interpret mode) against reference_attention: outputs and dq/dk/dv/dbias on
fresh random inputs for every mask family, MHA/GQA/MQA, lengths that are not multiples of the
block size, float32 (relative error <= 1e-5) and bfloat16 (<= 1e-2).

On CPU both kernel families run through the Pallas interpreter: "gpu" is the Triton-style code
(flash_gpu.py), "tpu" the Mosaic code with scalar-prefetched visit lists (flash_tpu.py). Each case
is one compiled program, so the TPU-style code (slower to compile interpreted) runs a subset.
"""

import dataclasses

import jax.numpy as jnp
import numpy as np
import pytest
from jax.experimental.pallas import tpu as pltpu

from jaxspeech.kernels.flash_attention import BlockSizes
from jaxspeech.kernels.masks import MaskSpec
from jaxspeech.testing.flash_cases import BF16_TOL, F32_TOL, compare, flash_vjp, packed_segments, random_inputs, spans


@dataclasses.dataclass(frozen=True)
class Case:
    mask: MaskSpec | None
    batch: int = 2
    q_len: int = 40
    kv_len: int = 40
    heads: int = 4
    kv_heads: int = 2
    head_dim: int = 16
    bias_shape: tuple[int, ...] | None = None
    dtype: type = jnp.float32
    block_sizes: BlockSizes = BlockSizes(16, 16)


SEG = packed_segments([[13, 20, 7], [9, 24]], 40)
BIDIR = spans([[(0, 12, 1)], [(3, 9, 1), (20, 26, 2)]], 40)
DECODE_POSITIONS = jnp.broadcast_to(jnp.arange(32, 40, dtype=jnp.int32), (2, 8))

CASES = {
    "none_mha": Case(None, kv_heads=4),
    "causal_gqa": Case(MaskSpec(causal=True)),
    "key_lengths_cross_attention": Case(MaskSpec(kv_lengths=jnp.array([56, 19])), q_len=24, kv_len=56, kv_heads=1),
    "segments_mqa": Case(MaskSpec(q_segment_ids=SEG, kv_segment_ids=SEG), kv_heads=1),
    "prefix_lm": Case(MaskSpec(causal=True, q_bidir_ids=BIDIR, kv_bidir_ids=BIDIR, kv_lengths=jnp.array([37, 31]))),
    "chunked_local_window_mha": Case(MaskSpec(chunk_size=8, chunk_left=1, window_left=9, window_right=4), kv_heads=4),
    "chunked_all_left_short": Case(MaskSpec(chunk_size=4), q_len=11, kv_len=11, kv_heads=1),
    "packed_causal_window_mqa": Case(
        MaskSpec(causal=True, window_left=10, q_segment_ids=SEG, kv_segment_ids=SEG), kv_heads=1
    ),
    "decode_positions_sliding": Case(
        MaskSpec(causal=True, window_left=20, q_positions=DECODE_POSITIONS), q_len=8, kv_len=40
    ),
    "bias_per_head_key_lengths": Case(MaskSpec(kv_lengths=jnp.array([40, 27])), bias_shape=(1, 4, 40, 40)),
    "bias_full_causal_uneven_blocks": Case(
        MaskSpec(causal=True), bias_shape=(2, 4, 40, 40), block_sizes=BlockSizes(16, 32, 32, 16)
    ),
}
BF16_CASES = {
    "bf16_causal_segments": Case(
        MaskSpec(causal=True, q_segment_ids=SEG, kv_segment_ids=SEG), dtype=jnp.bfloat16, head_dim=32
    ),
    "bf16_bias_per_example": Case(None, bias_shape=(2, 1, 40, 40), dtype=jnp.bfloat16, head_dim=32),
}
TPU_CASES = ("causal_gqa", "segments_mqa", "prefix_lm")


def _run(backend, case: Case, tol, seed=0):
    q, k, v, bias, do = random_inputs(
        seed, case.batch, case.q_len, case.kv_len, case.heads, case.kv_heads, case.head_dim, case.dtype, case.bias_shape
    )
    return compare(backend, q, k, v, bias, do, case.mask, tol, case.block_sizes)


@pytest.mark.parametrize("name", CASES)
def test_gpu_kernels_match_reference_f32(name):
    _run("gpu", CASES[name], F32_TOL)


@pytest.mark.parametrize("name", BF16_CASES)
def test_gpu_kernels_match_reference_bf16(name):
    _run("gpu", BF16_CASES[name], BF16_TOL)


@pytest.mark.parametrize("name", TPU_CASES)
def test_tpu_kernels_match_reference_f32(name):
    _run("tpu", CASES[name], F32_TOL)


def test_tpu_kernels_match_reference_bf16():
    _run("tpu", BF16_CASES["bf16_causal_segments"], BF16_TOL)


@pytest.mark.parametrize("backend", ["gpu", "tpu"])
def test_fully_masked_rows_give_zero_and_finite_gradients(backend):
    """Queries whose segment has no key, and an example whose keys are all padding."""
    q_seg = SEG.at[0, 30:40].set(9)  # segment 9 exists only on the query side
    mask = MaskSpec(q_segment_ids=q_seg, kv_segment_ids=SEG, kv_lengths=jnp.array([40, 0]))
    case = Case(mask, kv_heads=1)
    q, k, v, bias, do = random_inputs(1, 2, 40, 40, 4, 1, 16)
    out, (dq, dk, dv, _) = flash_vjp(q, k, v, bias, do, mask, backend=backend, block_sizes=case.block_sizes)
    np.testing.assert_array_equal(np.asarray(out[0, 30:]), 0.0)
    np.testing.assert_array_equal(np.asarray(out[1]), 0.0)
    np.testing.assert_array_equal(np.asarray(dq[1]), 0.0)
    np.testing.assert_array_equal(np.asarray(dk[1]), 0.0)
    compare(backend, q, k, v, bias, do, mask, F32_TOL, case.block_sizes)


def test_tpu_kernels_in_the_tpu_simulator():
    """Mosaic semantics (pipelined copies, outputs never read back, uninitialized memory = NaN):
    every dbias tile gets written, including the one owned by a query block with nothing to visit.
    Forward and backward use different block sizes."""
    mask = MaskSpec(causal=True, kv_lengths=jnp.array([33, 0]))
    q, k, v, bias, do = random_inputs(4, 2, 40, 40, 2, 1, 16, bias_shape=(1, 2, 40, 40))
    simulator = pltpu.InterpretParams(uninitialized_memory="nan")
    compare("tpu", q, k, v, bias, do, mask, F32_TOL, BlockSizes(16, 32, 32, 16), interpret=simulator)
