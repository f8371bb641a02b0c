"""LoRA through the interceptor: zero-init identity, merged == unmerged, dropout; frozen groups."""

import jax
import numpy as np
import optax
import pytest
from flax import linen as nn
from flax import traverse_util

from jaxspeech.layers.lora import LoraConfig, add_adapters, lora, lora_only, merge_lora
from jaxspeech.losses import next_token_loss
from jaxspeech.models.speech_llm import SpeechLLM
from jaxspeech.train.optim import OptimizerConfig, build_optimizer, split_trainable, trainable_mask
from jaxspeech.testing.speech_llm import make_batch, tiny_config

ROWS = [([40], [1, 5, 6], [7, 8, 9, 10]), ([23], [1, 5], [11, 12])]
LORA = LoraConfig(rank=4, alpha=8.0, targets=r"llm/.*(q_proj|v_proj|down_proj)")


def _setup(scan_layers=True):
    config = tiny_config("decoder_only")
    config = config.replace(llm=config.llm.replace(scan_layers=scan_layers))
    model = SpeechLLM(config)
    batch = make_batch(config, ROWS, frames=48)
    args = (batch["tokens"], batch["features"], batch["feature_lengths"])
    kwargs = dict(segment_ids=batch["segment_ids"])
    with lora(LORA):
        params = nn.unbox(model.init(jax.random.key(0), *args, **kwargs))
    return model, args, kwargs, params


def _randomize_b(params):
    return jax.tree_util.tree_map_with_path(
        lambda p, x: (
            jax.random.normal(jax.random.key(len(jax.tree_util.keystr(p))), x.shape) * 0.1
            if jax.tree_util.keystr(p).endswith("'lora_b']")
            else x
        ),
        params,
    )


def test_adapters_are_created_only_on_targets():
    _, _, _, params = _setup()
    paths = ["/".join(k) for k in traverse_util.flatten_dict(lora_only(params["params"]))]
    assert paths and all(("q_proj" in p or "v_proj" in p or "down_proj" in p) and p.startswith("llm/") for p in paths)
    assert len(paths) == 6  # (q, v, down) x (a, b), stacked over the scanned layers
    stacked = params["params"]["llm"]["layers"]["self_attn"]["q_proj"]
    assert stacked["lora_a"].shape == (4, 32, 4) and stacked["lora_b"].shape == (4, 4, 32)


@pytest.mark.parametrize("scan_layers", [True, False])
def test_zero_b_is_identity_and_merged_equals_unmerged(scan_layers):
    model, args, kwargs, params = _setup(scan_layers)
    base = {"params": {k: v for k, v in params["params"].items()}}
    base_only = merge_lora(base, LORA)  # B = 0: merging changes nothing
    plain = model.apply(base_only, *args, **kwargs)
    with lora(LORA):
        adapted = model.apply(params, *args, **kwargs)
    np.testing.assert_array_equal(np.asarray(adapted), np.asarray(plain))

    trained = _randomize_b(params)
    with lora(LORA):
        unmerged = model.apply(trained, *args, **kwargs)
    merged = model.apply(merge_lora(trained, LORA), *args, **kwargs)
    assert np.abs(np.asarray(unmerged) - np.asarray(plain)).max() > 1e-2  # the adapters do something
    np.testing.assert_allclose(np.asarray(unmerged), np.asarray(merged), atol=2e-5)


def test_adapters_attach_to_imported_base_params():
    model, args, kwargs, params = _setup()
    adapters = lora_only(_randomize_b(params)["params"])
    base = merge_lora(params, LORA)["params"]  # stands for params loaded from a checkpoint
    rebuilt = {"params": add_adapters(base, adapters)}
    with lora(LORA):
        np.testing.assert_array_equal(
            np.asarray(model.apply(rebuilt, *args, **kwargs)),
            np.asarray(model.apply(_randomize_b(params), *args, **kwargs)),
        )
    with pytest.raises(KeyError, match="no counterpart"):
        add_adapters(base, {"nonexistent": {}})


def test_lora_dropout_only_in_training():
    model, args, kwargs, params = _setup()
    params = _randomize_b(params)
    config = LoraConfig(rank=4, alpha=8.0, dropout=0.5, targets=LORA.targets)
    with lora(config, deterministic=False):
        a = model.apply(params, *args, **kwargs, rngs={"dropout": jax.random.key(1)})
        b = model.apply(params, *args, **kwargs, rngs={"dropout": jax.random.key(2)})
    with lora(config):
        c = model.apply(params, *args, **kwargs)
    with lora(LORA):
        d = model.apply(params, *args, **kwargs)
    assert not np.allclose(np.asarray(a), np.asarray(b))
    np.testing.assert_array_equal(np.asarray(c), np.asarray(d))


def test_frozen_groups_are_bitwise_unchanged_after_a_step():
    model, args, kwargs, params = _setup()
    params = _randomize_b(params)["params"]  # with B = 0, A's first gradient is exactly 0
    rules = ((r".*/lora_[ab]", 1e-2), (r"encoder/.*", None), (r"llm/.*", None), (r"connector/.*", 1e-2))
    config = OptimizerConfig(learning_rate=1e-2, lr_rules=rules)
    mask = trainable_mask(params, config)
    trainable, frozen = split_trainable(params, mask)
    optimizer = build_optimizer(params, config)
    state = optimizer.init(trainable)

    def loss(t):
        full = traverse_util.unflatten_dict({**traverse_util.flatten_dict(frozen), **traverse_util.flatten_dict(t)})
        with lora(LORA):
            logits = model.apply({"params": full}, *args, **kwargs)
        return next_token_loss(logits, args[0], kwargs["segment_ids"]).loss

    grads = jax.jit(jax.grad(loss))(trainable)
    updates, _ = optimizer.update(grads, state, trainable)
    new = optax.apply_updates(trainable, updates)
    flat_frozen = traverse_util.flatten_dict(frozen)
    assert any(k[0] == "encoder" for k in flat_frozen) and any(k[0] == "llm" and k[-1] == "kernel" for k in flat_frozen)
    changed = [not np.array_equal(a, b) for a, b in zip(jax.tree.leaves(new), jax.tree.leaves(trainable))]
    assert all(changed), "every trainable leaf (connector, adapters) moves"
    assert set(k[0] for k in traverse_util.flatten_dict(trainable)) == {"connector", "llm"}
    assert all(k[-1] in ("lora_a", "lora_b") for k in traverse_util.flatten_dict(trainable) if k[0] == "llm")
