"""Optimizer: schedule, parameter groups, freezing, weight-decay masks, clipping."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxspeech.train import optim

PARAMS = {
    "encoder": {"conv": {"kernel": np.ones((3, 4), np.float32), "bias": np.ones((4,), np.float32)}},
    "connector": {"proj": {"kernel": np.ones((4, 4), np.float32)}},
    "llm": {"norm": {"scale": np.ones((4,), np.float32)}, "head": {"kernel": np.ones((4, 8), np.float32)}},
}


def test_schedule_warmup_then_cosine_to_end_fraction():
    config = optim.OptimizerConfig(learning_rate=2.0, warmup_steps=4, decay_steps=14, end_lr_fraction=0.1)
    factors = np.array([float(optim.lr_factor(s, config)) for s in range(20)])
    np.testing.assert_allclose(factors[:4], [0.25, 0.5, 0.75, 1.0], rtol=1e-6)
    # Half-way through the cosine (step 4 + 10/2) the factor is midway between 1 and 0.1.
    np.testing.assert_allclose(factors[9], 0.55, rtol=1e-6)
    np.testing.assert_allclose(factors[14:], 0.1, rtol=1e-6)
    assert np.all(np.diff(factors[3:]) <= 1e-7)
    np.testing.assert_allclose(float(optim.learning_rate(9, config)), 1.1, rtol=1e-6)


def test_schedule_without_decay_is_constant_after_warmup():
    config = optim.OptimizerConfig(learning_rate=1.0, warmup_steps=2)
    assert [float(optim.lr_factor(s, config)) for s in range(5)] == [0.5, 1.0, 1.0, 1.0, 1.0]


def test_first_matching_rule_wins_and_unmatched_paths_use_the_base_rate():
    config = optim.OptimizerConfig(
        learning_rate=5.0,
        lr_rules=(("encoder/.*", None), ("connector/.*", 1e-3), ("llm/norm/.*", 1e-4), ("llm/.*", 7.0)),
    )
    peaks = optim.peak_learning_rates(PARAMS, config)
    assert peaks == {
        "encoder/conv/kernel": None,
        "encoder/conv/bias": None,
        "connector/proj/kernel": 1e-3,
        "llm/norm/scale": 1e-4,
        "llm/head/kernel": 7.0,
    }
    base = optim.peak_learning_rates(PARAMS, optim.OptimizerConfig(learning_rate=5.0, lr_rules=(("llm/.*", 7.0),)))
    assert base["encoder/conv/kernel"] == 5.0 and base["llm/head/kernel"] == 7.0


def test_rule_matching_nothing_and_freezing_everything_are_errors():
    with pytest.raises(ValueError, match=re.escape("['encodr/.*'] match no parameter")):
        optim.peak_learning_rates(PARAMS, optim.OptimizerConfig(lr_rules=(("encodr/.*", None),)))
    with pytest.raises(ValueError, match="nothing to train"):
        optim.peak_learning_rates(PARAMS, optim.OptimizerConfig(lr_rules=((".*", None),)))


def test_split_and_merge_round_trip_and_frozen_leaves_get_no_optimizer_state():
    config = optim.OptimizerConfig(lr_rules=(("encoder/.*", None),))
    mask = optim.trainable_mask(PARAMS, config)
    trainable, frozen = optim.split_trainable(PARAMS, mask)
    assert set(trainable) == {"connector", "llm"} and set(frozen) == {"encoder"}
    assert jax.tree.structure(optim.merge_trainable(trainable, frozen)) == jax.tree.structure(PARAMS)
    opt_state = optim.build_optimizer(PARAMS, config).init(trainable)
    paths = [optim.path_string(kp) for kp, _ in jax.tree_util.tree_flatten_with_path(opt_state)[0]]
    assert paths and not any("encoder" in p for p in paths)
    state_floats = sum(x.size for x in jax.tree.leaves(opt_state) if x.ndim)
    trainable_floats = sum(x.size for x in jax.tree.leaves(trainable))
    assert state_floats == 2 * trainable_floats  # Adam's two moments, nothing for frozen leaves


def test_decay_mask_excludes_biases_and_norm_scales():
    mask = optim.decay_mask(PARAMS, optim.OptimizerConfig())
    assert mask["encoder"]["conv"] == {"kernel": True, "bias": False}
    assert mask["llm"]["norm"]["scale"] is False and mask["llm"]["head"]["kernel"] is True


def _reference_optimizer(peaks, config, decay):
    """The same update written with stock optax pieces, one per-path learning-rate scale."""

    def scale_by_path(updates, count):
        factor = optim.lr_factor(count, config)
        return jax.tree_util.tree_map_with_path(lambda kp, u: -peaks[optim.path_string(kp)] * factor * u, updates)

    clip = optax.clip_by_global_norm(config.grad_clip_norm)
    adam = optax.scale_by_adam(b1=config.b1, b2=config.b2, eps=config.eps)
    wd = optax.add_decayed_weights(config.weight_decay, mask=decay)

    @jax.jit
    def run(params, grads_per_step):
        states = [clip.init(params), adam.init(params), wd.init(params)]
        for count, grads in enumerate(grads_per_step):
            u, states[0] = clip.update(grads, states[0], params)
            u, states[1] = adam.update(u, states[1], params)
            u, states[2] = wd.update(u, states[2], params)
            params = optax.apply_updates(params, scale_by_path(u, count))
        return params

    return run


def test_optimizer_equals_clip_adam_decay_with_per_group_rates():
    config = optim.OptimizerConfig(
        learning_rate=1e-2,
        warmup_steps=2,
        decay_steps=6,
        weight_decay=0.1,
        grad_clip_norm=0.5,
        lr_rules=(("connector/.*", 3e-2), ("llm/norm/.*", 1e-3)),
    )
    params = jax.tree.map(jnp.asarray, PARAMS)
    keys = jax.random.split(jax.random.key(0), 5)
    grads_per_step = [jax.tree.map(lambda p, k=k: 3.0 * jax.random.normal(k, p.shape), params) for k in keys]
    tx = optim.build_optimizer(params, config)

    @jax.jit
    def ours_after(params, grads_per_step):
        state = tx.init(params)
        for grads in grads_per_step:
            updates, state = tx.update(grads, state, params)
            params = optax.apply_updates(params, updates)
        return params

    ours = ours_after(params, grads_per_step)
    peaks = optim.peak_learning_rates(params, config)
    reference = _reference_optimizer(peaks, config, optim.decay_mask(params, config))(params, grads_per_step)
    for a, b in zip(jax.tree.leaves(ours), jax.tree.leaves(reference)):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    # The groups really moved at different rates: the first Adam step is ~lr * sign(grad).
    first, _ = jax.jit(tx.update)(grads_per_step[0], tx.init(params), params)
    np.testing.assert_allclose(np.abs(first["connector"]["proj"]["kernel"]).max(), 3e-2 * 0.5 * (1 + 0.1), rtol=0.02)
    np.testing.assert_allclose(np.abs(first["llm"]["norm"]["scale"]).max(), 1e-3 * 0.5, rtol=0.02)


def test_decay_horizon_in_the_state_sets_the_schedule():
    config = optim.OptimizerConfig(learning_rate=1.0, decay_steps=10, end_lr_fraction=0.2, grad_clip_norm=None)
    params = {"w": jnp.ones((3,))}
    tx = optim.build_optimizer(params, config)
    state = tx.init(params)
    assert int(optim.decay_horizon(state)) == 10  # the config's value is the first one
    moved = optim.with_decay_horizon(state, 2)
    assert (
        int(optim.decay_horizon(moved)) == 2
        and optim.decay_horizon(moved).sharding == optim.decay_horizon(state).sharding
    )
    grads = {"w": jnp.array([1.0, -2.0, 3.0])}
    update = jax.jit(tx.update)
    for _ in range(3):  # steps 0, 1, 2: the third is at the moved horizon, so at the floor
        step_updates, moved = update(grads, moved, params)
        ten_updates, state = update(grads, state, params)
    # Adam's update of a constant gradient is ~sign(g): its size is the learning-rate factor.
    np.testing.assert_allclose(np.abs(step_updates["w"]), float(optim.lr_factor(2, config, 2)), rtol=1e-4)
    np.testing.assert_allclose(float(optim.lr_factor(2, config, 2)), 0.2, rtol=1e-6)
    np.testing.assert_allclose(np.abs(ten_updates["w"]), float(optim.lr_factor(2, config)), rtol=1e-4)
    assert float(optim.lr_factor(2, config)) > 0.9
