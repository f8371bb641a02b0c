"""Step time, MFU and throughput of a compiled train step, estimated without running it.

Two estimates, and which one a plan uses:

* the compiler's cost model (``optimal_seconds``), used only where it holds: a program with no
  custom calls (the compiler does not see inside Pallas kernels: it returns nonsense, often a
  negative time) and no loops (it counts a loop body once, so a program with scanned layers looks
  a layer deep);
* otherwise a roofline against the chip's published figures: the longest of compute (FLOPs, every
  layer counted, over the bf16 peak), HBM traffic (bytes accessed over the HBM bandwidth) and
  collectives (bytes each device sends, loops counted, over the chip's total ICI bandwidth). It
  assumes the three overlap perfectly, so it is a lower bound on the step time and an upper bound
  on MFU. The compiler reports bytes accessed with loop bodies counted once; they are scaled by
  the ratio of all-layer FLOPs to the compiler's FLOPs (the layers dominate both).

MFU counts model FLOPs (without rematerialisation) over the chip's peak; audio seconds per second
count padded bucket seconds (the length of the bucket, not of the speech in it).
"""

from __future__ import annotations

import dataclasses

from jaxspeech.plan.chips import Chip
from jaxspeech.plan.flops import StepFlops
from jaxspeech.plan.measure import StepMeasure

FRAMES_PER_SECOND = 100  # log-mel frames (10 ms hop)
COMPILER, ROOFLINE = "compiler cost model", "roofline"


@dataclasses.dataclass(frozen=True)
class StepEstimate:
    seconds: float
    source: str  # COMPILER | ROOFLINE
    compute_seconds: float
    hbm_seconds: float
    ici_seconds: float
    model_flops: float  # per step, all devices
    hardware_flops: float  # per step, all devices (rematerialisation included)
    mfu: float
    audio_seconds_per_second_per_device: float
    why: str  # why the source was chosen


def estimate_step(measure: StepMeasure, row_flops: StepFlops, chip: Chip, devices: int) -> StepEstimate:
    """The ``StepEstimate`` of a compiled step on ``devices`` devices of ``chip``."""
    rows = measure.shape.batch_size
    model, hardware = row_flops.model * rows, row_flops.hardware * rows
    per_device = hardware / devices
    compute = per_device / chip.peak_flops
    scale = per_device / measure.compiled_flops if measure.program.loops and measure.compiled_flops > 0 else 1.0
    hbm = measure.compiled_bytes * max(scale, 1.0) / chip.hbm_bandwidth
    ici = measure.program.collective_bytes / chip.ici_bandwidth
    roofline = max(compute, hbm, ici)
    program = measure.program
    if program.custom_calls or program.loops or not measure.optimal_seconds or measure.optimal_seconds <= 0:
        reasons = []
        if program.custom_calls:
            reasons.append(
                f"{program.custom_calls} Pallas kernel call(s), which the compiler's cost model cannot see into"
            )
        if program.loops:
            reasons.append(f"{program.loops} loop(s), whose bodies the cost model counts once")
        if not reasons:
            reasons.append("no usable compiler estimate")
        seconds, source, why = roofline, ROOFLINE, "; ".join(reasons)
    else:
        seconds, source, why = measure.optimal_seconds, COMPILER, "no custom calls and no loops"
    audio = rows * measure.shape.clips * measure.shape.frames / FRAMES_PER_SECOND
    return StepEstimate(
        seconds=seconds,
        source=source,
        compute_seconds=compute,
        hbm_seconds=hbm,
        ici_seconds=ici,
        model_flops=model,
        hardware_flops=hardware,
        mfu=model / devices / (seconds * chip.peak_flops),
        audio_seconds_per_second_per_device=audio / seconds / devices,
        why=why,
    )
