"""Real-size configs on Cloud TPU slices, planned on this machine: the results table of `jaxspeech plan`.

  python -m benchmarks.tpu_plan                       # every cell (hours on 2 CPU cores)
  python -m benchmarks.tpu_plan --cells slam_asr_8b@v5p:4x4x4 --buckets 3000
  python -m benchmarks.tpu_plan --table               # the table of the stored results only

Each cell runs `jaxspeech plan` in its own process (so that one cell's compiler memory is returned
before the next) and keeps its plan in benchmarks/results/tpu_plan/<cell>.json; the table (config x
topology -> fits, HBM per chip and headroom, batch per bucket, step time and MFU estimates, compile
and planning time here) goes to benchmarks/results/tpu_plan.md. Memory comes from the compiled
programs; step time and MFU are estimates (see jaxspeech/plan/estimate.py): no TPU ran anything.
Extra arguments go to `jaxspeech plan` (e.g. --buckets 3000 --no-decode).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

from jaxspeech.plan.mesh_choice import describe

RESULTS = os.path.join(os.path.dirname(__file__), "results")
PLANS = os.path.join(RESULTS, "tpu_plan")
CELLS = {
    "tiny_asr@v5e:2x2": ("configs/tiny_asr.py", "v5e:2x2"),
    "slam_asr_8b@v5p:4x4x4": ("configs/slam_asr_8b.py", "v5p:4x4x4"),
    "slam_asr_8b@v5e:4x4": ("configs/slam_asr_8b.py", "v5e:4x4"),
    "salmonn_7b@v5p:4x4x4": ("configs/salmonn_7b.py", "v5p:4x4x4"),
    "nvlm_7b_d@v5p:4x4x4": ("configs/nvlm_7b.py:d", "v5p:4x4x4"),
    "nvlm_7b_x@v5p:4x4x4": ("configs/nvlm_7b.py:x", "v5p:4x4x4"),
    "nvlm_7b_h@v5p:4x4x4": ("configs/nvlm_7b.py:h", "v5p:4x4x4"),
    "whisper_large_v3@v5p:4x4x4": ("configs/whisper_large_v3.py", "v5p:4x4x4"),
}
GIB = 2**30


def _plan_path(name: str) -> str:
    return os.path.join(PLANS, f"{name.replace(':', '_')}.json")


def run_cell(name: str, extra: list[str]) -> dict:
    """Plans one cell in a child process; returns its plan with the child's wall and CPU seconds."""
    config, topology = CELLS[name]
    out = _plan_path(name)
    command = [
        sys.executable,
        "-m",
        "jaxspeech",
        "plan",
        "--config",
        config,
        "--topology",
        topology,
        "--out",
        out,
        *extra,
    ]
    print("$", " ".join(command), flush=True)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.monotonic()
    completed = subprocess.run(command)
    wall = time.monotonic() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if not os.path.exists(out) or os.path.getmtime(out) < time.time() - wall - 1:
        return {
            "cell": name,
            "config": config,
            "topology": topology,
            "failed": f"exit code {completed.returncode}",
            "wall_seconds": wall,
            "cpu_seconds": cpu,
        }
    with open(out) as f:
        plan = json.load(f)
    plan.update(cell=name, wall_seconds=wall, cpu_seconds=cpu, load_average=os.getloadavg(), extra_args=extra)
    with open(out, "w") as f:
        json.dump(plan, f, indent=2)
    return plan


def table(plans: list[dict]) -> str:
    """Markdown: one row per cell, per-bucket batches and the worst bucket's memory and estimates."""
    lines = [
        "| config | topology | fits | HBM/chip (worst bucket), headroom | batch per bucket (global rows) | mesh | remat | "
        "step time est. | MFU est. | planned in (wall / CPU) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for plan in plans:
        if "failed" in plan or not plan.get("buckets"):
            lines.append(
                f"| {plan['config']} | {plan['topology']} | planning failed ({plan.get('failed', '?')}) | | | | | | | |"
            )
            continue
        capacity = plan["capacity_bytes_per_device"]
        planned = [b for b in plan["buckets"] if b.get("batch")]
        fits = "yes" if len(planned) == len(plan["buckets"]) else ("no" if not planned else "partly")
        batches = ", ".join(f"{b['frames'] / 100:g} s: {b['batch'] or 'refused'}" for b in plan["buckets"])
        if planned:
            worst = max(planned, key=lambda b: b["memory_per_device"]["total"])
            total = worst["memory_per_device"]["total"]
            memory = f"{total / GIB:.1f} GiB of {capacity / GIB:.0f}, {100 * (1 - total / capacity):.0f} %"
            steps = ", ".join(f"{1000 * b['estimate']['seconds']:.0f} ms" for b in planned)
            mfus = ", ".join(f"{100 * b['estimate']['mfu']:.0f} %" for b in planned)
        else:
            memory = steps = mfus = "-"
        compile_s = sum(b.get("compile_seconds", 0) for b in plan["buckets"])
        lines.append(
            f"| {plan['config']} | {plan['topology']} ({plan['devices']} chips, {plan['hosts']} hosts) | {fits} "
            f"| {memory} | {batches} | {describe(plan['mesh'])} | {plan['remat']} | {steps} | {mfus} "
            f"| {plan['wall_seconds'] / 60:.1f} / {plan['cpu_seconds'] / 60:.1f} min "
            f"(last compile per bucket {compile_s / 60:.1f} min) |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cells", nargs="*", default=list(CELLS), choices=list(CELLS), help="cells to plan")
    parser.add_argument("--table", action="store_true", help="plan nothing: the table of the stored results")
    parser.add_argument("--skip-done", action="store_true", help="skip cells whose plan is stored")
    args, extra = parser.parse_known_args(argv)
    os.makedirs(PLANS, exist_ok=True)
    for name in [] if args.table else args.cells:
        if not (args.skip_done and os.path.exists(_plan_path(name))):
            run_cell(name, extra)
    plans = []
    for name in CELLS:  # every stored cell, in table order
        if os.path.exists(_plan_path(name)):
            with open(_plan_path(name)) as f:
                plans.append(json.load(f))
    text = table(plans)
    print(text)
    with open(os.path.join(RESULTS, "tpu_plan.md"), "w") as f:
        f.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
