"""Greedy decoding throughput on CPU: jaxspeech vs transformers ``generate`` with the same weights.

A ~57M-parameter Qwen2-style model (8 layers, d 512, GQA 8/2, vocab 32k), 64-token prompts, 64 new
tokens (end token suppressed so both sides generate all 64), batch 1 and 8. Tokens are asserted
identical; torch runs at its best thread count; runs alternate and the median of per-pair ratios is
reported. Compile time is reported separately.

  python -m benchmarks.decode_cpu [--pairs 10] [--out benchmarks/results/decode_cpu.json]
  python -m benchmarks.decode_cpu --profile --pairs 2   # also where the op time goes
"""

from __future__ import annotations

import argparse
import tempfile
import time

import jax
import numpy as np
import torch
import transformers

from benchmarks.harness import alternating, best_torch_threads, machine_info, write_json
from benchmarks.profiling import profile
from jaxspeech.convert.hf_llm import load_hf_llm
from jaxspeech.decoding.generate import GenerationConfig, _generate, generate

PROMPT, NEW, EOS = 64, 64, 2
HF_CONFIG = dict(
    vocab_size=32000,
    hidden_size=512,
    intermediate_size=1536,
    num_hidden_layers=8,
    num_attention_heads=8,
    num_key_value_heads=2,
    eos_token_id=EOS,
    pad_token_id=0,
    tie_word_embeddings=False,
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, default=10)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    parser.add_argument(
        "--profile",
        action="store_true",
        help="also trace 2 generations per batch size and print where the op time goes",
    )
    parser.add_argument("--out", default="benchmarks/results/decode_cpu.json")
    args = parser.parse_args()

    torch.manual_seed(0)
    model = transformers.Qwen2ForCausalLM(transformers.Qwen2Config(**HF_CONFIG)).eval()
    with tempfile.TemporaryDirectory() as directory:
        model.save_pretrained(directory, safe_serialization=True)
        config, params = load_hf_llm(directory, scan_layers=False)
    params = jax.device_put(params)
    n_params = sum(p.numel() for p in model.parameters())
    gen = GenerationConfig(max_new_tokens=NEW, min_new_tokens=NEW, eos_ids=(EOS,), pad_id=0)
    results = {
        "machine": machine_info(),
        "model_params": n_params,
        "prompt_tokens": PROMPT,
        "new_tokens": NEW,
        "runs": [],
    }

    for batch in args.batches:
        prompts = np.random.default_rng(batch).integers(3, HF_CONFIG["vocab_size"], (batch, PROMPT)).astype(np.int32)
        segments = np.ones_like(prompts)

        def ours():
            return np.asarray(generate(config, params, prompts, segments, gen).tokens)

        input_ids = torch.tensor(prompts, dtype=torch.long)

        def peer():
            with torch.no_grad():
                out = model.generate(
                    input_ids,
                    attention_mask=torch.ones_like(input_ids),
                    max_new_tokens=NEW,
                    min_new_tokens=NEW,
                    do_sample=False,
                    num_beams=1,
                    eos_token_id=EOS,
                    pad_token_id=0,
                )
            return out[:, PROMPT:].numpy()

        start = time.perf_counter()
        our_tokens = ours()
        compile_s = time.perf_counter() - start
        threads = best_torch_threads(peer, repeats=1)
        np.testing.assert_array_equal(our_tokens, peer())
        timing = alternating(ours, peer, pairs=args.pairs, warmup=1)
        op_profile = None
        if args.profile:
            hlo = _generate.lower(config, params, prompts, segments, gen).compile().as_text()
            op_profile = profile(ours, hlo, calls=2)
            print(op_profile.report(), flush=True)
        run = {
            "batch": batch,
            "compile_plus_first_run_s": compile_s,
            "torch_threads": threads,
            "tokens_identical": True,
            "ours_tokens_per_s": batch * NEW / timing["ours_median_s"],
            "peer_tokens_per_s": batch * NEW / timing["peer_median_s"],
            **timing,
            "profile": None if op_profile is None else op_profile.summary(),
        }
        results["runs"].append(run)
        print(
            f"batch {batch}: ours {run['ours_tokens_per_s']:.0f} tok/s, transformers {run['peer_tokens_per_s']:.0f} "
            f"tok/s, speed-up x{run['speedup_median']:.2f} (compile {compile_s:.1f}s)",
            flush=True,
        )
    write_json(args.out, results)


if __name__ == "__main__":
    main()
