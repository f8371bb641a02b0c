"""jaxspeech's modules used from another project: the README's example runs as written (on random-init
checkpoints saved here), and Flax NNX wraps an encoder, a connector and the LLM through
``flax.nnx.bridge`` with the linen outputs."""

import os
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import linen as nn
from flax import nnx
from transformers import Qwen2Config, Qwen2ForCausalLM, WhisperConfig, WhisperModel

from jaxspeech.connectors import FrameStackConnectorConfig, Projector
from jaxspeech.encoders import WhisperEncoder, WhisperEncoderConfig
from jaxspeech.llm import DecoderLM, LLMConfig

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
pytestmark = pytest.mark.parity  # saves transformers checkpoints


def _readme_example() -> str:
    readme = open(os.path.join(ROOT, "README.md"), encoding="utf-8").read()
    section = readme.split("## Use the modules in your project", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_the_readme_example_runs_on_hf_checkpoints(tmp_path, monkeypatch, capsys):
    torch.manual_seed(0)
    WhisperModel(
        WhisperConfig(
            vocab_size=64,
            num_mel_bins=80,
            d_model=64,
            encoder_layers=2,
            encoder_attention_heads=4,
            encoder_ffn_dim=128,
            decoder_layers=1,
            decoder_attention_heads=4,
            decoder_ffn_dim=128,
            max_source_positions=1500,
            pad_token_id=0,
            bos_token_id=1,
            eos_token_id=2,
            decoder_start_token_id=1,
        )
    ).save_pretrained(tmp_path / "whisper-base")
    Qwen2ForCausalLM(
        Qwen2Config(
            vocab_size=96,
            hidden_size=32,
            intermediate_size=48,
            num_hidden_layers=2,
            num_attention_heads=2,
            num_key_value_heads=1,
        )
    ).save_pretrained(tmp_path / "Qwen2-0.5B")
    monkeypatch.chdir(tmp_path)
    exec(compile(_readme_example(), "README.md", "exec"), {})
    assert capsys.readouterr().out.split("\n")[:2] == ["(1, 150, 64)", "(1, 3, 96)"]


def _nnx_matches_linen(module, *args):
    """Wraps the linen ``module`` with ToNNX, and checks its outputs equal the linen module's with the
    wrapped module's parameters, before and after loading parameters initialised by linen."""
    with nnx.use_eager_sharding(False):  # logical axis names without a mesh
        wrapped = nnx.bridge.ToNNX(module, rngs=nnx.Rngs(0))
        nnx.bridge.lazy_init(wrapped, *args)
        ours = wrapped(*args)
        params = nnx.to_pure_dict(nnx.state(wrapped, nnx.Param))
        _assert_equal(ours, module.apply({"params": params}, *args))
        linen_params = jax.tree.map(np.asarray, nn.unbox(module.init(jax.random.key(1), *args)))
        nnx.update(wrapped, nnx.State(linen_params["params"]))
        _assert_equal(wrapped(*args), module.apply(linen_params, *args))


def _assert_equal(a, b):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_nnx_bridge_wraps_an_encoder_a_connector_and_the_llm():
    features = jax.random.normal(jax.random.key(2), (2, 40, 16))
    lengths = jnp.array([40, 23])
    encoder = WhisperEncoder(
        WhisperEncoderConfig(n_mels=16, d_model=24, num_layers=2, num_heads=4, ffn_dim=48, max_source_positions=20)
    )
    _nnx_matches_linen(encoder, features, lengths)
    states = jax.random.normal(jax.random.key(3), (2, 20, 24))
    connector = Projector(FrameStackConnectorConfig(stack=2, hidden_size=40, output_size=32))
    _nnx_matches_linen(connector, states, jnp.array([20, 12]))
    llm = DecoderLM(
        LLMConfig(vocab_size=64, hidden_size=32, intermediate_size=48, num_layers=2, num_heads=4, num_kv_heads=2)
    )
    _nnx_matches_linen(llm, jnp.arange(12, dtype=jnp.int32).reshape(2, 6))
