"""FLOPs of one train step, every layer counted, without lowering the full-depth model.

XLA's cost analysis counts a loop body once, so a compiled step with scanned layers reports one
layer per stack. Lowering an unrolled copy (``train/flops.py``) counts every layer but takes minutes
for a 7-8B model. FLOPs are affine in each stack's depth and linear in the batch, so three lowerings
of one-row, shallow, unrolled copies give the whole count exactly: depths (1, p), (2, p) and (1, 2p),
where p is the decoder's repeating unit (``every`` layers with cross-attention blocks, else 1).

Gradients are taken with respect to the trainable parameters only (frozen weights get no weight
gradient), as in the train step; the optimizer update (a few FLOPs per trained parameter) is left out.
"""

from __future__ import annotations

import dataclasses

import jax

from jaxspeech.plan.parts import PlannedRun
from jaxspeech.train import optim
from jaxspeech.train.flops import lowered_flops, without_scan
from jaxspeech.train.step import accumulated_gradients
from jaxspeech.types import Batch, BatchShape


@dataclasses.dataclass(frozen=True)
class StepFlops:
    """FLOPs of one train step on one row of a bucket, all layers: ``model`` without
    rematerialisation (what MFU counts), ``hardware`` with the run's remat policy (what runs)."""

    model: float
    hardware: float


def _row_flops(run: PlannedRun, shape: BatchShape) -> float:
    """FLOPs of the gradient of the loss for one row shaped like ``shape``, from the lowered program."""
    run = run.with_model(without_scan(run.model))
    batch = Batch.abstract(dataclasses.replace(shape, batch_size=1))
    params = jax.eval_shape(run.task.init_params, jax.random.key(0), batch)
    params = jax.tree.map(lambda p: jax.ShapeDtypeStruct(p.shape, p.dtype), params)  # drop Partitioned boxes
    trainable, frozen = optim.split_trainable(params, optim.trainable_mask(params, run.train.optimizer))
    gradients = lambda t, f, b: accumulated_gradients(run.task, t, f, b, jax.random.key(0))[:3]
    return lowered_flops(gradients, trainable, frozen, batch)


def _all_layers(run: PlannedRun, shape: BatchShape) -> float:
    """``_row_flops`` of the full-depth run, from three shallow copies (see the module docstring)."""
    stacks, unit = run.layer_stacks, run.decoder_period
    base = _row_flops(run.with_layers(1, unit), shape)
    per_encoder_layer = _row_flops(run.with_layers(2, unit), shape) - base
    per_decoder_unit = _row_flops(run.with_layers(1, 2 * unit), shape) - base
    return base + (stacks["encoder"] - 1) * per_encoder_layer + (stacks["decoder"] / unit - 1) * per_decoder_unit


def row_flops(run: PlannedRun, shape: BatchShape, remat_policy: str) -> StepFlops:
    """``StepFlops`` per row of ``shape``'s bucket (multiply by the global batch for a step)."""
    hardware = _all_layers(run.with_remat(remat_policy), shape)
    model = hardware if remat_policy == "none" else _all_layers(run.with_remat("none"), shape)
    return StepFlops(model=model, hardware=hardware)
