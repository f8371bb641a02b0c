"""``jaxspeech launch``: run a planned job on a Cloud TPU slice with ``gcloud``.

  jaxspeech plan --config configs/slam_asr_8b.py --topology v5p:4x4x4 --out plan.json
  jaxspeech launch --plan plan.json --config configs/slam_asr_8b.py --name slam8b --zone us-east5-a \\
      --workdir gs://my-bucket/runs/slam8b --set init.whisper_dir=gs://my-bucket/whisper-large-v3 \\
      --set init.llm_dir=gs://my-bucket/Llama-3.1-8B --dry-run

Prints, then runs (without --dry-run): create the slice the plan was made for, copy this checkout
(git archive of HEAD) and the plan (unless it is on a bucket, gs://..., which the workers read) to every worker, install jaxspeech[tpu] there, start `jaxspeech
train --plan` on all workers at once (a run folder every worker sees; multi-host initialisation through
JAX's Cloud TPU cluster detection), and delete the slice when training ends or a step fails
(--keep leaves it running). Needs the gcloud CLI, logged in, with TPU quota in the zone.
"""

from __future__ import annotations

import argparse


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "launch",
        help="run a planned job on a Cloud TPU slice (gcloud create / install / train / delete)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--plan", required=True, help="plan.json from `jaxspeech plan` (gives the slice): a file or gs://BUCKET/..."
    )
    parser.add_argument("--config", required=True, help="the config the plan was made for: path.py[:arg]")
    parser.add_argument("--name", required=True, help="name of the TPU VM slice to create")
    parser.add_argument("--zone", required=True, help="Cloud zone with quota for the slice, e.g. us-east5-a")
    parser.add_argument("--project", default=None, help="Cloud project (default: gcloud's)")
    parser.add_argument(
        "--workdir",
        required=True,
        help="run folder every worker sees: gs://BUCKET/PATH, or an absolute path where it is mounted",
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="config override passed to `jaxspeech train` (repeatable)",
    )
    parser.add_argument("--spot", action="store_true", help="a Spot slice (cheaper, preemptible)")
    parser.add_argument("--keep", action="store_true", help="do not delete the slice at the end")
    parser.add_argument("--dry-run", action="store_true", help="print the commands, run nothing")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from jaxspeech.cloud.tpu_vm import archive_command, launch_steps, run_steps
    from jaxspeech.plan.plan_file import read_plan

    steps = launch_steps(
        read_plan(args.plan),
        name=args.name,
        zone=args.zone,
        project=args.project,
        config=args.config,
        workdir=args.workdir,
        sets=args.set,
        plan_path=args.plan,
        spot=args.spot,
        keep=args.keep,
    )
    if args.dry_run:
        print("$ " + " ".join(archive_command()))
        for step in steps:
            print(f"$ {step}")
        return 0
    return run_steps(steps)
