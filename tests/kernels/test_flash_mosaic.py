"""The TPU flash kernels compile for real TPUs: libtpu's compiler runs on this machine without a
TPU (ahead of time, for a named topology), so Mosaic compiles the forward, dq and dk/dv kernels of
every mask family for three TPU generations (about 9 CPU-s each), and the compiled program counts
the work the kernels declare (``kernels/cost.py``)."""

import jax
import jax.numpy as jnp
import pytest
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from jaxspeech.kernels.flash_attention import flash_attention
from jaxspeech.kernels.masks import MaskSpec
from jaxspeech.platforms import libtpu_installed

pytestmark = pytest.mark.skipif(
    not libtpu_installed(), reason="libtpu is not installed (the [dev] and [tpu] extras bring it): no TPU compiler"
)
GENERATIONS = {"v5e": "v5e:2x2", "v5p": "v5p:2x2x1", "v6e": "v6e:2x2"}
# GQA (4 query heads over 2 key/value heads); 500 tokens are padded to the 128-token blocks inside.
B, T, H, K, D = 2, 500, 4, 2, 128
BLOCKS = dict(block_q=128, block_kv=128)
MASK_FAMILIES = {
    "causal": lambda ids: MaskSpec(causal=True),
    "segments_and_bias": lambda ids: MaskSpec(q_segment_ids=ids, kv_segment_ids=ids),
    "prefix_lm_audio": lambda ids: MaskSpec(causal=True, q_bidir_ids=ids, kv_bidir_ids=ids),
    "window": lambda ids: MaskSpec(causal=True, window_left=160),
    "chunks": lambda ids: MaskSpec(chunk_size=96, chunk_left=1),
}
KERNEL_CALL = 'custom_call_target="tpu_custom_call"'


def _on_first_chip(topology: str):
    from jaxspeech.sharding.topology import tpu_topology

    mesh = Mesh(tpu_topology(topology).devices[:1], ("chip",))
    return lambda shape, dtype: jax.ShapeDtypeStruct(shape, dtype, sharding=NamedSharding(mesh, PartitionSpec()))


def _gradients_of_every_family(q, k, v, ids, kv_lengths, bias):
    from jaxspeech.kernels.flash_attention import BlockSizes

    def loss(q, k, v, bias):
        total = 0.0
        for name, family in MASK_FAMILIES.items():
            mask = family(ids).replace(kv_lengths=kv_lengths)
            out = flash_attention(
                q,
                k,
                v,
                mask,
                bias=bias if name == "segments_and_bias" else None,
                block_sizes=BlockSizes(**BLOCKS),
                backend="tpu",
                interpret=False,
            )
            total = total + jnp.sum(out.astype(jnp.float32))
        return total

    return jax.value_and_grad(loss, argnums=(0, 1, 2, 3))(q, k, v, bias)


@pytest.mark.parametrize("generation", GENERATIONS)
def test_every_mask_family_compiles_through_mosaic(generation):
    spec = _on_first_chip(GENERATIONS[generation])
    args = (
        spec((B, T, H, D), jnp.bfloat16),
        spec((B, T, K, D), jnp.bfloat16),
        spec((B, T, K, D), jnp.bfloat16),
        spec((B, T), jnp.int32),
        spec((B,), jnp.int32),
        spec((1, H, T, T), jnp.float32),
    )
    compiled = jax.jit(_gradients_of_every_family).lower(*args).compile()
    kernels = compiled.as_text().count(KERNEL_CALL)
    assert kernels == 3 * len(MASK_FAMILIES), f"expected forward, dq and dk/dv per family, found {kernels} kernels"


def test_compiled_program_counts_the_declared_kernel_work():
    """Causal attention over 1024 tokens: the forward kernel, in 512-token blocks, visits 3 of 4
    tiles per (example, head), the backward ones, in 256-token blocks, 10 of 16. A tile costs
    2 * bq * bk * D FLOPs per matmul: 2 matmuls forward, 3 in dq, 4 in dk/dv."""
    from jaxspeech.kernels.flash_attention import BlockSizes

    batch, length, heads, head_dim = 1, 1024, 2, 128
    spec = _on_first_chip(GENERATIONS["v5e"])
    q = spec((batch, length, heads, head_dim), jnp.bfloat16)

    def loss(q, k, v):
        out = flash_attention(
            q, k, v, MaskSpec(causal=True), block_sizes=BlockSizes(512, 512, 256, 256), backend="tpu", interpret=False
        )
        return jnp.sum(out.astype(jnp.float32))

    analysis = jax.jit(jax.grad(loss, argnums=(0, 1, 2))).lower(q, q, q).compile().cost_analysis()
    forward_scores, backward_scores = 3 * 512 * 512, 10 * 256 * 256
    kernel_flops = batch * heads * 2 * head_dim * (2 * forward_scores + (3 + 4) * backward_scores)
    # Outside the kernels only elementwise work remains (delta = rowsum(dO * O), casts): < 1 %.
    assert kernel_flops <= analysis["flops"] <= 1.01 * kernel_flops
    assert analysis["transcendentals"] >= batch * heads * (forward_scores + 2 * backward_scores)
