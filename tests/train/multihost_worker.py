"""One process of the two-process training test (run as a subprocess, twice at once):

    XLA_FLAGS=--xla_force_host_platform_device_count=2 JAX_COORDINATOR_ADDRESS=localhost:PORT \\
    JAX_NUM_PROCESSES=2 JAX_PROCESS_ID=I PYTHONPATH=<repo>:<repo>/tests \\
    python -m train.multihost_worker WORKDIR --steps N

Each process feeds its half of every global batch (rows 4 * I .. 4 * I + 3 of
``make_batch(8, offset=8 * step)``), so the global batches equal the single-process ones.
"""

import argparse
import sys


class HalfBatches:
    """This process's rows of the global batches, with a checkpointable position."""

    def __init__(self, process_index: int):
        self.process_index, self.position = process_index, 0

    def __iter__(self):
        return self

    def __next__(self):
        from jaxspeech.testing.tiny_task import make_batch

        batch = make_batch(4, offset=8 * self.position + 4 * self.process_index)
        self.position += 1
        return batch

    def get_state(self):
        return {"position": self.position, "process_index": self.process_index}

    def set_state(self, state):
        assert state["process_index"] == self.process_index, state
        self.position = state["position"]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("workdir")
    parser.add_argument("--steps", type=int, required=True)
    parser.add_argument("--cache-dir", default=None)
    args = parser.parse_args(argv)

    import os

    import jax

    if args.cache_dir:
        jax.config.update("jax_compilation_cache_dir", args.cache_dir)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)

    from jaxspeech.train.config import train_config_from_dict
    from jaxspeech.train.loop import train
    from jaxspeech.testing.tiny_task import TinyTask, loop_config

    config = train_config_from_dict(
        loop_config(total_steps=args.steps, mesh={"data": 2, "fsdp": 2}, checkpoint={"every_steps": 0})
    )
    # train() joins the job (JAX_* variables) before it touches a device.
    result = train(TinyTask(), config, HalfBatches(int(os.environ["JAX_PROCESS_ID"])), args.workdir)
    assert jax.process_count() == 2 and jax.device_count() == 4
    print("finished", result.step, result.stop_reason, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
