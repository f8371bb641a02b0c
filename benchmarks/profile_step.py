"""Where one compiled train step spends its time: XLA op time by kind and by source line.

Builds a config exactly as ``jaxspeech train`` does (``--set`` overrides allowed), compiles its
train step for one pipeline batch of the ``--frames`` bucket and traces ``--steps`` steps
(``benchmarks/profiling.py``: each op's time is attributed to the flax code that produced it, e.g.
``.../encoder/conformer/layers/ffn1/fc1/dot_general``).

Prints: the step time (median of untraced steps), how busy the XLA threads were over the traced
steps, and the op time per step by kind (``ynn_fusion`` = matmuls, ``copy``/``transpose`` = layout
changes, ``dynamic-update-slice`` = a scan saving activations, ...) and by source.

  python -m benchmarks.profile_step
  python -m benchmarks.profile_step --set model.encoder.conformer.remat_policy=none --top 40
  python -m benchmarks.profile_step --config configs/tiny_asr.py:debug --frames 768 --steps 2
"""

from __future__ import annotations

import argparse
import statistics
import time

import jax

from benchmarks.profiling import profile
from benchmarks.train_step import build_step, load_batch
from jaxspeech.cli.train import load_with_overrides
from jaxspeech.recipes.build import build


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="configs/tiny_asr.py")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override (repeatable)")
    parser.add_argument("--frames", type=int, default=400, help="the duration bucket (log-mel frames) of the batch")
    parser.add_argument("--steps", type=int, default=3, help="traced steps (default 3)")
    parser.add_argument("--top", type=int, default=25, help="rows per table")
    args = parser.parse_args()

    run = build(load_with_overrides(args.config, args.set), progress=False)
    batch = load_batch(run, args.frames, None)
    built = build_step(run, batch)
    state, compiled, device_batch = built.state, built.run, built.device_batch
    del built  # the state is donated at every step: no other reference may keep the first one alive

    def run():
        nonlocal state
        state, metrics = compiled(state, device_batch)
        jax.block_until_ready(metrics)

    for _ in range(3):
        run()
    times = []
    for _ in range(8):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    result = profile(run, compiled.as_text(), args.steps)
    print(f"step {statistics.median(times):.3f} s (median of 8, untraced)")
    print(result.report(args.top))


if __name__ == "__main__":
    main()
