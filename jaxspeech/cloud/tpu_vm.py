"""The Cloud TPU VM steps of a planned run, as ``gcloud compute tpus tpu-vm`` commands.

From a ``plan.json`` (its topology: the slice to rent) and a few names, ``launch_steps`` lists:

1. ``create`` the TPU VM slice (one VM per host) with the generation's TPU software image;
2. ``scp`` this checkout (a ``git archive`` of HEAD) and the plan (unless on a bucket) to every worker;
3. ``install`` jaxspeech with the TPU extra on every worker;
4. ``train`` on every worker at once: ``jaxspeech train --plan`` with the run folder where every
   worker sees it (a bucket, or its mount point on every worker), multi-host initialisation by
   JAX's Cloud TPU cluster detection when the slice has several hosts;
5. ``delete`` the slice (unless kept).

Nothing here talks to Google Cloud: ``run_steps`` hands the commands to ``gcloud``.
"""

from __future__ import annotations

import dataclasses
import os
import shlex
import subprocess
from typing import Callable, Mapping, Sequence


from jaxspeech import paths

# Per generation: the accelerator-type prefix and how many TensorCores a chip counts for in it,
# and the TPU VM software image (Cloud TPU documentation, "TPU software versions").
GENERATIONS = {
    "v4": ("v4", 2, "tpu-ubuntu2204-base"),
    "v5e": ("v5litepod", 1, "v2-alpha-tpuv5-lite"),
    "v5p": ("v5p", 2, "v2-alpha-tpuv5"),
    "v6e": ("v6e", 1, "v2-alpha-tpuv6e"),
}
ARCHIVE = "jaxspeech.tar.gz"


@dataclasses.dataclass(frozen=True)
class LaunchStep:
    name: str  # create | scp | install | train | delete
    command: tuple[str, ...]

    def __str__(self) -> str:
        return shlex.join(self.command)


def accelerator(plan: Mapping) -> tuple[str, str]:
    """(``--accelerator-type``, ``--version``) of the plan's slice, e.g. ("v5p-128", "v2-alpha-tpuv5")."""
    generation = plan["topology"].partition(":")[0]
    if generation not in GENERATIONS:
        raise ValueError(f"no Cloud TPU VM image known for {plan['topology']!r}; known: {', '.join(GENERATIONS)}")
    prefix, cores_per_chip, version = GENERATIONS[generation]
    chips = plan["devices"] // (2 if generation == "v4" else 1)  # v4 topologies list each TensorCore
    return f"{prefix}-{chips * cores_per_chip}", version


def launch_steps(
    plan: Mapping,
    *,
    name: str,
    zone: str,
    project: str | None,
    config: str,
    workdir: str,
    sets: Sequence[str] = (),
    plan_path: str = "plan.json",
    spot: bool = False,
    keep: bool = False,
) -> list[LaunchStep]:
    """The ``gcloud`` commands of the module docstring for ``plan`` (see ``jaxspeech launch --help``)."""
    if not (workdir.startswith("gs://") or workdir.startswith("/")):
        raise ValueError(
            f"--workdir {workdir!r}: every worker must see the run folder: give a bucket (gs://...) or "
            "an absolute path where the bucket is mounted on every worker"
        )
    accelerator_type, version = accelerator(plan)
    where = [f"--zone={zone}"] + ([f"--project={project}"] if project else [])
    tpu_vm = ["gcloud", "compute", "tpus", "tpu-vm"]
    everywhere = [*where, "--worker=all"]
    train = [
        "jaxspeech",
        "train",
        "--config",
        config,
        "--plan",
        f"../{os.path.basename(plan_path)}" if paths.is_local(plan_path) else plan_path,
        "--workdir",
        workdir,
        "--no-progress",
    ]
    for item in sets:
        train += ["--set", item]
    copied_plan = [plan_path] if paths.is_local(plan_path) else []  # the workers read a bucket's plan there
    if plan["hosts"] > 1:
        train += ["--set", "train.distributed.cluster_detection=True"]
    steps = [
        LaunchStep(
            "create",
            (
                *tpu_vm,
                "create",
                name,
                *where,
                f"--accelerator-type={accelerator_type}",
                f"--version={version}",
                *(["--spot"] if spot else []),
            ),
        ),
        LaunchStep("scp", (*tpu_vm, "scp", ARCHIVE, *copied_plan, f"{name}:~/", *everywhere)),
        LaunchStep(
            "install",
            (
                *tpu_vm,
                "ssh",
                name,
                *everywhere,
                "--command",
                f"mkdir -p jaxspeech && tar xzf {ARCHIVE} -C jaxspeech && pip install -q -e 'jaxspeech[tpu]'",
            ),
        ),
        LaunchStep("train", (*tpu_vm, "ssh", name, *everywhere, "--command", "cd jaxspeech && " + shlex.join(train))),
    ]
    if not keep:
        steps.append(LaunchStep("delete", (*tpu_vm, "delete", name, *where, "--quiet")))
    return steps


def archive_command() -> tuple[str, ...]:
    """The command that packs this checkout (its committed HEAD) for the workers."""
    return ("git", "archive", "--format=tar.gz", "-o", ARCHIVE, "HEAD")


def run_steps(
    steps: Sequence[LaunchStep],
    echo: Callable[[str], None] = print,
    run: Callable[[Sequence[str]], int] = lambda command: subprocess.call(list(command)),
) -> int:
    """Runs the archive command then ``steps`` in order, echoing each; stops at the first failure
    (still deleting a created slice when the failure came after ``create``)."""
    code = run(archive_command())
    if code:
        return code
    delete = next((s for s in steps if s.name == "delete"), None)
    for step in steps:
        echo(f"$ {step}")
        code = run(step.command)
        if code:
            if delete is not None and step.name not in ("create", "delete"):
                echo(f"$ {delete}")
                run(delete.command)
            return code
    return 0
