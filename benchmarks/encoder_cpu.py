"""Whisper encoder forward on CPU: jaxspeech vs transformers ``WhisperEncoder`` with the same weights.

Whisper-base-sized encoder (d 512, 6 layers, 8 heads, ffn 2048), input 1 x 3000 frames x 80 mels,
float32. The peer runs SDPA attention at its best torch thread count; runs alternate and the median
of per-pair time ratios is reported (> 1: jaxspeech is faster), with GFLOP/s (analytic count) as a
fraction of a float32 matmul peak measured in the same run. Outputs are checked to agree. Compile
time is reported separately.

  python -m benchmarks.encoder_cpu                         # full run (the reported numbers)
  python -m benchmarks.encoder_cpu --frames 600 --pairs 3  # smoke run
  python -m benchmarks.encoder_cpu --profile --pairs 2     # where the time goes (op time by kind, by source)
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np
import torch
from transformers import WhisperConfig, WhisperForConditionalGeneration

from benchmarks.harness import alternating, best_torch_threads, machine_info, matmul_peak_gflops, write_json
from benchmarks.profiling import profile
from jaxspeech.convert.hf_whisper import load_hf_whisper
from jaxspeech.encoders.whisper import WhisperEncoder
from jaxspeech.models.whisper_seq2seq import WHISPER_SIZES


def encoder_gflop(frames: int, n_mels: int, width: int, layers: int, ffn: int) -> float:
    """Multiply-adds x 2 of the encoder forward (convolutions, projections, attention, MLP)."""
    positions = (frames - 1) // 2 + 1
    convs = 2 * frames * 3 * n_mels * width + 2 * positions * 3 * width * width
    projections = 4 * 2 * positions * width * width
    attention = 2 * 2 * positions * positions * width  # scores and weighted sum
    mlp = 2 * 2 * positions * width * ffn
    return (convs + layers * (projections + attention + mlp)) / 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default="base", choices=sorted(WHISPER_SIZES))
    parser.add_argument("--frames", type=int, default=3000, help="input frames (3000 = 30 s)")
    parser.add_argument("--pairs", type=int, default=10)
    parser.add_argument("--scan", action="store_true", help="scan over layers (default: unrolled loop)")
    parser.add_argument("--profile", action="store_true", help="also trace 3 forwards and print where the op time goes")
    parser.add_argument("--out", default="benchmarks/results/encoder_cpu.json")
    args = parser.parse_args()

    width, layers, heads = WHISPER_SIZES[args.size]
    hf_config = WhisperConfig(
        num_mel_bins=80,
        d_model=width,
        encoder_layers=layers,
        encoder_attention_heads=heads,
        encoder_ffn_dim=4 * width,
        decoder_layers=1,
        decoder_attention_heads=heads,
        decoder_ffn_dim=4 * width,
        max_source_positions=args.frames // 2,
        attn_implementation="sdpa",
    )
    torch.manual_seed(0)
    hf = WhisperForConditionalGeneration(hf_config).eval()
    with tempfile.TemporaryDirectory() as directory:
        hf.save_pretrained(directory)
        config, params = load_hf_whisper(directory, scan_layers=args.scan)
    encoder = WhisperEncoder(config.encoder)
    encoder_params = jax.device_put({"params": params["params"]["encoder"]})
    peer_encoder = hf.model.encoder

    features = np.random.RandomState(0).randn(1, args.frames, 80).astype(np.float32)
    features_jax = jnp.asarray(features)
    features_torch = torch.from_numpy(features).transpose(1, 2).contiguous()
    forward = jax.jit(lambda p, x: encoder.apply(p, x).hidden)

    start = time.perf_counter()
    compiled = forward.lower(encoder_params, features_jax).compile()
    compile_s = time.perf_counter() - start
    xla_flops = (compiled.cost_analysis() or {}).get("flops")

    def ours():
        return compiled(encoder_params, features_jax).block_until_ready()

    def peer():
        with torch.no_grad():
            return peer_encoder(features_torch).last_hidden_state

    max_diff = float(np.abs(np.asarray(ours()) - peer().numpy()).max())
    op_profile = profile(ours, compiled.as_text()) if args.profile else None
    if op_profile is not None:
        print(op_profile.report())
    load_before = os.getloadavg()  # the machine is shared: the 1-minute load says how noisy the timings are
    threads = best_torch_threads(peer)
    timing = alternating(ours, peer, pairs=args.pairs)
    load_after = os.getloadavg()
    peak = matmul_peak_gflops()
    gflop = encoder_gflop(args.frames, 80, width, layers, 4 * width)
    ours_gflops = gflop / timing["ours_median_s"]
    result = {
        "benchmark": "whisper encoder forward, CPU, float32",
        "machine": machine_info(),
        "load_average_1_5_15min": {"before": load_before, "after": load_after},
        "size": args.size,
        "input": [1, args.frames, 80],
        "scan_layers": args.scan,
        "torch_threads": threads,
        "compile_s": compile_s,
        "peer_attention": peer_encoder.config._attn_implementation,
        "max_abs_diff_vs_peer": max_diff,
        "gflop_analytic": gflop,
        "gflop_xla_cost_analysis": None if xla_flops is None else xla_flops / 1e9,
        "matmul_peak_gflops": peak,
        "ours_gflops": ours_gflops,
        "fraction_of_matmul_peak": ours_gflops / peak,
        **timing,
        "profile": None if op_profile is None else op_profile.summary(),
        "goal": {"speedup": 1.25, "fraction_of_peak": 0.6},
    }
    write_json(args.out, result)


if __name__ == "__main__":
    main()
