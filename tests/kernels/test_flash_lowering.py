"""The kernels lower for the hardware they are written for: forward and backward programs are
lowered from this CPU for TPU (Pallas -> Mosaic) and for CUDA (Pallas -> Triton IR).

This checks the Pallas lowering rules (supported ops, block shapes, scalar prefetch, aliasing);
Mosaic's and Triton's own compilers run only on a TPU / GPU, so those stages are not checked.
"""

import jax
import jax.numpy as jnp
import pytest

from jaxspeech.kernels.flash_attention import BlockSizes, flash_attention
from jaxspeech.kernels.masks import MaskSpec

B, T, H, K, D = 2, 200, 4, 2, 64
EVERY_MASK = MaskSpec(
    causal=True,
    kv_lengths=jnp.array([200, 150]),
    q_segment_ids=jnp.ones((B, T), jnp.int32),
    kv_segment_ids=jnp.ones((B, T), jnp.int32),
    q_bidir_ids=jnp.zeros((B, T), jnp.int32),
    kv_bidir_ids=jnp.zeros((B, T), jnp.int32),
    window_left=96,
    chunk_size=32,
    chunk_left=2,
)
TARGETS = {
    "tpu": ("tpu", "tpu_custom_call", BlockSizes(128, 128, 64, 128)),
    "gpu": ("cuda", "xla.gpu.triton", BlockSizes(64, 64, 32, 32)),
}


def _lowered_text(backend, mask, dtype, with_bias):
    platform, _, block_sizes = TARGETS[backend]
    q = jnp.zeros((B, T, H, D), dtype)
    k = jnp.zeros((B, T, K, D), dtype)
    bias = jnp.zeros((1, H, T, T), jnp.float32) if with_bias else None

    def loss(q, k, v, bias):
        out = flash_attention(q, k, v, mask, bias=bias, block_sizes=block_sizes, backend=backend, interpret=False)
        return jnp.sum(out.astype(jnp.float32))

    step = jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2, 3) if with_bias else (0, 1, 2)))
    return step.trace(q, k, k, bias).lower(lowering_platforms=(platform,)).as_text()


@pytest.mark.parametrize("backend", ["tpu", "gpu"])
@pytest.mark.parametrize(
    "mask, dtype, with_bias",
    [(EVERY_MASK, jnp.bfloat16, True), (None, jnp.float32, False)],
    ids=["every_mask_bf16_bias", "plain_f32"],
)
def test_forward_and_backward_lower_for_hardware(backend, mask, dtype, with_bias):
    text = _lowered_text(backend, mask, dtype, with_bias)
    _, target, _ = TARGETS[backend]
    assert text.count(target) >= 3, f"expected forward, dq and dk/dv kernels as {target} custom calls"
