"""Whisper encoder: length arithmetic, HF parity, padding invariance, scan/remat equivalence, sharding."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import linen as nn
from flax import traverse_util

from jaxspeech.convert.hf_whisper import load_hf_whisper
from jaxspeech.encoders.whisper import WhisperEncoder, output_lengths
from jaxspeech.layers import axes
from jaxspeech.layers.embeddings import sinusoids
from jaxspeech.sharding.mesh import activation_rules, make_mesh, param_shardings

LOGICAL_NAMES = {v for k, v in vars(axes).items() if k.isupper() and isinstance(v, str)}


def _features(batch: int, frames: int, seed: int = 0) -> jnp.ndarray:
    return jnp.asarray(np.random.RandomState(seed).randn(batch, frames, 80).astype(np.float32))


def _encoder(config, params, features, lengths=None, **kwargs):
    return WhisperEncoder(config).apply({"params": params["params"]["encoder"]}, features, lengths, **kwargs)


def test_output_lengths_arithmetic():
    # conv2 (kernel 3, stride 2, padding 1): floor((T + 2 - 3) / 2) + 1 = (T - 1) // 2 + 1 = ceil(T / 2)
    frames = np.array([1, 2, 3, 99, 100, 101, 2999, 3000])
    np.testing.assert_array_equal(output_lengths(jnp.asarray(frames)), [1, 1, 2, 50, 50, 51, 1500, 1500])
    # 30 s = 480000 samples, hop 160 -> 3000 frames -> 1500 encoder frames of 20 ms
    assert int(output_lengths(jnp.int32(480000 // 160))) == 1500


def test_hf_position_table_is_sinusoids(micro):
    table = micro.hf.model.encoder.embed_positions.weight.detach().numpy()
    assert table.shape == (50, 64)
    assert np.abs(table - sinusoids(50, 64)).max() < 1e-5  # float32 rounding of torch vs numpy


@pytest.mark.parity
def test_encoder_and_hidden_states_match_hf(micro):
    features = _features(2, 100)
    run = jax.jit(lambda p, x: _encoder(micro.config.encoder, p, x, output_layers="all"))
    ours = run(micro.params, features)
    with torch.no_grad():
        ref = micro.hf.model.encoder(torch.tensor(np.asarray(features)).transpose(1, 2), output_hidden_states=True)
    diff = float(np.abs(np.asarray(ours.hidden) - ref.last_hidden_state.numpy()).max())
    assert diff <= 1e-4, diff
    # HF's hidden_states: the stem output + positions, each block's output but the last, and the
    # final (normed) output; ours keep the last block's output before the norm.
    assert len(ref.hidden_states) == len(ours.layer_states) == 3
    np.testing.assert_allclose(ref.hidden_states[-1].numpy(), ref.last_hidden_state.numpy())
    for mine, theirs in zip(ours.layer_states[:-1], ref.hidden_states[:-1]):
        scale = float(np.abs(theirs.numpy()).max())
        assert float(np.abs(np.asarray(mine) - theirs.numpy()).max()) <= 1e-5 * max(scale, 1.0)


def test_padding_never_changes_valid_frames(micro):
    config = micro.config.encoder
    lengths = [100, 61, 30]
    features = _features(3, 100, seed=1)
    run = jax.jit(lambda p, x, n: _encoder(config, p, x, n, output_layers=(1,)))
    batched = run(micro.params, features, jnp.asarray(lengths))
    np.testing.assert_array_equal(batched.lengths, [50, 31, 15])
    unmasked = run(micro.params, features, None)  # no lengths: every frame valid, no masking work
    np.testing.assert_allclose(unmasked.hidden[0], batched.hidden[0], atol=1e-5)
    for row, length in enumerate(lengths):
        alone = run(micro.params, features[row : row + 1, :length], None)
        valid = int(alone.lengths[0])
        assert alone.hidden.shape[1] == valid
        np.testing.assert_allclose(batched.hidden[row, :valid], alone.hidden[0], atol=1e-5)
        state = np.asarray(alone.layer_states[0][0])
        np.testing.assert_allclose(batched.layer_states[0][row, :valid], state, atol=1e-5 * np.abs(state).max())
        assert not np.any(np.asarray(batched.hidden[row, valid:]))  # padded frames are zeroed


def test_scan_equals_loop_and_layer_selection(micro):
    scan_config, scan_params = load_hf_whisper(micro.directory, scan_layers=True)
    assert scan_params["params"]["encoder"]["layers"]["mlp"]["fc1"]["kernel"].shape == (2, 64, 128)
    features, lengths = _features(2, 100, seed=2), jnp.array([100, 77])
    layers = (0, 1, -1)
    loop = jax.jit(lambda p: _encoder(micro.config.encoder, p, features, lengths, output_layers=layers))(micro.params)
    scan = jax.jit(lambda p: _encoder(scan_config.encoder, p, features, lengths, output_layers=layers))(scan_params)
    np.testing.assert_allclose(scan.hidden, loop.hidden, atol=1e-5)
    assert len(scan.layer_states) == 3
    for a, b in zip(scan.layer_states, loop.layer_states):
        np.testing.assert_allclose(a, b, atol=1e-5 * float(np.abs(b).max()))
    with pytest.raises(ValueError, match="out of range"):
        _encoder(micro.config.encoder, micro.params, features, output_layers=(3,))


def test_remat_equals_no_remat_values_and_gradients(micro):
    base_config, params = load_hf_whisper(micro.directory, scan_layers=True)
    features, lengths = _features(2, 20, seed=3), jnp.array([20, 13])

    def value_and_grad(config):
        def loss(p):
            out = _encoder(config.encoder, p, features, lengths)
            return jnp.sum(out.hidden * jnp.cos(jnp.arange(64.0))[None, None, :])

        value, grads = jax.jit(jax.value_and_grad(loss))(params)
        return value, traverse_util.flatten_dict(grads["params"]["encoder"], sep="/")

    value, grads = value_and_grad(base_config)
    # "full" is covered with the decoder in test_seq2seq's full-model remat test.
    for policy in ("dots",):
        remat_value, remat_grads = value_and_grad(base_config.with_options(remat_policy=policy, scan_layers=True))
        np.testing.assert_allclose(remat_value, value, rtol=1e-6)
        for path, g in grads.items():
            scale = max(1.0, float(np.abs(g).max()))
            np.testing.assert_allclose(remat_grads[path], g, atol=1e-5 * scale, err_msg=f"{policy}: {path}")


def test_bad_inputs_raise_clear_errors(micro):
    with pytest.raises(ValueError, match=r"f32\[B, T, 80\]"):
        _encoder(micro.config.encoder, micro.params, jnp.zeros((1, 100, 64)))
    with pytest.raises(ValueError, match="at most 100 frames"):
        _encoder(micro.config.encoder, micro.params, jnp.zeros((1, 101, 80)))


def test_logical_axes_on_every_parameter_and_sharded_forward(micro):
    config = micro.config.encoder.replace(scan_layers=True)
    model = WhisperEncoder(config)
    features, lengths = _features(4, 100, seed=4), jnp.array([100, 90, 50, 11])
    boxed = jax.eval_shape(lambda: model.init(jax.random.key(0), features))["params"]
    leaves = jax.tree.leaves(boxed, is_leaf=lambda x: isinstance(x, nn.Partitioned))
    assert leaves and all(isinstance(leaf, nn.Partitioned) for leaf in leaves)
    for leaf in leaves:
        assert set(leaf.names) <= LOGICAL_NAMES, leaf.names
        assert len(leaf.names) == leaf.value.ndim

    _, scan_params = load_hf_whisper(micro.directory, scan_layers=True)
    params = {"params": scan_params["params"]["encoder"]}
    expected = model.apply(params, features, lengths).hidden
    mesh = make_mesh({"data": 2, "fsdp": 2, "tensor": 2})
    shardings = param_shardings({"params": boxed}, mesh)
    sharded = jax.device_put(params, shardings)
    assert sharded["params"]["layers"]["mlp"]["fc1"]["kernel"].sharding.spec[2] == "tensor"
    with activation_rules(mesh):
        out = jax.jit(lambda p, x, n: model.apply(p, x, n).hidden)(sharded, features, lengths)
    # A sharding error moves outputs of size ~1 by O(1); split reductions reorder float32 sums (~1e-5).
    np.testing.assert_allclose(out, expected, atol=2e-5)
