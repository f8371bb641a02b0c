"""Where one compiled train step spends its time: XLA op time by kind and by source line.

Builds a config exactly as ``jaxspeech train`` does (``--set`` overrides allowed), compiles its
train step for one pipeline batch of the ``--frames`` bucket, traces ``--steps`` steps with
``jax.profiler.trace`` and reads the op events back with ``jax.profiler.ProfileData``. Each op's
time is attributed to the ``op_name`` metadata of its instruction in the optimised HLO (the module
path of the flax code that produced it, e.g. ``.../encoder/conformer/layers/ffn1/fc1/dot_general``).

Prints: the step time (median of untraced steps), how busy the XLA threads were over the traced
steps, and the op time per step by kind (``ynn_fusion`` = matmuls, ``copy``/``transpose`` = layout
changes, ``dynamic-update-slice`` = a scan saving activations, ...) and by source.

  python -m benchmarks.profile_step
  python -m benchmarks.profile_step --set model.encoder.conformer.remat_policy=none --top 40
  python -m benchmarks.profile_step --config configs/tiny_asr.py:debug --frames 768 --steps 2
"""

from __future__ import annotations

import argparse
import collections
import glob
import os
import re
import statistics
import tempfile
import time

import jax

from benchmarks.train_step import build_step, load_batch
from jaxspeech.cli.train import load_with_overrides
from jaxspeech.recipes.build import build

_MARKERS = ("ThunkExecutor", "Threadpool", "Slinky", "end: ")  # runtime bookkeeping, not ops
_HLO_OP_NAME = re.compile(r'^\s*(?:ROOT )?%?([\w.\-]+) = .*?op_name="([^"]+)"', re.M)


def op_sources(hlo_text: str) -> dict[str, str]:
    """Instruction name -> the op_name metadata of the optimised HLO (wrappers trimmed)."""
    sources = {}
    for name, op_name in _HLO_OP_NAME.findall(hlo_text):
        op_name = re.sub(r"^jit\([^)]*\)/", "", op_name)
        sources[name] = op_name.replace("/while/body/closed_call", "")
    return sources


def op_events(trace_dir: str) -> list[tuple[str, int, int, int]]:
    """(op name, thread id, start ns, duration ns) of every XLA op event of the trace in ``trace_dir``."""
    path = glob.glob(os.path.join(trace_dir, "**", "*.xplane.pb"), recursive=True)[0]
    events = []
    for plane in jax.profiler.ProfileData.from_file(path).planes:
        for thread, line in enumerate(plane.lines):
            if "Eigen" not in line.name:  # XLA:CPU's compute threads
                continue
            for event in line.events:
                if not event.name.startswith(_MARKERS):
                    events.append((event.name, thread, event.start_ns, event.duration_ns))
    return events


def busy_fraction(events: list[tuple[str, int, int, int]]) -> float:
    """Time some op ran on a thread, over the threads' span, averaged over the threads."""
    by_thread = collections.defaultdict(list)
    for _, thread, start, duration in events:
        by_thread[thread].append((start, start + duration))
    fractions = []
    for intervals in by_thread.values():
        intervals.sort()
        busy, (cur_start, cur_end) = 0, intervals[0]
        for start, end in intervals[1:]:
            if start > cur_end:
                busy, cur_start, cur_end = busy + cur_end - cur_start, start, end
            else:
                cur_end = max(cur_end, end)
        busy += cur_end - cur_start
        span = intervals[-1][1] - intervals[0][0]
        fractions.append(busy / span if span else 0.0)
    return statistics.mean(fractions)


def print_table(title: str, totals: collections.Counter, counts: collections.Counter, steps: int, top: int) -> None:
    print(f"\n{title}\n{'ms/step':>9} {'ops/step':>9}  name")
    for name, ns in totals.most_common(top):
        print(f"{ns / steps / 1e6:9.2f} {counts[name] / steps:9.0f}  {name}")


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
    with tempfile.TemporaryDirectory() as trace_dir:
        with jax.profiler.trace(trace_dir):
            for _ in range(args.steps):
                run()
        events = op_events(trace_dir)

    sources = op_sources(compiled.as_text())
    by_kind, kind_counts = collections.Counter(), collections.Counter()
    by_source, source_counts = collections.Counter(), collections.Counter()
    for name, _, _, duration in events:
        kind = re.sub(r"\.\d+$", "", name)
        source = sources.get(name, f"({kind}: no source)")
        by_kind[kind] += duration
        kind_counts[kind] += 1
        by_source[source] += duration
        source_counts[source] += 1
    total_ms = sum(by_kind.values()) / args.steps / 1e6
    print(f"step {statistics.median(times):.3f} s (median of 8, untraced); XLA op time {total_ms:.0f} ms/step "
          f"over all threads; threads busy {busy_fraction(events):.0%} of the traced span")
    print_table("by op kind", by_kind, kind_counts, args.steps, args.top)
    print_table("by source", by_source, source_counts, args.steps, args.top)


if __name__ == "__main__":
    main()
