"""``jaxspeech train``: the main job — data, training, evaluation and report in one command.

  jaxspeech train --config configs/tiny_asr.py --workdir runs/tiny
  jaxspeech train --config configs/tiny_asr.py:debug --workdir /tmp/debug
  jaxspeech train --config configs/tiny_asr.py --workdir runs/tiny6 --set model.llm.num_layers=6 \\
      --set train.time_budget_s=600
  jaxspeech train --config configs/slam_asr_8b.py --plan plan.json --set init.whisper_dir=... --set init.llm_dir=...

``--plan plan.json`` (written by ``jaxspeech plan``) sets what was planned: the mesh, the remat
policy and each bucket's rows per host batch; the run must be on the planned slice.

Re-running with the same workdir resumes from the newest checkpoint (data position included);
SIGTERM checkpoints and exits 0. The workdir gets config.json, checkpoints/, metrics.jsonl,
TensorBoard events, eval/*.jsonl, plots/ and report.md. A staged config (``stages``, e.g.
configs/tiny_asr.py:staged) trains its stages in order, each such a run in WORKDIR/<stage name>,
skips the stages that finished and writes WORKDIR/report.md with a section per stage;
``--set stages.<name>.train.time_budget_s=60`` sets one stage's key.

--set values are Python literals (numbers, True/False, None, tuples); anything else is a string.
Errors (exit 2): a config file that does not exist; --set without KEY=VALUE; a config key that
does not exist; a value of the wrong type or range for its field (e.g. 'no' for a bool, NaN or a
negative size), named by its dotted key; values that do not fit together (task.kind, init.* checkpoints,
presets or random shapes, buckets beyond the model's frames), named by their section; a --workdir
that is a file or cannot be created; a damaged or mismatched checkpoint in the workdir.
"""

from __future__ import annotations

import argparse
import logging
import os

from jaxspeech.cli.arguments import folder_to_write
from jaxspeech.config_dict import load_config_file, override_from_text


def load_with_overrides(spec: str, sets: list[str]):
    """The config of ``spec`` (``path.py[:arg]``) with the ``key=value`` overrides of ``sets`` applied."""
    config = load_config_file(spec)
    for item in sets:
        override_from_text(config, item)
    return config


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "train",
        help="train, evaluate and report (the main job)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--config", required=True, help="config file, optionally with an argument: path.py[:arg]")
    parser.add_argument(
        "--workdir", type=folder_to_write, default=None, help="run folder (default: runs/<config name>)"
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config value, e.g. --set train.time_budget_s=600 (repeatable)",
    )
    parser.add_argument(
        "--plan",
        default=None,
        metavar="PLAN_JSON",
        help="apply a plan from `jaxspeech plan` (a file or gs://BUCKET/...: mesh, remat, rows per bucket); "
        "the job must run on the planned slice",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bars (for logs)")
    parser.set_defaults(func=run)


def follow_plan(config, path: str) -> None:
    """Applies the plan at ``path`` to ``config`` after checking that this job runs on the planned
    slice (joining the multi-process job first, as training would)."""
    import jax

    from jaxspeech.plan.plan_file import apply_plan, check_devices, read_plan
    from jaxspeech.sharding import multihost
    from jaxspeech.train.config import train_config_from_dict

    plan = read_plan(path)
    apply_plan(config, plan)
    multihost.initialize(train_config_from_dict(config.train).distributed)
    check_devices(plan, jax.devices(), jax.process_count())


def score_line(key: str, value: float) -> str:
    return f"{key}: {value:.3f}" if key.endswith(" PPL") else f"{key}: {100 * value:.2f}%"


def run(args: argparse.Namespace) -> int:
    from jaxspeech.recipes.run import train_and_evaluate

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    config = load_with_overrides(args.config, args.set)
    if args.plan:
        follow_plan(config, args.plan)
    if args.no_progress:
        config.train.progress_bar = False
    name = os.path.splitext(os.path.basename(args.config.partition(":")[0]))[0]
    workdir = args.workdir or os.path.join("runs", name)
    summary = train_and_evaluate(config, workdir, progress=not args.no_progress)
    for stage in summary.get("stages", ())[:-1]:  # a staged config: the earlier stages' scores first
        for key, value in stage["scores"].items():
            print(f"stage {stage['name']}: {score_line(key, value)}")
    for key, value in summary["scores"].items():
        print(score_line(key, value))
    print(f"report: {summary['report']}")
    return 0
