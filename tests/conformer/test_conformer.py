"""Encoder invariants: padding never changes valid frames (eval and train), scan == loop and
remat == no remat (values, gradients, batch statistics), streaming chunks never see the future,
relative position encodings are shift-invariant, hidden-state selection, logical axes on every
parameter and an 8-device sharded forward, bfloat16 compute, and clear errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn
from flax import traverse_util

from jaxspeech.encoders.conformer import ConformerConfig, ConformerEncoder, _layer_indices
from jaxspeech.layers import axes
from jaxspeech.sharding.mesh import activation_rules, make_mesh, param_shardings
from jaxspeech.testing import conformer as tiny


def test_padding_does_not_change_valid_outputs():
    config = tiny.TINY
    variables = tiny.init(config)
    x, lengths = tiny.features([64, 37], padding_value=None)  # garbage (|x| ~ 100) in padded frames
    hidden, out_lengths, states = tiny.forward(config, "all")(variables, x, lengths)
    np.testing.assert_array_equal(out_lengths, [8, 5])
    assert not np.any(np.asarray(states)[:, 1, 5:]), "padded frames of every returned state must be zero"
    for b, n in enumerate(lengths):
        _, alone_lengths, alone = tiny.forward(config, "all")(variables, x[b : b + 1, :n], lengths[b : b + 1])
        assert int(alone_lengths[0]) == int(out_lengths[b])
        # rtol: a few ulps, since matmuls over both rows and over one row sum in different blocks
        np.testing.assert_allclose(states[:, b, : out_lengths[b]], alone[:, 0], atol=1e-5, rtol=1e-6)


def _train_step_outputs(config, variables, x, lengths):
    model = ConformerEncoder(config)
    (hidden, out_lengths), updates = jax.jit(lambda v, x, n: model.apply(v, x, n, train=True, mutable=["batch_stats"]))(
        variables, x, lengths
    )
    return hidden, out_lengths, updates["batch_stats"]


def test_padding_stays_out_of_batch_norm_statistics():
    config = tiny.TINY  # dropout rates are 0: train mode differs from eval only by batch statistics
    variables = tiny.init(config)
    x, lengths = tiny.features([64, 37], total=64, padding_value=None)
    longer = np.concatenate([x, 100 * np.random.RandomState(1).randn(2, 32, tiny.MELS).astype(np.float32)], axis=1)
    hidden, out_lengths, stats = _train_step_outputs(config, variables, x, lengths)
    hidden_long, _, stats_long = _train_step_outputs(config, variables, longer, lengths)
    for b, n in enumerate(np.asarray(out_lengths)):
        np.testing.assert_allclose(hidden[b, :n], hidden_long[b, :n], atol=1e-5, rtol=0)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-5, rtol=0), stats, stats_long)
    moved = jax.tree.map(lambda new, old: float(jnp.abs(new - old).max()), stats, variables["batch_stats"])
    assert min(jax.tree.leaves(moved)) > 1e-3, "training must update the running statistics"


def _stack_layers(tree, num_layers):
    """Per-layer subtrees ``layers_i`` -> one ``layers`` subtree with a leading layer axis."""
    tree = dict(tree)
    layers = [tree.pop(f"layers_{i}") for i in range(num_layers)]
    tree["layers"] = jax.tree.map(lambda *leaves: jnp.stack(leaves), *layers)
    return tree


def _loss_grads_stats(config, variables, x, lengths):
    model = ConformerEncoder(config)
    projection = jnp.asarray(np.random.RandomState(2).randn(config.d_model), jnp.float32)

    def loss(params):
        (hidden, _), updates = model.apply(
            {"params": params, "batch_stats": variables["batch_stats"]}, x, lengths, train=True, mutable=["batch_stats"]
        )
        return jnp.sum(jnp.tanh(hidden @ projection)), updates["batch_stats"]

    (value, stats), grads = jax.jit(jax.value_and_grad(loss, has_aux=True))(variables["params"])
    return value, grads, stats


def test_scan_equals_loop_and_remat_equals_no_remat():
    loop = tiny.TINY.replace(scan_layers=False)
    variables = tiny.init(loop)
    stacked = {name: _stack_layers(tree, loop.num_layers) for name, tree in variables.items()}
    x, lengths = tiny.features([64, 37])
    reference = _loss_grads_stats(loop, variables, x, lengths)
    reference = (reference[0], *[_stack_layers(tree, loop.num_layers) for tree in reference[1:]])
    for config in (loop.replace(scan_layers=True), loop.replace(scan_layers=True, remat_policy="full")):
        value, grads, stats = _loss_grads_stats(config, stacked, x, lengths)
        np.testing.assert_allclose(value, reference[0], rtol=1e-5)
        flat_ref = traverse_util.flatten_dict(reference[1], sep="/")
        flat = traverse_util.flatten_dict(grads, sep="/")
        assert flat.keys() == flat_ref.keys()
        for name in flat:
            np.testing.assert_allclose(
                flat[name], flat_ref[name], atol=1e-5, rtol=1e-4, err_msg=f"{config.remat_policy} {name}"
            )
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6), stats, reference[2])


def test_streaming_chunks_never_see_future_frames():
    # 4x causal subsampling: subsampled frame j reads input frames <= 4j. Chunks of 2 subsampled
    # frames: output frame i may read up to the last frame e_i = 2 * (i // 2) + 1 of its chunk,
    # i.e. input frames <= 4 * e_i, and (causal depthwise conv) nothing later.
    config = tiny.TINY.replace(
        subsampling_factor=4, subsampling_padding="causal", conv_causal=True, chunk_size=2, left_chunks=1, num_layers=2
    )
    variables = tiny.init(config)
    x, lengths = tiny.features([48])
    model = ConformerEncoder(config)
    projection = jnp.asarray(np.random.RandomState(3).randn(config.d_model), jnp.float32)
    frames = lambda x: model.apply(variables, x, lengths)[0][0] @ projection  # [T']
    jacobian = np.asarray(jax.jit(jax.jacrev(frames))(jnp.asarray(x)))[:, 0]  # [T', T, F]
    last_input_read = [int(np.nonzero(np.any(row != 0, axis=-1))[0].max()) for row in jacobian]
    chunk_ends = [2 * (i // 2) + 1 for i in range(jacobian.shape[0])]
    assert last_input_read == [4 * e for e in chunk_ends]


@pytest.mark.parametrize("pos_encoding", ["rel_pos", "rope", "none"])
def test_position_encodings_are_relative(pos_encoding):
    # Kernel-1 convolutions everywhere: subsampled frame t is input frame 4t and only attention mixes
    # frames, within chunks of 4 (left_chunks=0). Two chunks with the same content must then give the
    # same outputs (shift invariance); reordering frames inside a chunk reorders the outputs only
    # when there is no positional information.
    config = tiny.TINY.replace(
        pos_encoding=pos_encoding, subsampling_factor=4, subsampling_kernel_size=1, conv_kernel_size=1,
        chunk_size=4, left_chunks=0,
    )  # fmt: skip
    variables = tiny.init(config)
    content = np.random.RandomState(4).randn(4, tiny.MELS).astype(np.float32)
    to_input = lambda frames: np.repeat(np.concatenate([frames, frames]), 4, axis=0)[None]  # [1, 32, F]
    lengths = np.array([32], np.int32)
    hidden = np.asarray(tiny.forward(config)(variables, to_input(content), lengths)[0][0])
    np.testing.assert_allclose(hidden[:4], hidden[4:], atol=1e-5, rtol=0)
    order = [2, 0, 3, 1]
    permuted = np.asarray(tiny.forward(config)(variables, to_input(content[order]), lengths)[0][0])
    equivariant = np.allclose(permuted[:4], hidden[order], atol=1e-5)
    assert equivariant == (pos_encoding == "none")


def test_hidden_layer_selection():
    config = tiny.TINY
    variables = tiny.init(config)
    x, lengths = tiny.features([64, 37], padding_value=None)
    hidden, _, every = tiny.forward(config, "all")(variables, x, lengths)
    assert every.shape == (3, 2, 8, 32)
    np.testing.assert_array_equal(every[-1], hidden)
    assert _layer_indices((0, -1, 1, -3), num_layers=2) == (0, 2, 1, 0)
    assert _layer_indices("all", num_layers=2) == (0, 1, 2)
    with pytest.raises(ValueError, match="hidden layer index 3 out of range for 2 layers"):
        ConformerEncoder(config).apply(variables, x, lengths, hidden_layers=(3,))
    with pytest.raises(ValueError, match="hidden_layers must be a sequence of indices or 'all'"):
        ConformerEncoder(config).apply(variables, x, lengths, hidden_layers="last")


def test_dropout_only_in_train_mode():
    config = tiny.TINY.replace(num_layers=1, dropout_rate=0.3, ffn_dropout_rate=0.3, pos_dropout_rate=0.3)
    variables = tiny.init(config)
    x, lengths = tiny.features([40])
    model = ConformerEncoder(config)
    run = jax.jit(
        lambda key: model.apply(variables, x, lengths, train=True, rngs={"dropout": key}, mutable=["batch_stats"])[0][0]
    )
    a, b, again = run(jax.random.key(0)), run(jax.random.key(1)), run(jax.random.key(0))
    np.testing.assert_array_equal(a, again)
    assert float(jnp.abs(a - b).max()) > 1e-2


@pytest.mark.parity
def test_masked_batch_norm_matches_torch_on_valid_frames():
    torch = pytest.importorskip("torch")
    from jaxspeech.encoders.conformer import MaskedBatchNorm

    lengths = np.array([9, 4, 6])
    x = np.random.RandomState(5).randn(3, 9, 6).astype(np.float32)
    valid = np.arange(9)[None, :] < lengths[:, None]
    x[~valid] = 1e3  # must not move the statistics
    module = MaskedBatchNorm(momentum=0.1)
    variables = tiny.random_variables(module, x, valid)
    out, updates = jax.jit(lambda v: module.apply(v, x, valid, train=True, mutable=["batch_stats"]))(variables)

    reference = torch.nn.BatchNorm1d(6, momentum=0.1).train()
    with torch.no_grad():
        reference.weight.copy_(torch.tensor(variables["params"]["scale"]))
        reference.bias.copy_(torch.tensor(variables["params"]["bias"]))
        reference.running_mean.copy_(torch.tensor(variables["batch_stats"]["mean"]))
        reference.running_var.copy_(torch.tensor(variables["batch_stats"]["var"]))
        ref = reference(torch.tensor(x[valid])).numpy()  # [valid frames, C]: statistics over them only
    np.testing.assert_allclose(np.asarray(out)[valid], ref, atol=1e-5, rtol=0)
    np.testing.assert_allclose(updates["batch_stats"]["mean"], reference.running_mean.numpy(), atol=1e-6)
    np.testing.assert_allclose(updates["batch_stats"]["var"], reference.running_var.numpy(), atol=1e-6)


@pytest.mark.parametrize(
    "changes,message",
    [
        (dict(d_model=30, num_heads=4), "d_model \\(30\\) must be divisible by num_heads \\(4\\)"),
        (dict(pos_encoding="alibi"), "pos_encoding must be one of"),
        (dict(conv_norm="group_norm"), "conv_norm must be one of"),
        (dict(conv_kernel_size=8), "non-causal conv_kernel_size must be odd"),
        (dict(subsampling="conv1d"), "subsampling kind must be one of"),
        (dict(subsampling_factor=6), "power of two"),
        (dict(subsampling_padding="reflect"), "subsampling padding must be one of"),
        (dict(left_chunks=2), "left_chunks needs chunk_size"),
        (dict(remat_policy="some"), "remat_policy must be one of"),
        (dict(activation="tanh"), "unknown activation 'tanh'"),
        (dict(attn_impl="flash"), "attn_impl must be one of"),
    ],
)
def test_invalid_config_is_rejected(changes, message):
    with pytest.raises(ValueError, match=message):
        ConformerConfig(**changes)


def test_bad_input_shapes_are_named():
    model = ConformerEncoder(tiny.TINY)
    with pytest.raises(ValueError, match=r"features must be f32\[B, T, 16\].*got shape \(2, 40, 80\)"):
        model.init(jax.random.key(0), jnp.zeros((2, 40, 80)), jnp.array([40, 30]))
    with pytest.raises(ValueError, match=r"lengths must be i32\[2\], got shape \(3,\)"):
        model.init(jax.random.key(0), jnp.zeros((2, 40, 16)), jnp.array([40, 30, 20]))


def test_every_parameter_has_logical_axes():
    names = {value for key, value in vars(axes).items() if key.isupper() and isinstance(value, str)}
    x, lengths = tiny.features([32])
    for config in (tiny.TINY, tiny.TINY.replace(subsampling="conv2d", conv_norm="layer_norm", scan_layers=False)):
        boxed = jax.eval_shape(lambda: ConformerEncoder(config).init(jax.random.key(0), x, lengths))
        leaves = jax.tree.leaves(boxed, is_leaf=lambda leaf: isinstance(leaf, nn.Partitioned))
        for leaf in leaves:
            assert isinstance(leaf, nn.Partitioned), f"unannotated variable {leaf}"
            assert len(leaf.names) == leaf.value.ndim and set(leaf.names) <= names, leaf.names


def test_sharded_forward_matches_single_device():
    config = tiny.TINY
    variables = tiny.init(config)
    x, lengths = tiny.features([64, 37], padding_value=None)
    expected = tiny.forward(config, "all")(variables, x, lengths)[0]
    mesh = make_mesh({axes.FSDP: 2, axes.TENSOR: 4})  # batch over fsdp, heads / MLP / channels over tensor
    boxed = jax.eval_shape(lambda: ConformerEncoder(config).init(jax.random.key(0), x, lengths))
    sharded = jax.device_put(variables, param_shardings(boxed, mesh))
    with activation_rules(mesh):
        hidden, _ = jax.jit(ConformerEncoder(config).apply)(sharded, x, lengths)
    np.testing.assert_allclose(hidden, expected, atol=1e-5, rtol=0)


def test_bfloat16_compute_tracks_float32():
    config = tiny.TINY
    variables = tiny.init(config)
    x, lengths = tiny.features([64, 37], padding_value=None)
    reference = tiny.forward(config, "all")(variables, x, lengths)[0]
    hidden = tiny.forward(config.replace(dtype=jnp.bfloat16), "all")(variables, x, lengths)[0]
    assert hidden.dtype == jnp.bfloat16
    error = np.abs(np.asarray(hidden, np.float32) - np.asarray(reference))
    assert error.max() < 0.1 and error.mean() < 0.02, (error.max(), error.mean())
