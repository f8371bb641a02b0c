"""Attention throughput on one GPU: jaxspeech's Pallas flash attention against
``jax.nn.dot_product_attention`` with ``implementation="cudnn"`` and ``"xla"``.

Full run (NVIDIA GPU; about a minute on an H100)::

    python -m benchmarks.attention_gpu --out runs/benchmarks/attention_gpu.json

CPU smoke check (tiny shapes, Pallas in interpret mode, no cuDNN)::

    python -m benchmarks.attention_gpu --smoke

Shapes: the encoder (B16, T1536, H8, D64, bidirectional) and the LLM (B8, T4096, H32, KV8, D128)
with a causal mask and with a prefix-LM mask (a bidirectional audio span inside causal text).
TFLOP/s count only allowed (query, key) pairs: forward 4·B·H·D·pairs, backward 2.5x that
(the flash-attention convention), so causal masks are credited with half the dense work.
Each timing is the median of ``--repeats`` runs after ``--warmup`` runs.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
from typing import Callable

import jax
import jax.numpy as jnp

from benchmarks.harness import machine_info, timed, write_json
from jaxspeech.kernels.flash_attention import BlockSizes, flash_attention
from jaxspeech.kernels.masks import MaskSpec, dense_mask


@dataclasses.dataclass(frozen=True)
class Shape:
    name: str
    batch: int
    length: int
    heads: int
    kv_heads: int
    head_dim: int
    mask: str  # "none" | "causal" | "prefix_lm"


FULL_SHAPES = (
    Shape("encoder", 16, 1536, 8, 8, 64, "none"),
    Shape("llm_causal", 8, 4096, 32, 8, 128, "causal"),
    Shape("llm_prefix_lm", 8, 4096, 32, 8, 128, "prefix_lm"),
)
SMOKE_SHAPES = (
    Shape("encoder", 2, 96, 2, 2, 16, "none"),
    Shape("llm_causal", 1, 128, 4, 2, 32, "causal"),
    Shape("llm_prefix_lm", 1, 128, 4, 2, 32, "prefix_lm"),
)


def mask_spec(shape: Shape) -> MaskSpec | None:
    """The mask of a shape; the prefix-LM audio span covers tokens [L/16, L/16 + 3L/8) of each row."""
    if shape.mask == "none":
        return None
    if shape.mask == "causal":
        return MaskSpec(causal=True)
    start, stop = shape.length // 16, shape.length // 16 + 3 * shape.length // 8
    span = ((jnp.arange(shape.length) >= start) & (jnp.arange(shape.length) < stop)).astype(jnp.int32)
    span = jnp.broadcast_to(span, (shape.batch, shape.length))
    return MaskSpec(causal=True, q_bidir_ids=span, kv_bidir_ids=span)


def contestants(
    shape: Shape, mask: MaskSpec | None, smoke: bool, block_sizes: BlockSizes | None
) -> dict[str, Callable]:
    """name -> attention(q, k, v) for every implementation that applies on this machine."""

    def pallas(q, k, v):
        return flash_attention(q, k, v, mask, block_sizes=block_sizes, interpret=smoke or None)

    def jax_nn(implementation):
        def attention(q, k, v):
            if mask is None:
                return jax.nn.dot_product_attention(q, k, v, implementation=implementation)
            if shape.mask == "causal":
                return jax.nn.dot_product_attention(q, k, v, is_causal=True, implementation=implementation)
            allowed = dense_mask(mask, shape.batch, shape.length, shape.length)[:, None]
            return jax.nn.dot_product_attention(q, k, v, mask=allowed, implementation=implementation)

        return attention

    runs = {"pallas": pallas, "xla": jax_nn("xla")}
    if not smoke:
        runs["cudnn"] = jax_nn("cudnn")
    return runs


def median_seconds(fn: Callable[[], object], warmup: int, repeats: int) -> float:
    for _ in range(warmup):
        jax.block_until_ready(fn())
    return statistics.median(timed(lambda: jax.block_until_ready(fn())) for _ in range(repeats))


def measure(shape: Shape, smoke: bool, warmup: int, repeats: int, block_sizes: BlockSizes | None) -> dict:
    keys = jax.random.split(jax.random.key(0), 4)
    dtype = jnp.float32 if smoke else jnp.bfloat16
    q = jax.random.normal(keys[0], (shape.batch, shape.length, shape.heads, shape.head_dim), dtype)
    k = jax.random.normal(keys[1], (shape.batch, shape.length, shape.kv_heads, shape.head_dim), dtype)
    v = jax.random.normal(keys[2], (shape.batch, shape.length, shape.kv_heads, shape.head_dim), dtype)
    do = jax.random.normal(keys[3], q.shape, dtype)
    mask = mask_spec(shape)
    pairs = float(jnp.sum(dense_mask(mask, shape.batch, shape.length, shape.length))) / shape.batch
    forward_flops = 4.0 * shape.batch * shape.heads * shape.head_dim * pairs
    result = {
        **dataclasses.asdict(shape),
        "dtype": jnp.dtype(dtype).name,
        "allowed_pair_fraction": pairs / shape.length**2,
    }
    pallas_out = None
    for name, attention in contestants(shape, mask, smoke, block_sizes).items():
        forward = jax.jit(attention)
        forward_backward = jax.jit(lambda q, k, v, do, attention=attention: jax.vjp(attention, q, k, v)[1](do))
        try:
            out = forward(q, k, v).astype(jnp.float32)
            fwd_s = median_seconds(lambda: forward(q, k, v), warmup, repeats)
            fwd_bwd_s = median_seconds(lambda: forward_backward(q, k, v, do), warmup, repeats)
        except Exception as error:  # e.g. cuDNN rejecting a mask, or XLA running out of memory
            result[name] = {"error": f"{type(error).__name__}: {str(error).splitlines()[0][:300]}"}
            continue
        pallas_out = out if name == "pallas" else pallas_out
        result[name] = {
            "forward_ms": fwd_s * 1e3,
            "forward_backward_ms": fwd_bwd_s * 1e3,
            "forward_tflops": forward_flops / fwd_s / 1e12,
            "forward_backward_tflops": 3.5 * forward_flops / fwd_bwd_s / 1e12,
        }
        if pallas_out is not None and name != "pallas":
            result[name]["max_abs_diff_vs_pallas"] = float(jnp.max(jnp.abs(out - pallas_out)))
    for reference in ("cudnn", "xla"):
        ours, theirs = result.get("pallas", {}), result.get(reference, {})
        if "forward_ms" in ours and "forward_ms" in theirs:
            result[f"speedup_vs_{reference}"] = {
                "forward": theirs["forward_ms"] / ours["forward_ms"],
                "forward_backward": theirs["forward_backward_ms"] / ours["forward_backward_ms"],
            }
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="tiny shapes, Pallas interpret mode (runs on CPU)")
    parser.add_argument("--out", default="runs/benchmarks/attention_gpu.json")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--only", nargs="*", help="shape names to run (default: all)")
    parser.add_argument("--block-sizes", help="block_q,block_kv[,block_q_bwd,block_kv_bwd] for the Pallas kernels")
    args = parser.parse_args(argv)
    if not args.smoke and jax.default_backend() != "gpu":
        print("attention_gpu: no GPU found; run with --smoke for the CPU check", file=sys.stderr)
        return 2
    block_sizes = None
    if args.block_sizes:
        block_sizes = BlockSizes(*(int(x) for x in args.block_sizes.split(",")))
    shapes = SMOKE_SHAPES if args.smoke else FULL_SHAPES
    shapes = [s for s in shapes if not args.only or s.name in args.only]
    warmup, repeats = (1, 3) if args.smoke else (args.warmup, args.repeats)
    results = {
        "machine": {**machine_info(), "devices": [d.device_kind for d in jax.devices()]},
        "smoke": args.smoke,
        "block_sizes": None if block_sizes is None else dataclasses.asdict(block_sizes),
        "shapes": [measure(shape, args.smoke, warmup, repeats, block_sizes) for shape in shapes],
    }
    write_json(args.out, results)
    return 0 if all("forward_ms" in r.get("pallas", {}) for r in results["shapes"]) else 1


if __name__ == "__main__":
    sys.exit(main())
