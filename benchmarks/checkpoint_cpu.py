"""What checkpoint digests cost: jaxspeech's ``Checkpointer`` (orbax + a digest of every array,
recorded at save and checked at restore) vs the same orbax ``CheckpointManager`` without them.

The state is ~100 MB of float32 (25 arrays of 1024 x 1024, random, so zstd cannot shrink it) on
one CPU device. "save" is timed until the step is committed (asynchronous write included),
"restore" until the arrays are on the device (and, ours, verified). Calls alternate between the two
sides (``benchmarks.harness.alternating``); ``speedup_*`` are per-pair ratios peer / ours, so 0.8
means ours takes 1.25 times as long. The digest alone is timed too.

  python -m benchmarks.checkpoint_cpu                      # -> benchmarks/results/checkpoint_cpu.json
  python -m benchmarks.checkpoint_cpu --smoke --out /tmp/checkpoint_cpu_smoke.json
"""

from __future__ import annotations

import argparse
import itertools
import os
import statistics
import tempfile

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

from benchmarks.harness import alternating, machine_info, timed, write_json
from jaxspeech.train.checkpoint import CheckpointConfig, Checkpointer
from jaxspeech.train.digest import array_digests


def make_state(arrays: int, side: int) -> dict:
    rng = np.random.default_rng(0)
    params = {f"w{i:02d}": jnp.asarray(rng.standard_normal((side, side), np.float32)) for i in range(arrays)}
    return {"params": params, "step": jnp.int32(0)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="a 4 MB state and 2 pairs (checks that it runs)")
    parser.add_argument("--pairs", type=int, default=8)
    parser.add_argument("--out", default="benchmarks/results/checkpoint_cpu.json")
    args = parser.parse_args()
    arrays, side, pairs = (4, 512, 2) if args.smoke else (25, 1024, args.pairs)
    state = make_state(arrays, side)
    jax.block_until_ready(state)
    sharding = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding), state)
    megabytes = sum(x.nbytes for x in jax.tree.leaves(state)) / 1e6

    with tempfile.TemporaryDirectory() as root:
        ours = Checkpointer(os.path.join(root, "ours"), CheckpointConfig(max_to_keep=2))
        options = ocp.CheckpointManagerOptions(max_to_keep=2, enable_async_checkpointing=True, create=True)
        peer = ocp.CheckpointManager(os.path.join(root, "peer"), item_names=("state", "meta"), options=options)
        steps = itertools.count(1)

        def save_ours():
            ours.save(next(steps), state)
            ours.wait()

        def save_peer():
            items = {"state": ocp.args.StandardSave(state), "meta": ocp.args.JsonSave({"step": 0})}
            peer.save(next(steps), args=ocp.args.Composite(**items), force=True)
            peer.wait_until_finished()

        def restore_ours():
            jax.block_until_ready(ours.restore(ours.latest_step(), abstract, with_data=False).state)

        def restore_peer():
            items = {"state": ocp.args.StandardRestore(abstract), "meta": ocp.args.JsonRestore()}
            jax.block_until_ready(peer.restore(peer.latest_step(), args=ocp.args.Composite(**items))["state"])

        save = alternating(save_ours, save_peer, pairs=pairs, warmup=1)
        restore = alternating(restore_ours, restore_peer, pairs=pairs, warmup=1)
        digest_s = statistics.median(timed(lambda: array_digests(state)) for _ in range(max(pairs, 3)))
        ours.close()
        peer.close()

    write_json(
        args.out,
        {
            "benchmark": "checkpoint_cpu",
            "machine": machine_info(),
            "load_average": os.getloadavg(),
            "state_mb": megabytes,
            "save": save,
            "restore": restore,
            "digest_median_s": digest_s,
            "digest_mb_per_s": megabytes / digest_s,
        },
    )


if __name__ == "__main__":
    main()
