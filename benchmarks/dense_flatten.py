"""Why ``Dense`` flattens its leading axes on CPU (``jaxspeech.layers.dense.FLATTEN_INPUTS``).

The gradient (input and kernel) of a stack of Dense layers with the tiny_asr model's shapes
(20 rows x 100 frames, widths 144 -> 576 -> 144), computed with the batched dot over f[B, T, in]
and with the dot over the flattened f[B*T, in]; runs alternate, and the median of per-pair ratios
is reported (> 1: flattening is faster). Both give the same values (checked to 1e-5).

  python -m benchmarks.dense_flatten               # the recorded numbers
  python -m benchmarks.dense_flatten --pairs 3     # smoke run
"""

from __future__ import annotations

import argparse
import os

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks.harness import alternating, machine_info, write_json
from jaxspeech.layers import dense


def _loss(flatten: bool):
    def loss(kernels, x):
        for kernel in kernels:
            if flatten:
                x = jnp.dot(x.reshape(-1, x.shape[-1]), kernel).reshape(*x.shape[:-1], kernel.shape[-1])
            else:
                x = jnp.dot(x, kernel)
            x = jax.nn.gelu(x)
        return jnp.mean(jnp.square(x))

    return jax.jit(jax.grad(loss, argnums=(0, 1)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=20)
    parser.add_argument("--frames", type=int, default=100)
    parser.add_argument("--width", type=int, default=144)
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--pairs", type=int, default=20)
    parser.add_argument("--out", default=os.path.join("benchmarks", "results", "dense_flatten.json"))
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    widths = [args.width, 4 * args.width] * (args.layers // 2) + [args.width]
    kernels = [jnp.asarray(rng.normal(size=(a, b)) / np.sqrt(a), jnp.float32) for a, b in zip(widths, widths[1:])]
    x = jnp.asarray(rng.normal(size=(args.rows, args.frames, args.width)), jnp.float32)
    flat, batched = _loss(True), _loss(False)
    for a, b in zip(jax.tree.leaves(flat(kernels, x)), jax.tree.leaves(batched(kernels, x))):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)
    run = lambda fn: jax.block_until_ready(fn(kernels, x))
    result = alternating(lambda: run(flat), lambda: run(batched), pairs=args.pairs)
    result.update(
        backend=jax.default_backend(),
        flattened_by_default=dense.flatten_inputs(),
        shapes=dict(rows=args.rows, frames=args.frames, widths=widths),
        machine=machine_info(),
        load_average_1min_at_end=os.getloadavg()[0],
    )
    print(
        f"flattened vs batched dot, gradient of {args.layers} Dense layers on {jax.default_backend()}: "
        f"{result['speedup_median']:.2f}x (median of {args.pairs} pairs, {result['speedup_min']:.2f}-"
        f"{result['speedup_max']:.2f}); {result['ours_median_s'] * 1e3:.2f} vs {result['peer_median_s'] * 1e3:.2f} ms"
    )
    write_json(args.out, result)


if __name__ == "__main__":
    main()
