"""Whisper checkpoint conversion: OpenAI .pt == HF directory, export -> transformers, bad input."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import whisper
from flax import traverse_util
from transformers import WhisperForConditionalGeneration

from jaxspeech.convert.safetensors_io import CheckpointError, SafetensorsReader, write_safetensors
from jaxspeech.convert.hf_whisper import (
    export_hf_whisper,
    load_generation_config,
    load_hf_whisper,
    load_openai_whisper,
    openai_name_to_hf,
)
from jaxspeech.layers.embeddings import sinusoids
from jaxspeech.models.whisper_seq2seq import WhisperSeq2Seq
from jaxspeech.testing.whisper import micro_hf_config

# HF -> OpenAI names, written independently of the importer's table (which maps the other way).
_HF_TO_OPENAI = [
    ("model.", ""),
    (".layers.", ".blocks."),
    ("self_attn_layer_norm", "attn_ln"),
    ("encoder_attn_layer_norm", "cross_attn_ln"),
    ("final_layer_norm", "mlp_ln"),
    ("self_attn.", "attn."),
    ("encoder_attn.", "cross_attn."),
    ("q_proj", "query"),
    ("k_proj", "key"),
    ("v_proj", "value"),
    ("out_proj", "out"),
    ("fc1", "mlp.0"),
    ("fc2", "mlp.2"),
    ("encoder.layer_norm", "encoder.ln_post"),
    ("decoder.layer_norm", "decoder.ln"),
    ("encoder.embed_positions.weight", "encoder.positional_embedding"),
    ("decoder.embed_positions.weight", "decoder.positional_embedding"),
    ("embed_tokens", "token_embedding"),
]


def _to_openai_name(name: str) -> str:
    for old, new in _HF_TO_OPENAI:
        name = name.replace(old, new)
    return name


def _flat(params) -> dict:
    return traverse_util.flatten_dict(params["params"], sep="/")


def _copy_dir_with(source: str, target: str, edit) -> str:
    """Copies an HF directory, rewriting its tensors through ``edit(dict) -> dict``."""
    reader = SafetensorsReader(source)
    tensors = edit({name: np.array(reader.get(name)) for name in reader.keys()})
    write_safetensors(tensors, target)
    shutil.copy(os.path.join(source, "config.json"), target)
    return target


@pytest.mark.parity
def test_openai_checkpoint_and_hf_directory_give_identical_params(tmp_path):
    hf_config = micro_hf_config(init_std=0.02)
    hf_config.encoder_ffn_dim = hf_config.decoder_ffn_dim = 4 * hf_config.d_model  # OpenAI's MLP width
    torch.manual_seed(2)
    hf = WhisperForConditionalGeneration(hf_config).eval()
    hf.save_pretrained(str(tmp_path / "hf"))

    dims = whisper.model.ModelDimensions(
        n_mels=80,
        n_audio_ctx=50,
        n_audio_state=64,
        n_audio_head=4,
        n_audio_layer=2,
        n_vocab=100,
        n_text_ctx=40,
        n_text_state=64,
        n_text_head=4,
        n_text_layer=2,
    )
    openai_model = whisper.model.Whisper(dims).eval()
    state = {_to_openai_name(k): v for k, v in hf.state_dict().items() if k != "proj_out.weight"}
    openai_model.load_state_dict(state, strict=True)
    # The renaming is right: OpenAI's own forward reproduces HF's logits.
    mel, tokens = torch.randn(1, 80, 100), torch.randint(0, 92, (1, 5))
    with torch.no_grad():
        assert (openai_model(mel, tokens) - hf(input_features=mel, decoder_input_ids=tokens).logits).abs().max() < 1e-4
    checkpoint = tmp_path / "tiny.pt"
    torch.save({"dims": dataclasses.asdict(dims), "model_state_dict": openai_model.state_dict()}, checkpoint)

    hf_config_ours, hf_params = load_hf_whisper(str(tmp_path / "hf"))
    openai_config, openai_params = load_openai_whisper(str(checkpoint))
    assert openai_config == hf_config_ours
    hf_flat, openai_flat = _flat(hf_params), _flat(openai_params)
    assert hf_flat.keys() == openai_flat.keys()
    for path in hf_flat:
        np.testing.assert_array_equal(openai_flat[path], hf_flat[path], err_msg=path)


@pytest.mark.parity
def test_export_sharded_then_transformers_loads_same_logits(micro, tmp_path):
    torch.manual_seed(3)
    WhisperForConditionalGeneration(micro_hf_config(init_std=0.02)).save_pretrained(str(tmp_path / "source"))
    config, params = load_hf_whisper(str(tmp_path / "source"))
    out_dir = str(tmp_path / "exported")
    export_hf_whisper(
        config,
        params,
        out_dir,
        micro.generation,
        max_shard_bytes=200_000,
        extra_files={"tokenizer.json": os.path.join(micro.directory, "tokenizer.json")},
    )
    assert os.path.exists(os.path.join(out_dir, "model.safetensors.index.json"))
    assert os.path.exists(os.path.join(out_dir, "tokenizer.json"))
    reloaded, info = WhisperForConditionalGeneration.from_pretrained(out_dir, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    features = np.random.RandomState(5).randn(2, 100, 80).astype(np.float32)
    tokens = np.random.RandomState(5).randint(0, 92, (2, 6))
    ours = jax.jit(lambda p: WhisperSeq2Seq(config).apply(p, jnp.asarray(features), None, jnp.asarray(tokens)))(params)
    with torch.no_grad():
        theirs = reloaded.eval()(
            input_features=torch.tensor(features).transpose(1, 2), decoder_input_ids=torch.tensor(tokens)
        )
    diff = float(np.abs(np.asarray(ours) - theirs.logits.numpy()).max())
    assert diff <= 1e-4, diff
    # Our importer reads the export back bit for bit, generation settings included.
    reimported_config, reimported = load_hf_whisper(out_dir)
    assert reimported_config == config and load_generation_config(out_dir) == micro.generation
    for path, value in _flat(params).items():
        np.testing.assert_array_equal(_flat(reimported)[path], value, err_msg=path)


def test_hf_position_table_rounding_is_accepted_but_other_tables_are_not(micro, tmp_path):
    # torch's float32 table (what checkpoints store) differs from the exact sinusoids by ~1e-4 at 1500 positions.
    from transformers.models.whisper.modeling_whisper import sinusoids as torch_sinusoids

    assert 5e-5 < float(np.abs(torch_sinusoids(1500, 384).numpy() - sinusoids(1500, 384)).max()) < 1e-3
    learned = lambda t: {**t, "model.encoder.embed_positions.weight": t["model.encoder.embed_positions.weight"] + 0.01}
    bad = _copy_dir_with(micro.directory, str(tmp_path / "learned"), learned)
    with pytest.raises(
        CheckpointError,
        match=r"learned: tensor 'model.encoder.embed_positions.weight' \(the encoder position table\) differs",
    ):
        load_hf_whisper(bad)


def test_bad_checkpoints_raise_errors_naming_the_problem(micro, tmp_path):
    name = "model.decoder.layers.1.encoder_attn.k_proj.weight"
    missing = _copy_dir_with(
        micro.directory, str(tmp_path / "missing"), lambda t: {k: v for k, v in t.items() if k != name}
    )
    with pytest.raises(CheckpointError, match=f"tensor '{name}' is missing"):
        load_hf_whisper(missing)

    wrong = _copy_dir_with(micro.directory, str(tmp_path / "wrong"), lambda t: {**t, name: t[name][:, :32]})
    with pytest.raises(CheckpointError, match=rf"'{name}' has shape \(64, 32\), expected \(64, 64\)"):
        load_hf_whisper(wrong)

    extra = _copy_dir_with(micro.directory, str(tmp_path / "extra"), lambda t: {**t, "model.encoder.mystery": t[name]})
    with pytest.raises(CheckpointError, match="model.encoder.mystery"):
        load_hf_whisper(extra)

    llama = str(tmp_path / "llama")
    shutil.copytree(micro.directory, llama)
    with open(os.path.join(llama, "config.json")) as f:
        config = json.load(f)
    with open(os.path.join(llama, "config.json"), "w") as f:
        json.dump({**config, "model_type": "llama"}, f)
    with pytest.raises(CheckpointError, match="llama/config.json: has model_type 'llama'"):
        load_hf_whisper(llama)


class _Payload:
    """Unpickling this would create a file: proof that untrusted pickles are never executed."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_openai_loader_refuses_arbitrary_pickles_and_bad_shapes(tmp_path):
    marker = tmp_path / "executed"
    evil = tmp_path / "evil.pt"
    torch.save({"dims": {}, "model_state_dict": _Payload(str(marker))}, evil)
    with pytest.raises(CheckpointError, match="not a loadable OpenAI Whisper checkpoint"):
        load_openai_whisper(str(evil))
    assert not marker.exists()

    dims = dict(
        n_mels=80,
        n_audio_ctx=50,
        n_audio_state=64,
        n_audio_head=4,
        n_audio_layer=2,
        n_vocab=100,
        n_text_ctx=40,
        n_text_state=64,
        n_text_head=4,
        n_text_layer=2,
    )
    state = whisper.model.Whisper(whisper.model.ModelDimensions(**dims)).state_dict()
    state["decoder.token_embedding.weight"] = state["decoder.token_embedding.weight"][:90]
    torch.save({"dims": dims, "model_state_dict": state}, tmp_path / "short_vocab.pt")
    with pytest.raises(
        CheckpointError, match=r"'model.decoder.embed_tokens.weight' has shape \(90, 64\), expected \(100, 64\)"
    ):
        load_openai_whisper(str(tmp_path / "short_vocab.pt"))
    torch.save(
        {"dims": {k: v for k, v in dims.items() if k != "n_vocab"}, "model_state_dict": state}, tmp_path / "no_vocab.pt"
    )
    with pytest.raises(CheckpointError, match="lacks \\['n_vocab'\\]"):
        load_openai_whisper(str(tmp_path / "no_vocab.pt"))


def test_openai_loader_without_pytorch_says_what_to_install(tmp_path, monkeypatch):
    """PyTorch is not a dependency of jaxspeech: without it, a .pt file is one CheckpointError naming it."""
    path = tmp_path / "small.pt"
    torch.save({"dims": {}, "model_state_dict": {}}, path)
    monkeypatch.setitem(sys.modules, "torch", None)  # what `import torch` meets where PyTorch is not installed
    with pytest.raises(CheckpointError, match=r"small\.pt: is an OpenAI \.pt checkpoint, which needs PyTorch"):
        load_openai_whisper(str(path))


def test_openai_names_map_to_hf_names():
    assert (
        openai_name_to_hf("decoder.blocks.3.cross_attn.query.weight")
        == "model.decoder.layers.3.encoder_attn.q_proj.weight"
    )
    assert openai_name_to_hf("encoder.blocks.0.mlp.2.bias") == "model.encoder.layers.0.fc2.bias"
    assert openai_name_to_hf("encoder.ln_post.weight") == "model.encoder.layer_norm.weight"
    assert openai_name_to_hf("decoder.positional_embedding") == "model.decoder.embed_positions.weight"
