"""Published per-chip figures of Cloud TPU generations (Google Cloud's TPU system architecture pages).

Peak is dense bfloat16 matmul throughput; HBM capacity as published (the runtime keeps a little of
it for itself, which the plan's headroom covers); bandwidths in bytes per second; ICI is the
chip's total inter-chip interconnect bandwidth. A topology may show more than one device per chip
(v4: one per TensorCore): figures per device divide by ``devices_per_chip``.
"""

from __future__ import annotations

import dataclasses
import math

GIB = 2**30


@dataclasses.dataclass(frozen=True)
class Chip:
    generation: str  # as in topology names: "v5e"
    device_kind: str  # jax.Device.device_kind
    peak_flops: float  # bf16 FLOP/s
    hbm_bytes: int
    hbm_bandwidth: float  # bytes/s
    ici_bandwidth: float  # bytes/s

    def per_device(self, devices_per_chip: int) -> "Chip":
        if devices_per_chip == 1:
            return self
        return dataclasses.replace(
            self,
            peak_flops=self.peak_flops / devices_per_chip,
            hbm_bytes=self.hbm_bytes // devices_per_chip,
            hbm_bandwidth=self.hbm_bandwidth / devices_per_chip,
            ici_bandwidth=self.ici_bandwidth / devices_per_chip,
        )


CHIPS = {
    "v4": Chip("v4", "TPU v4", 275e12, 32 * GIB, 1200e9, 2400e9 / 8),
    "v5e": Chip("v5e", "TPU v5 lite", 197e12, 16 * GIB, 819e9, 1600e9 / 8),
    "v5p": Chip("v5p", "TPU v5", 459e12, 95 * GIB, 2765e9, 4800e9 / 8),
    "v6e": Chip("v6e", "TPU v6 lite", 918e12, 32 * GIB, 1640e9, 3584e9 / 8),
}


def chip_of(topology: str) -> Chip:
    """The Chip of a topology name ("v5p:4x4x4")."""
    generation = topology.partition(":")[0]
    if generation not in CHIPS:
        raise ValueError(
            f"no published figures for TPU generation {generation!r} (topology {topology!r}); known: {', '.join(CHIPS)}"
        )
    return CHIPS[generation]


def chips_in(topology: str) -> int:
    """Number of chips a topology name describes ("v5p:4x4x4" -> 64)."""
    _, _, dims = topology.partition(":")
    try:
        return math.prod(int(d) for d in dims.split("x"))
    except ValueError:
        raise ValueError(f"topology {topology!r} is not '<generation>:<chips per dimension, x-separated>'") from None
