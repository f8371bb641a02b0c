"""The train step: gradient accumulation, freezing, non-finite skipping, mixed precision."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxspeech.sharding.mesh import make_mesh
from jaxspeech.train import optim
from jaxspeech.train.state import build_layout, init_state
from jaxspeech.train.step import CompiledStep, accumulated_gradients

from jaxspeech.testing.tiny_task import (
    FREEZE_OPTIMIZER,
    StatefulTinyTask,
    TinyConfig,
    TinyTask,
    make_batch,
    with_faults,
)

OPTIMIZER = optim.OptimizerConfig(**FREEZE_OPTIMIZER)


def _setup(task, batch, optimizer=OPTIMIZER, grad_accum_steps=1):
    mesh = make_mesh({"data": 1}, jax.devices()[:1])
    layout = build_layout(task, batch, optimizer, mesh)
    step = CompiledStep(task, layout, optimizer, grad_accum_steps)
    return layout, step, init_state(task, batch, layout)


def _copy(tree):
    return jax.tree.map(np.array, jax.device_get(tree))


def test_accumulating_micro_batches_equals_one_large_batch():
    """4 micro-batches of 4 == one batch of 16: loss, gradients (max abs diff <= 1e-6) and the
    updated parameters. The micro-batches hold different numbers of target tokens, so only
    weighting them by their ``loss_weight`` gives the large-batch gradient."""
    task = TinyTask(TinyConfig(dropout=0.0))
    batch = make_batch(16)
    layout, _, state = _setup(task, batch)
    trainable, frozen = optim.split_trainable(state["params"], layout.trainable)
    rng = jax.random.key(3)
    grads_of = jax.jit(lambda b, k: accumulated_gradients(task, trainable, frozen, b, rng, k), static_argnums=1)
    loss_1, metrics_1, grads_1, _ = grads_of(batch, 1)
    loss_4, metrics_4, grads_4, _ = grads_of(batch, 4)
    np.testing.assert_allclose(loss_4, loss_1, rtol=1e-6)
    np.testing.assert_allclose(metrics_4["accuracy"], metrics_1["accuracy"], rtol=1e-6)
    assert float(metrics_4["loss_weight"]) == float(metrics_1["loss_weight"]) == float(batch["loss_mask"][:, 1:].sum())
    max_diff = max(float(jnp.max(jnp.abs(a - b))) for a, b in zip(jax.tree.leaves(grads_1), jax.tree.leaves(grads_4)))
    assert max_diff <= 1e-6, max_diff

    micro_weights = [batch["loss_mask"][i::4, 1:].sum() for i in range(4)]
    assert len(set(micro_weights)) > 1  # the micro-batches really are unequal

    _, big_step, state_big = _setup(task, batch)
    _, accum_step, state_accum = _setup(task, batch, grad_accum_steps=4)
    state_big, m_big = big_step(state_big, batch)
    state_accum, m_accum = accum_step(state_accum, batch)
    # XLA counts the accumulation loop once; the step's FLOP estimate adds the other 3 micro-batches.
    np.testing.assert_allclose(list(accum_step.flops.values()), list(big_step.flops.values()), rtol=0.1)
    np.testing.assert_allclose(m_accum["loss"], m_big["loss"], rtol=1e-6)
    np.testing.assert_allclose(m_accum["grad_norm"], m_big["grad_norm"], rtol=1e-5)
    # Adam's first update is lr * g / (|g| + eps): where a gradient is tiny, the rounding of the two
    # gradient sums (equal to 1e-6 above) moves it by up to ~1e-3 of the learning rate (1e-2).
    for a, b in zip(jax.tree.leaves(state_big["params"]), jax.tree.leaves(state_accum["params"])):
        np.testing.assert_allclose(a, b, atol=1e-5)


# The freezing and non-finite tests (here and in test_loop) share one program: the stateful task
# (batch norm), FREEZE_OPTIMIZER and batches of 8 with the FAULT_ENTRIES (``with_faults``).


def test_frozen_params_are_bitwise_unchanged_and_the_rest_train():
    task = StatefulTinyTask()
    batch = with_faults(make_batch(8))
    _, step, state = _setup(task, batch)
    before = _copy(state["params"])
    for i in range(2):
        state, metrics = step(state, with_faults(make_batch(8, offset=8 * i)))
    after = _copy(state["params"])
    for name in before["encoder"]:
        assert before["encoder"][name].tobytes() == after["encoder"][name].tobytes()
    assert not np.array_equal(before["connector"]["kernel"], after["connector"]["kernel"])
    assert not np.array_equal(before["llm_norm1"]["scale"], after["llm_norm1"]["scale"])
    assert int(state["step"]) == 2 and float(metrics["skipped_steps"]) == 0


# Every way a step can go non-finite, each in one example of the 8 (index 5), with and without
# gradient accumulation: (batch entry, value, loss finite?, grad_norm).
FAULTS = {
    "nan_gradients": ("poison", 1.0, True, "nan"),
    "+inf_gradients": ("grad_offset", np.inf, True, "inf"),
    "-inf_gradients": ("grad_offset", -np.inf, True, "inf"),
    "inf_loss_finite_gradients": ("loss_offset", np.inf, False, "finite"),
    "nan_loss_finite_gradients": ("loss_offset", np.nan, False, "finite"),
}


@pytest.mark.parametrize("grad_accum_steps", [1, 2], ids=["whole_batch", "accumulated"])
def test_every_kind_of_non_finite_step_is_skipped(grad_accum_steps):
    """Params, optimizer and model state stay bitwise the same and the skip counters advance (two
    bad steps in a row: 2), whether the gradient is NaN, +Inf or -Inf, or the loss is non-finite
    while every gradient is finite; with accumulation, the one bad micro-batch spoils the step the
    same way. A good step afterwards trains and resets the streak."""
    task = StatefulTinyTask()
    good = with_faults(make_batch(8))
    layout, step, state = _setup(task, good, grad_accum_steps=grad_accum_steps)
    state, metrics = step(state, good)
    assert float(metrics["skipped"]) == 0
    trained = _copy(state)
    kept = ("params", "opt_state", "model_state")
    for fault, (entry, value, loss_finite, grad_norm) in FAULTS.items():
        state = jax.device_put(trained, layout.shardings)
        for in_a_row in (1, 2):
            state, metrics = step(state, with_faults(make_batch(8, offset=8 * in_a_row), entry, value, row=5))
            assert np.isfinite(float(metrics["loss"])) == loss_finite, fault
            norm = float(metrics["grad_norm"])
            assert {"nan": np.isnan(norm), "inf": norm == np.inf, "finite": np.isfinite(norm)}[grad_norm], (fault, norm)
            assert float(metrics["skipped"]) == 1 and int(state["skipped_steps"]) == in_a_row, fault
            assert int(state["consecutive_skipped_steps"]) == in_a_row and int(state["step"]) == 1 + in_a_row, fault
        for key in kept:
            for a, b in zip(jax.tree.leaves(trained[key]), jax.tree.leaves(_copy(state[key])), strict=True):
                assert a.tobytes() == b.tobytes(), (fault, key)
        state, metrics = step(state, with_faults(make_batch(8, offset=32)))
        assert float(metrics["skipped"]) == 0 and int(state["consecutive_skipped_steps"]) == 0, fault
        assert int(state["skipped_steps"]) == 2, fault
        assert (
            _copy(state["params"])["connector"]["kernel"].tobytes()
            != trained["params"]["connector"]["kernel"].tobytes()
        )


def test_bf16_compute_keeps_float32_master_params():
    """The task's module computes in bfloat16; the state keeps float32 params and moments, and
    the loss stays close to the float32 one (relative difference < 2e-2)."""
    batch = make_batch(16)  # the shapes of the accumulation test: its float32 step is reused
    losses = {}
    for dtype in (jnp.float32, jnp.bfloat16):
        task = TinyTask(dataclasses.replace(TinyConfig(), compute_dtype=dtype, dropout=0.0))
        _, step, state = _setup(task, batch)
        for i in range(3):
            state, metrics = step(state, make_batch(16, offset=16 * i))
        assert {x.dtype for x in jax.tree.leaves(state["params"])} == {jnp.dtype(jnp.float32)}
        assert {x.dtype for x in jax.tree.leaves(state["opt_state"]) if x.ndim} == {jnp.dtype(jnp.float32)}
        losses[dtype] = float(metrics["loss"])
    assert losses[jnp.float32] != losses[jnp.bfloat16]
    np.testing.assert_allclose(losses[jnp.bfloat16], losses[jnp.float32], rtol=2e-2)


def test_batch_not_divisible_by_accumulation_steps_is_an_error():
    task = TinyTask()
    batch = make_batch(6)
    with pytest.raises(ValueError, match="batch size 6 is not divisible by grad_accum_steps=4"):
        _setup(task, batch, grad_accum_steps=4)[1].compiled(batch)
