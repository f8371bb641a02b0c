"""Conformer encoder forward on CPU: jaxspeech vs transformers' ParakeetEncoder with the same weights.

Model (full run): a FastConformer of 12 blocks, d 256, 4 heads, FFN 1024, depthwise kernel 9,
8x depthwise-separable subsampling with 256 channels, 80 mels (~20M parameters); a batch of 4
utterances of 30, 28, 25 and 20 s (3000 frames -> 375 encoder frames), float32, eval mode.
Outputs are checked to agree (max abs diff on valid frames); torch runs at its best thread count
under ``inference_mode``; runs alternate and the median of per-pair ratios is reported. Compile time
is reported separately; GFLOP/s uses XLA's own FLOP count of the (unrolled) forward and is compared
with a float32 matmul peak measured in the same run.

  python -m benchmarks.conformer_cpu                 # full run -> benchmarks/results/conformer_cpu.json
  python -m benchmarks.conformer_cpu --smoke         # reduced size, for a quick check
"""

from __future__ import annotations

import argparse
import tempfile
import time

import jax
import numpy as np
import torch
import transformers
from flax import linen as nn

from benchmarks.harness import alternating, best_torch_threads, machine_info, matmul_peak_gflops, timed, write_json
from jaxspeech.convert.parakeet import load_parakeet
from jaxspeech.encoders.conformer import ConformerConfig, ConformerEncoder

FULL = dict(layers=12, d_model=256, seconds=(30, 28, 25, 20))
SMOKE = dict(layers=4, d_model=256, seconds=(10, 8))


def hf_config(layers: int, d_model: int) -> transformers.ParakeetEncoderConfig:
    return transformers.ParakeetEncoderConfig(
        hidden_size=d_model, num_hidden_layers=layers, num_attention_heads=d_model // 64, intermediate_size=4 * d_model,
        conv_kernel_size=9, subsampling_factor=8, subsampling_conv_channels=256, num_mel_bins=80,
    )  # fmt: skip


def unrolled_flops(config: ConformerConfig, features: np.ndarray, lengths: np.ndarray) -> float:
    """XLA's FLOP count of the forward with layers unrolled (a scanned body would be counted once)."""
    encoder = ConformerEncoder(config.replace(scan_layers=False))
    abstract = nn.unbox(jax.eval_shape(encoder.init, jax.random.key(0), features, lengths))
    return float(jax.jit(encoder.apply).lower(abstract, features, lengths).cost_analysis()["flops"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="4 blocks, 10 s + 8 s input")
    parser.add_argument("--pairs", type=int, default=10)
    parser.add_argument("--scan", action="store_true", help="run our blocks with nn.scan (default: unrolled)")
    parser.add_argument("--out", default="benchmarks/results/conformer_cpu.json")
    args = parser.parse_args()
    size = SMOKE if args.smoke else FULL

    torch.manual_seed(0)
    model = transformers.ParakeetEncoder(hf_config(size["layers"], size["d_model"])).eval()
    with tempfile.TemporaryDirectory() as directory:
        model.save_pretrained(directory)
        checkpoint = load_parakeet(directory, scan_layers=args.scan)
    variables = jax.device_put(checkpoint.variables)
    encoder = ConformerEncoder(checkpoint.config)

    lengths = np.array([100 * s for s in size["seconds"]], np.int32)
    frames = int(lengths.max())
    rng = np.random.default_rng(0)
    features = rng.standard_normal((len(lengths), frames, 80)).astype(np.float32)
    features[np.arange(frames)[None, :] >= lengths[:, None]] = 0.0
    mask = torch.tensor(np.arange(frames)[None, :] < lengths[:, None]).long()
    features_torch = torch.tensor(features)

    start = time.perf_counter()
    compiled = jax.jit(encoder.apply).lower(variables, features, lengths).compile()
    compile_s = time.perf_counter() - start
    flops = unrolled_flops(checkpoint.config, features, lengths)

    def ours():
        return jax.block_until_ready(compiled(variables, features, lengths))

    def peer():
        with torch.inference_mode():
            return model(features_torch, attention_mask=mask).last_hidden_state

    threads = best_torch_threads(peer, repeats=1)
    hidden, out_lengths = ours()
    valid = np.arange(hidden.shape[1])[None, :] < np.asarray(out_lengths)[:, None]
    max_diff = float(np.abs(np.asarray(hidden) - peer().numpy())[valid].max())
    first_run_s = timed(ours)
    timing = alternating(ours, peer, pairs=args.pairs, warmup=1)
    peak = matmul_peak_gflops()
    gflops = flops / timing["ours_median_s"] / 1e9
    result = {
        "machine": machine_info(),
        "model": {
            "blocks": size["layers"], "d_model": size["d_model"], "heads": size["d_model"] // 64,
            "ffn": 4 * size["d_model"], "conv_kernel": 9, "subsampling": "dw_conv2d 8x, 256 channels",
            "params": sum(p.numel() for p in model.parameters()), "scan_layers": args.scan,
        },
        "input": {"batch": len(lengths), "frames": lengths.tolist(), "mels": 80, "encoder_frames": int(hidden.shape[1])},
        "max_abs_diff_vs_transformers": max_diff,
        "compile_s": compile_s,
        "first_run_s": first_run_s,
        "torch_threads": threads,
        **timing,
        "xla_gflop_per_forward": flops / 1e9,
        "ours_gflops": gflops,
        "matmul_peak_gflops": peak,
        "fraction_of_matmul_peak": gflops / peak,
    }  # fmt: skip
    print(
        f"ours {timing['ours_median_s'] * 1e3:.0f} ms, transformers {timing['peer_median_s'] * 1e3:.0f} ms "
        f"({threads} threads): x{timing['speedup_median']:.2f}; {gflops:.0f} GFLOP/s = "
        f"{100 * gflops / peak:.0f}% of the {peak:.0f} GFLOP/s matmul peak; compile {compile_s:.1f} s; "
        f"max diff {max_diff:.1e}",
        flush=True,
    )
    write_json(args.out, result)


if __name__ == "__main__":
    main()
