"""What the main job's three evaluation decoders cost, relative to each other, on CPU.

configs/tiny_asr.py's model at full size (random init) decodes one eval batch of the embedded
corpus's test set with each decoder of ``eval.decoders``: the LLM alone (beam 4, no CTC, no
lexicon), the CTC head alone (greedy) and the joint decoder (beam 8, CTC weight 0.7, lexicon).
Random weights never emit the end token, so every beam runs all ``--new-tokens`` steps: an upper
bound that gives every search the same length. Runs alternate (LLM alone / joint, CTC / joint) and
the median of per-pair ratios is reported; compile time separately.

  python -m benchmarks.eval_decoders_cpu [--pairs 5] [--rows 16] [--out benchmarks/results/eval_decoders_cpu.json]
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import tempfile
import time

import jax
from flax import linen as nn

from benchmarks.harness import alternating, machine_info, write_json
from jaxspeech.config_dict import load_config_file
from jaxspeech.recipes.build import build


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, default=5)
    parser.add_argument("--rows", type=int, default=16, help="utterances in the decoded batch")
    parser.add_argument("--new-tokens", type=int, default=40)
    parser.add_argument("--out", default="benchmarks/results/eval_decoders_cpu.json")
    args = parser.parse_args()

    config = load_config_file(os.path.join(os.path.dirname(__file__), "..", "configs", "tiny_asr.py"))
    with tempfile.TemporaryDirectory() as data_dir:
        config.data.dir = data_dir
        config.data.corpus = dict(
            train_hours=0.3,
            dev_utterances=1,
            test_utterances=args.rows,
            held_out_utterances=0,
            open_vocab_utterances=1,
            open_vocab_held_out_utterances=0,
        )
        config.eval.generation.max_new_tokens = config.eval.llm_generation.max_new_tokens = args.new_tokens
        run = build(config, progress=False)
        run.eval = dataclasses.replace(run.eval, max_examples=args.rows)
        params = nn.unbox(run.task.init_params(jax.random.key(0), run.example_batch()))
        with run.eval_data(run.manifest("test"), args.rows).iterator() as batches:
            batch = next(batches).batch
        decoders = {name: (d.decoder, d.decoder.prepare(params)) for name, d in run.decoders().items()}
        calls = {name: (lambda d=decoder, p=prepared: d(p, batch)) for name, (decoder, prepared) in decoders.items()}
        compile_s = {}
        for name, call in calls.items():
            start = time.perf_counter()
            call()
            compile_s[name] = time.perf_counter() - start
        rows = int(batch.tokens.shape[0])
        results = {
            "machine": machine_info(),
            "load_average": os.getloadavg(),
            "rows": rows,
            "new_tokens": args.new_tokens,
            "compile_plus_first_run_s": compile_s,
            "vs_joint": {},
        }
        for name in ("llm", "ctc"):
            timing = alternating(calls[name], calls["joint"], pairs=args.pairs, warmup=0)
            results["vs_joint"][name] = timing
            print(
                f"{name}: {timing['ours_median_s']:.2f} s, joint {timing['peer_median_s']:.2f} s per batch of {rows} "
                f"(joint / {name} x{timing['speedup_median']:.2f}); compile+first {compile_s[name]:.1f} s",
                flush=True,
            )
    write_json(args.out, results)


if __name__ == "__main__":
    main()
