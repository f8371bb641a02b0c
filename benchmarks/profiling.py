"""Where a compiled XLA program spends its time: op time by kind and by flax source line.

``profile(run, hlo_text, calls)`` traces ``calls`` calls of ``run`` with ``jax.profiler.trace``,
reads the op events back with ``jax.profiler.ProfileData`` and attributes each op's time to the
``op_name`` metadata of its instruction in the optimised HLO (the module path of the flax code that
produced it, e.g. ``.../encoder/layers_0/mlp/fc1/dot_general``). Shared by ``profile_step`` (a
train step) and the encoder / decoding benchmarks (``--profile``).
"""

from __future__ import annotations

import collections
import dataclasses
import glob
import os
import re
import statistics
import tempfile
from typing import Any, Callable

import jax

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
    return statistics.mean(fractions) if fractions else 0.0


@dataclasses.dataclass
class Profile:
    """Op time (ns, summed over the traced calls and threads) and op counts, by kind and by source."""

    calls: int
    by_kind: collections.Counter
    kind_counts: collections.Counter
    by_source: collections.Counter
    source_counts: collections.Counter
    busy: float

    @property
    def ms_per_call(self) -> float:
        return sum(self.by_kind.values()) / self.calls / 1e6

    def table(self, title: str, totals: collections.Counter, counts: collections.Counter, top: int) -> str:
        lines = [title, f"{'ms/call':>9} {'ops/call':>9}  name"]
        for name, ns in totals.most_common(top):
            lines.append(f"{ns / self.calls / 1e6:9.2f} {counts[name] / self.calls:9.0f}  {name}")
        return "\n".join(lines)

    def report(self, top: int = 25) -> str:
        head = (
            f"XLA op time {self.ms_per_call:.0f} ms/call over all threads; threads busy {self.busy:.0%} of the "
            "traced span"
        )
        return "\n\n".join(
            [
                head,
                self.table("by op kind", self.by_kind, self.kind_counts, top),
                self.table("by source", self.by_source, self.source_counts, top),
            ]
        )

    def summary(self, top: int = 12) -> dict[str, Any]:
        """A JSON-able digest: ms per call in total, by kind and by source (the ``top`` largest)."""
        per_call = lambda totals: {name: ns / self.calls / 1e6 for name, ns in totals.most_common(top)}
        return {
            "op_ms_per_call": self.ms_per_call,
            "threads_busy": self.busy,
            "by_kind_ms": per_call(self.by_kind),
            "by_source_ms": per_call(self.by_source),
        }


def profile(run: Callable[[], Any], hlo_text: str, calls: int = 3) -> Profile:
    """Traces ``calls`` calls of ``run`` (which must block until done) and attributes the op time
    to the op kinds and flax sources of ``hlo_text`` (the compiled program's ``as_text()``)."""
    with tempfile.TemporaryDirectory() as trace_dir:
        with jax.profiler.trace(trace_dir):
            for _ in range(calls):
                run()
        events = op_events(trace_dir)
    sources = op_sources(hlo_text)
    by_kind, kind_counts = collections.Counter(), collections.Counter()
    by_source, source_counts = collections.Counter(), collections.Counter()
    for name, _, _, duration in events:
        kind = re.sub(r"\.\d+$", "", name)
        source = sources.get(name, f"({kind}: no source)")
        by_kind[kind] += duration
        kind_counts[kind] += 1
        by_source[source] += duration
        source_counts[source] += 1
    return Profile(calls, by_kind, kind_counts, by_source, source_counts, busy_fraction(events))
