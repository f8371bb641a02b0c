"""A small training run for the crash/resume and SIGTERM tests, run as a subprocess:

    PYTHONPATH=<repo>:<repo>/tests python -m train.train_worker WORKDIR --manifest M --steps 20

It trains the tiny task on the manifest's audio read through the project's Grain data pipeline,
prints ``next`` each time the trainer takes a batch (so the parent can kill it mid-training),
resumes from WORKDIR's checkpoints (the trainer's log, on stderr, says from which), and at the end
writes the final parameters to ``WORKDIR/final_params.npz`` and ``{"step", "stop_reason"}`` to
``WORKDIR/result.json``.

``--sigterm-in compile|save|restore`` sends the process SIGTERM from inside the trainer's first
step compilation, right after its first asynchronous checkpoint save has started (the write still
in flight), or inside its restore: the signal handler runs while that phase is on the stack. It
prints ``sigterm in <phase>`` (for a save: and whether orbax was still writing).
"""

import argparse
import json
import logging
import os
import signal
import sys
import time


class _Announcing:
    """Wraps a checkpointable iterator: prints ``next`` per batch and waits ``delay_s`` (so that
    the run lasts long enough to be interrupted at random moments)."""

    def __init__(self, iterator, delay_s: float):
        self.iterator, self.delay_s = iterator, delay_s

    def __iter__(self):
        return self

    def __next__(self):
        batch = next(self.iterator)
        time.sleep(self.delay_s)
        print("next", flush=True)
        return batch

    def get_state(self):
        return self.iterator.get_state()

    def set_state(self, state):
        self.iterator.set_state(state)


def _sigterm_inside(phase: str) -> None:
    """Patches the trainer so that SIGTERM reaches this process once, inside ``phase``."""
    from jaxspeech.train.checkpoint import Checkpointer
    from jaxspeech.train.step import CompiledStep

    fired = []

    def terminate(note: str = "") -> None:
        if not fired:
            fired.append(phase)
            print(f"sigterm in {phase}{note}", flush=True)
            os.kill(os.getpid(), signal.SIGTERM)

    if phase == "compile":
        original = CompiledStep.compiled

        def compiled(self, host_batch):
            if not self._compiled:
                terminate()
            return original(self, host_batch)

        CompiledStep.compiled = compiled
    elif phase == "save":
        original = Checkpointer.save

        def save(self, *args, **kwargs):
            started = original(self, *args, **kwargs)
            if started:
                terminate(f" (writing: {self._manager.is_saving_in_progress()})")
            return started

        Checkpointer.save = save
    elif phase == "restore":
        original = Checkpointer.restore_latest

        def restore_latest(self, *args, **kwargs):
            terminate()
            return original(self, *args, **kwargs)

        Checkpointer.restore_latest = restore_latest


def main(argv=None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("workdir")
    parser.add_argument("--manifest", required=True)
    parser.add_argument("--steps", type=int, required=True)
    parser.add_argument("--checkpoint-every", type=int, default=2)
    parser.add_argument("--delay", type=float, default=0.02)
    parser.add_argument("--no-restore-data", action="store_true")
    parser.add_argument("--cache-dir", default=None)
    parser.add_argument("--sigterm-in", choices=("compile", "save", "restore"), default=None)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("jaxspeech.train.loop").setLevel(logging.INFO)  # "resumed from <step folder>"

    import jax
    import numpy as np
    from flax import traverse_util

    if args.cache_dir:
        jax.config.update("jax_compilation_cache_dir", args.cache_dir)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
        jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)

    from jaxspeech.sharding.mesh import make_mesh
    from jaxspeech.train.config import train_config_from_dict
    from jaxspeech.train.loop import train
    from jaxspeech.testing.pipeline_data import BatchTinyTask, pipeline_iterator
    from jaxspeech.testing.tiny_task import loop_config

    if args.sigterm_in:
        _sigterm_inside(args.sigterm_in)
    config = train_config_from_dict(
        loop_config(
            total_steps=args.steps,
            checkpoint={
                "every_steps": args.checkpoint_every,
                "max_to_keep": 3,
                "restore_data_state": not args.no_restore_data,
            },
            metrics={"log_every": 4},
        )
    )
    data = _Announcing(pipeline_iterator(args.manifest), args.delay)
    mesh = make_mesh({"data": 1}, jax.devices()[:1])
    result = train(BatchTinyTask(), config, data, args.workdir, mesh=mesh)

    params = traverse_util.flatten_dict(jax.device_get(result.state["params"]), sep="/")
    np.savez(os.path.join(args.workdir, "final_params.npz"), **params)
    with open(os.path.join(args.workdir, "result.json"), "w") as f:
        json.dump({"step": result.step, "stop_reason": result.stop_reason}, f)
    return 0


if __name__ == "__main__":
    sys.exit(main())
