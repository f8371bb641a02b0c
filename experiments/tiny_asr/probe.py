"""Short training probes of a config: N steps with --set overrides, no evaluation, loss table printed.

  python experiments/tiny_asr/probe.py --steps 300 --name base
  python experiments/tiny_asr/probe.py --steps 300 --name ctc1 --set task.loss.ctc_weight=1.0

The losses are deterministic for a seed, so probes of the same config compare step for step.
Each probe writes config.json, metrics.jsonl and its last checkpoint to /tmp/probe_runs/NAME
(replaced if present; ``ctc_probe.py`` and ``jaxspeech eval`` read it) and prints the CTC loss,
token accuracy and LLM NLL the trainer logged every 50 steps.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="configs/tiny_asr.py", help="config file (default: configs/tiny_asr.py)")
    parser.add_argument("--steps", type=int, default=300, help="train steps (default 300)")
    parser.add_argument("--name", required=True, help="probe name: the run folder /tmp/probe_runs/NAME")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override (repeatable)")
    args = parser.parse_args()

    from jaxspeech.cli.train import load_with_overrides
    from jaxspeech.recipes.build import build
    from jaxspeech.recipes.workdir import save_config
    from jaxspeech.train.loop import train

    fixed = [
        f"train.total_steps={args.steps}",
        "train.time_budget_s=None",
        "train.checkpoint.every_steps=1000000",
        "train.metrics.log_every=50",
    ]
    config = load_with_overrides(args.config, args.set + fixed)
    workdir = os.path.join("/tmp/probe_runs", args.name)
    shutil.rmtree(workdir, ignore_errors=True)
    run = build(config, progress=True)
    save_config(config, workdir)
    iterator = run.train_pipeline().iterator()
    try:
        result = train(run.task, run.train, iterator, workdir)
    finally:
        iterator.close()
    print(f"{'step':>5} {'ctc':>6} {'acc':>6} {'nll':>6}")
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        for row in map(json.loads, f):
            if "train/token_accuracy" in row:
                print(
                    f"{row['step']:>5} {row.get('train/ctc_loss', float('nan')):6.3f} "
                    f"{row['train/token_accuracy']:6.3f} {row['train/nll']:6.3f}"
                )
    print(f"compile {result.compile_seconds:.0f} s")


if __name__ == "__main__":
    main()
