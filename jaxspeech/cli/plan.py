"""``jaxspeech plan``: will this config fit a TPU slice, with which batches, and how fast? Answered
on this machine, before renting the slice: the real train step is compiled for the slice ahead of
time (libtpu's compiler; no TPU, no weights, no data, no network).

  jaxspeech plan --config configs/slam_asr_8b.py --topology v5p:4x4x4
  jaxspeech plan --config configs/tiny_asr.py:debug --topology v5e:2x2 --out plan.json
  jaxspeech train --config configs/slam_asr_8b.py --plan plan.json --set init.whisper_dir=... --set init.llm_dir=...

Chooses the mesh (data / fsdp / tensor sizes) and the remat policy, and says why; prints, per
duration bucket: the largest global batch that fits within the headroom, per-chip HBM
(parameters, optimizer state, gradients, activations), FLOPs per step, the estimated step time and
MFU, and audio seconds per second per chip; writes plan.json, which `jaxspeech train --plan` applies
(mesh, remat policy, rows per bucket). A run or bucket that cannot fit is refused with the numbers.
Large models take minutes per compile: --buckets plans a subset, --mesh and --remat skip a search.
"""

from __future__ import annotations

import argparse
import sys

from jaxspeech import paths
from jaxspeech.cli.train import load_with_overrides
from jaxspeech.config_dict import parse_value


def _mesh(text: str) -> dict[str, int]:
    try:
        return {name: int(size) for name, size in (item.split("=") for item in text.split(","))}
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--mesh expects AXIS=SIZE,... (e.g. fsdp=16,tensor=4), got {text!r}"
        ) from None


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "plan",
        help="plan memory, batch sizes and speed of a run on a TPU slice (no TPU needed)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--config", required=True, help="config file, optionally with an argument: path.py[:arg]")
    parser.add_argument(
        "--topology",
        required=True,
        help="TPU slice as libtpu names it: v5e:2x2, v5e:4x4, v5p:2x2x1, v5p:4x4x4, v6e:8x8, ...",
    )
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="override a config value (repeatable)"
    )
    parser.add_argument(
        "--headroom", type=float, default=0.1, help="HBM fraction left free on every chip (default 0.1)"
    )
    parser.add_argument(
        "--mesh", type=_mesh, default=None, help="mesh axis sizes, e.g. fsdp=16,tensor=4 (default: chosen)"
    )
    parser.add_argument(
        "--remat",
        choices=("none", "dots", "dots_no_batch", "full"),
        default=None,
        help="remat policy of every layer stack (default: chosen)",
    )
    parser.add_argument(
        "--buckets",
        type=parse_value,
        default=None,
        help="bucket lengths in frames to plan, e.g. 3000 or '(1000, 3000)' (default: all)",
    )
    parser.add_argument(
        "--max-rows-per-chip",
        type=int,
        default=None,
        help="cap on rows per chip per batch where memory allows more (default 64)",
    )
    parser.add_argument("--no-decode", action="store_true", help="do not compile the decode step")
    parser.add_argument(
        "--out", default="plan.json", help="where to write the plan: a file or gs://BUCKET/... (default plan.json)"
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from jaxspeech.plan.plan_file import write_plan
    from jaxspeech.plan.planner import make_plan
    from jaxspeech.plan.report import format_plan
    from jaxspeech.plan.search import PlanRefused

    config = load_with_overrides(args.config, args.set)
    buckets = args.buckets if args.buckets is None or isinstance(args.buckets, tuple) else (args.buckets,)
    log = lambda message: print(message, file=sys.stderr, flush=True)
    try:
        plan = make_plan(
            config,
            config_name=args.config,
            sets=args.set,
            topology=args.topology,
            headroom=args.headroom,
            mesh=args.mesh,
            remat=args.remat,
            buckets=buckets,
            decode=not args.no_decode,
            log=log,
            **({} if args.max_rows_per_chip is None else {"max_rows_per_device": args.max_rows_per_chip}),
        )
    except PlanRefused as refused:
        print(f"refused: {refused}")
        return 1
    print(format_plan(plan))
    write_plan(plan, args.out)
    print(f"wrote {paths.absolute(args.out)}")
    return 0 if any(b["batch"] for b in plan["buckets"]) else 1
