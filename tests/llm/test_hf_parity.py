"""Logit parity with transformers' Llama / Qwen2 (random init), import and export."""

import json
import os

import jax
import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from jaxspeech.convert.hf_llm import export_hf_llm, load_hf_llm  # noqa: E402
from jaxspeech.convert.safetensors_io import CheckpointError  # noqa: E402
from jaxspeech.llm.decoder import DecoderLM  # noqa: E402
from jaxspeech.testing import hf_models  # noqa: E402

pytestmark = pytest.mark.parity
TOL = 1e-4


def _padded_batch():
    """Two rows: a full 9-token prompt and a 5-token prompt right-padded (mask 0) to 9."""
    rng = np.random.default_rng(0)
    tokens = rng.integers(3, 128, size=(2, 9)).astype(np.int32)
    mask = np.ones((2, 9), np.int32)
    mask[1, 5:] = 0
    tokens[1, 5:] = 0
    return tokens, mask


def _torch_logits(model, tokens, mask):
    with torch.no_grad():
        out = model(input_ids=torch.tensor(tokens, dtype=torch.long), attention_mask=torch.tensor(mask))
    return out.logits.numpy()


@pytest.fixture(params=list(hf_models.CONFIGS))
def hf_dir(request, tmp_path):
    model = hf_models.build(request.param)
    model.save_pretrained(tmp_path, safe_serialization=True)
    return model, str(tmp_path)


@pytest.mark.parametrize("scan_layers", [True, False])
def test_logits_match_transformers(hf_dir, scan_layers):
    model, path = hf_dir
    config, params = load_hf_llm(path, scan_layers=scan_layers)
    tokens, mask = _padded_batch()
    ours, _ = jax.jit(lambda p, t, m: DecoderLM(config).apply(p, t, segment_ids=m))(params, tokens, mask)
    theirs = _torch_logits(model, tokens, mask)
    valid = mask.astype(bool)
    diff = np.abs(np.asarray(ours)[valid] - theirs[valid]).max()
    assert diff <= TOL, f"max abs logit diff {diff:.2e} > {TOL}"


def test_export_loads_in_transformers_with_same_logits(hf_dir, tmp_path):
    model, path = hf_dir
    config, params = load_hf_llm(path)
    out = tmp_path / "exported"
    model_type = model.config.model_type
    export_hf_llm(config, params, str(out), model_type, max_shard_bytes=20_000)  # force several shards
    assert os.path.exists(out / "model.safetensors.index.json")
    reloaded = transformers.AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    tokens, mask = _padded_batch()
    valid = mask.astype(bool)
    diff = np.abs(_torch_logits(reloaded, tokens, mask)[valid] - _torch_logits(model, tokens, mask)[valid]).max()
    assert diff <= 1e-6
    _, params_again = load_hf_llm(str(out))
    for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(params_again)):
        np.testing.assert_array_equal(a, b)


def test_bad_checkpoints_name_the_problem(tmp_path):
    model = hf_models.build("qwen2_bias")
    model.save_pretrained(tmp_path, safe_serialization=True)
    config = json.loads((tmp_path / "config.json").read_text())

    (tmp_path / "config.json").write_text(json.dumps({**config, "model_type": "gpt2"}))
    with pytest.raises(CheckpointError, match="config.json: has model_type 'gpt2'"):
        load_hf_llm(str(tmp_path))

    (tmp_path / "config.json").write_text(json.dumps({**config, "intermediate_size": 100}))
    with pytest.raises(
        CheckpointError, match=r"model.layers.0.mlp.gate_proj.weight.*shape \(96, 64\), expected \(100, 64\)"
    ):
        load_hf_llm(str(tmp_path))

    (tmp_path / "config.json").write_text(json.dumps(config))
    state = {k: v for k, v in model.state_dict().items() if k != "model.layers.1.self_attn.k_proj.bias"}
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in state.items()}, tmp_path / "model.safetensors")
    with pytest.raises(CheckpointError, match="tensor 'model.layers.1.self_attn.k_proj.bias' is missing"):
        load_hf_llm(str(tmp_path))
