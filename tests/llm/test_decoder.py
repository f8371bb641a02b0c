"""Decoder invariants: scan == loop, remat == none, causality, cache == full forward, sharding."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn
from jax.sharding import PartitionSpec as P

from jaxspeech.llm.config import LLMConfig
from jaxspeech.llm.decoder import DecoderLM
from jaxspeech.llm.kv_cache import init_cache
from jaxspeech.llm.layout import stack_layers, unstack_layers
from jaxspeech.sharding.mesh import activation_rules, make_mesh, param_shardings

CONFIG = LLMConfig(vocab_size=97, hidden_size=32, intermediate_size=48, num_layers=3, num_heads=4, num_kv_heads=2)


def _init(config, batch=2, length=7, seed=0):
    tokens = jax.random.randint(jax.random.key(seed + 1), (batch, length), 0, config.vocab_size)
    return tokens, nn.unbox(DecoderLM(config).init(jax.random.key(seed), tokens))


def test_scan_equals_loop_values_and_gradients():
    tokens, params = _init(CONFIG)
    loop_config = CONFIG.replace(scan_layers=False)
    loop_params = unstack_layers(params, CONFIG.num_layers)

    def loss(p, config):
        logits, _ = DecoderLM(config).apply(p, tokens)
        return jnp.mean(jax.nn.log_softmax(logits)[..., 3]), logits

    (l_scan, logits_scan), g_scan = jax.value_and_grad(loss, has_aux=True)(params, CONFIG)
    (l_loop, logits_loop), g_loop = jax.value_and_grad(loss, has_aux=True)(loop_params, loop_config)
    np.testing.assert_allclose(logits_scan, logits_loop, atol=1e-5)
    g_scan = unstack_layers(g_scan, CONFIG.num_layers)
    assert jax.tree.structure(g_scan) == jax.tree.structure(g_loop)
    restacked = stack_layers(loop_params, CONFIG.num_layers)
    for a, b in zip(jax.tree.leaves(restacked), jax.tree.leaves(params)):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(jax.tree.leaves(g_scan), jax.tree.leaves(g_loop)):
        # float32 sums in a different order (scan vs loop): a few ulps on gradients of order 1
        np.testing.assert_allclose(a, b, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("policy", ["full", "dots", pytest.param("dots_no_batch", marks=pytest.mark.slow)])
def test_remat_equals_no_remat(policy):
    tokens, params = _init(CONFIG)

    def loss(p, config):
        logits, _ = DecoderLM(config).apply(p, tokens)
        return jnp.sum(jnp.tanh(logits))

    base = jax.jit(jax.value_and_grad(lambda p: loss(p, CONFIG)))(params)
    rematted = jax.jit(jax.value_and_grad(lambda p: loss(p, CONFIG.replace(remat_policy=policy))))(params)
    np.testing.assert_allclose(base[0], rematted[0], rtol=1e-6)
    for a, b in zip(jax.tree.leaves(base[1]), jax.tree.leaves(rematted[1])):
        np.testing.assert_allclose(a, b, atol=1e-6)


def test_causality_through_gradients():
    tokens, params = _init(CONFIG, batch=1, length=8)
    model = DecoderLM(CONFIG)
    embeds = model.apply(params, tokens, method=DecoderLM.embed)
    t = 4
    grad = jax.grad(lambda e: model.apply(params, inputs_embeds=e)[0][0, t].sum())(embeds)
    per_position = np.abs(np.asarray(grad[0])).sum(-1)
    assert (per_position[t + 1 :] == 0).all()
    assert (per_position[: t + 1] > 0).all()


def test_bidirectional_span_sees_its_future_only_inside_the_span():
    tokens, params = _init(CONFIG, batch=1, length=8)
    model = DecoderLM(CONFIG)
    embeds = model.apply(params, tokens, method=DecoderLM.embed)
    bidir = jnp.array([[0, 1, 1, 1, 0, 0, 0, 0]])  # an "audio" span at positions 1..3
    grad = jax.grad(lambda e: model.apply(params, inputs_embeds=e, bidir_ids=bidir)[0][0, 1].sum())(embeds)
    per_position = np.abs(np.asarray(grad[0])).sum(-1)
    assert (per_position[:4] > 0).all() and (per_position[4:] == 0).all()


@pytest.mark.parametrize(
    "scan_layers", [pytest.param(True, marks=pytest.mark.slow), False]
)  # False: the layout decoding uses on CPU
def test_cached_prefill_and_extend_equal_full_forward(scan_layers):
    config = CONFIG.replace(scan_layers=scan_layers)
    tokens, params = _init(config, batch=2, length=9)
    segments = jnp.array([[1] * 9, [0, 0, 1, 1, 1, 1, 1, 1, 1]])  # row 1 left-padded
    model = DecoderLM(config)
    full, _ = model.apply(params, tokens, segment_ids=segments)
    cache = init_cache(config, 2, 12)
    pieces = []
    for start, stop in [(0, 4), (4, 5), (5, 6), (6, 9)]:
        logits, cache = model.apply(params, tokens[:, start:stop], segment_ids=segments[:, start:stop], cache=cache)
        pieces.append(logits)
    incremental = jnp.concatenate(pieces, axis=1)
    valid = np.asarray(segments).astype(bool)
    np.testing.assert_allclose(np.asarray(incremental)[valid], np.asarray(full)[valid], atol=1e-5)
    assert int(cache.index) == 9 and list(np.asarray(cache.next_positions)) == [9, 7]


def test_left_padding_does_not_change_real_tokens():
    tokens, params = _init(CONFIG, batch=1, length=6)
    model = DecoderLM(CONFIG)
    alone, _ = model.apply(params, tokens)
    padded = jnp.concatenate([jnp.zeros((1, 3), tokens.dtype), tokens], axis=1)
    segments = jnp.array([[0, 0, 0, 1, 1, 1, 1, 1, 1]])
    with_pad, _ = model.apply(params, padded, segment_ids=segments)
    np.testing.assert_allclose(with_pad[:, 3:], alone, atol=1e-5)


def test_bf16_compute_with_fp32_params_is_close():
    tokens, params = _init(CONFIG)
    ref, _ = DecoderLM(CONFIG).apply(params, tokens)
    low, _ = DecoderLM(CONFIG.replace(dtype=jnp.bfloat16)).apply(params, tokens)
    assert low.dtype == jnp.float32
    assert np.abs(np.asarray(low) - np.asarray(ref)).max() < 0.05 * np.abs(np.asarray(ref)).max() + 0.05


def test_sharded_forward_on_eight_devices_equals_single_device():
    assert len(jax.devices()) == 8, "conftest must provide 8 CPU devices"
    config = CONFIG.replace(vocab_size=96)
    tokens = jax.random.randint(jax.random.key(1), (4, 8), 0, config.vocab_size)
    model = DecoderLM(config)
    init = lambda: model.init(jax.random.key(0), tokens)
    reference = model.apply(nn.unbox(init()), tokens)[0]
    mesh = make_mesh({"data": 2, "fsdp": 2, "tensor": 2})
    shardings = param_shardings(jax.eval_shape(init), mesh)
    with activation_rules(mesh):
        params = jax.jit(init, out_shardings=shardings)()
        sharded = jax.jit(lambda p, t: model.apply(p, t)[0])(params, tokens)
    specs = nn.get_partition_spec(params)["params"]
    assert specs["layers"]["self_attn"]["q_proj"]["kernel"] == P("layers", "embed", "heads")
    real = nn.unbox(params)["params"]
    assert real["layers"]["self_attn"]["q_proj"]["kernel"].sharding.spec == P(None, "fsdp", "tensor")
    assert real["embed_tokens"]["embedding"].sharding.spec == P("tensor", "fsdp")
    np.testing.assert_allclose(np.asarray(sharded), np.asarray(reference), atol=1e-5)
