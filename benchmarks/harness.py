"""Shared timing harness for side-by-side benchmarks (jaxspeech vs a PyTorch peer on one machine).

Timings alternate between the two contestants so that machine noise (other processes, thermal
state) hits both alike; the reported figure is the median of per-pair time ratios.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from typing import Any, Callable

import numpy as np


def timed(fn: Callable[[], Any]) -> float:
    """Seconds for one call of ``fn`` (which must block until its result is ready)."""
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def alternating(ours: Callable[[], Any], peer: Callable[[], Any], pairs: int = 10, warmup: int = 2) -> dict:
    """Runs ``ours`` and ``peer`` alternately; ratio = peer_time / our_time (> 1: we are faster)."""
    for _ in range(warmup):
        ours()
        peer()
    ours_s, peer_s = [], []
    for i in range(pairs):
        if i % 2:
            peer_s.append(timed(peer))
            ours_s.append(timed(ours))
        else:
            ours_s.append(timed(ours))
            peer_s.append(timed(peer))
    ratios = [p / o for o, p in zip(ours_s, peer_s)]
    return {
        "pairs": pairs,
        "ours_median_s": statistics.median(ours_s),
        "peer_median_s": statistics.median(peer_s),
        "speedup_median": statistics.median(ratios),
        "speedup_min": min(ratios),
        "speedup_max": max(ratios),
    }


def matmul_peak_gflops(size: int = 2048, repeats: int = 10) -> float:
    """Best float32 matmul GFLOP/s that XLA reaches on the default device (the MFU denominator)."""
    import jax
    import jax.numpy as jnp

    a = jax.random.normal(jax.random.key(0), (size, size), jnp.float32)
    b = jax.random.normal(jax.random.key(1), (size, size), jnp.float32)
    matmul = jax.jit(jnp.dot)
    matmul(a, b).block_until_ready()
    best = min(timed(lambda: matmul(a, b).block_until_ready()) for _ in range(repeats))
    return 2 * size**3 / best / 1e9


def best_torch_threads(run: Callable[[], Any], candidates: tuple[int, ...] | None = None, repeats: int = 3) -> int:
    """Sets and returns the torch intra-op thread count that runs ``run`` fastest."""
    import torch

    candidates = candidates or tuple(sorted({1, max(1, (os.cpu_count() or 1) // 2), os.cpu_count() or 1}))
    timings = {}
    for threads in candidates:
        torch.set_num_threads(threads)
        run()
        timings[threads] = min(timed(run) for _ in range(repeats))
    best = min(timings, key=timings.get)
    torch.set_num_threads(best)
    return best


def machine_info() -> dict:
    import jax

    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "jax": jax.__version__,
        "backend": jax.default_backend(),
        "time": time.strftime("%Y-%m-%d %H:%M:%S"),
    }


def write_json(path: str, result: dict) -> None:
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)

    def default(x):
        if isinstance(x, (np.floating, np.integer)):
            return x.item()
        raise TypeError(type(x))

    with open(path, "w") as f:
        json.dump(result, f, indent=2, default=default)
    print(json.dumps(result, indent=2, default=default))
