"""A Speech LLM started from Hugging Face checkpoints (``jaxspeech.tasks.speech_llm_init``).

Offline: a random-init ``transformers`` WhisperModel and Qwen2ForCausalLM (tiny shapes) are saved
as HF directories (safetensors), the LLM's with a byte-level BPE tokenizer built here with the
``tokenizers`` library (chat template, no audio placeholder, exactly as many tokens as embedding
rows, so adding the placeholder grows the embedding). The runs use the debug variants' corpus
(data/tiny_debug, built once when missing).
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import re

import jax
import numpy as np
import pytest
import torch
from flax import traverse_util
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import Qwen2Config, Qwen2ForCausalLM, WhisperConfig, WhisperModel

from jaxspeech.cli import main
from jaxspeech.config_dict import load_config_file, override
from jaxspeech.convert.hf_llm import load_hf_llm
from jaxspeech.convert.safetensors_io import CheckpointError, SafetensorsReader, write_safetensors
from jaxspeech.convert.hf_whisper import load_hf_whisper_encoder
from jaxspeech.data.special_tokens import AUDIO_PLACEHOLDER
from jaxspeech.llm.config import LLMConfig
from jaxspeech.recipes.build import build
from jaxspeech.recipes.run import write_pretrained
from jaxspeech.tasks import speech_llm_init
from jaxspeech.sharding.mesh import make_mesh
from jaxspeech.train.checkpoint import Checkpointer
from jaxspeech.train.loop import train
from jaxspeech.train.state import build_layout, init_state
from jaxspeech.train.warm_start import place_params
from jaxspeech.types import Batch

REPO = pathlib.Path(__file__).resolve().parents[2]
# These tests build or read data/tiny_debug in the checkout: under pytest -n they share one worker.
pytestmark = pytest.mark.xdist_group("repo_data")
SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
CHAT_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + "
    "'<|im_end|>\\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
TEXT = [
    "the quick brown fox jumps over the lazy dog",
    "she sells sea shells by the sea shore",
    "a journey of a thousand miles begins with a single step",
    "transcribe the audio",
]


def _write_tokenizer(directory: str) -> int:
    """A byte-level BPE tokenizer.json + tokenizer_config.json (chat template, eos <|im_end|>); returns its size."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300, special_tokens=SPECIAL, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tokenizer.train_from_iterator(TEXT * 20, trainer)
    tokenizer.save(os.path.join(directory, "tokenizer.json"))
    with open(os.path.join(directory, "tokenizer_config.json"), "w") as f:
        json.dump({"eos_token": "<|im_end|>", "pad_token": "<|endoftext|>", "chat_template": CHAT_TEMPLATE}, f)
    return tokenizer.get_vocab_size(with_added_tokens=True)


@pytest.fixture(scope="module")
def hf_dirs(tmp_path_factory) -> dict:
    """{"whisper_dir", "llm_dir", "vocab": the tokenizer's size = the LLM's embedding rows}."""
    whisper_dir, llm_dir = (str(tmp_path_factory.mktemp(name)) for name in ("hf_whisper", "hf_qwen2"))
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
            max_source_positions=300,
            max_target_positions=64,
            pad_token_id=0,
            bos_token_id=1,
            eos_token_id=2,
            decoder_start_token_id=1,
        )
    ).save_pretrained(whisper_dir)
    vocab = _write_tokenizer(llm_dir)
    Qwen2ForCausalLM(
        Qwen2Config(
            vocab_size=vocab,
            hidden_size=32,
            intermediate_size=48,
            num_hidden_layers=2,
            num_attention_heads=2,
            num_key_value_heads=1,
            tie_word_embeddings=False,
            max_position_embeddings=512,
        )
    ).save_pretrained(llm_dir)
    for directory in (whisper_dir, llm_dir):
        assert os.path.isfile(os.path.join(directory, "model.safetensors"))
    return {"whisper_dir": whisper_dir, "llm_dir": llm_dir, "vocab": vocab}


def _config(name: str, hf_dirs: dict, **overrides):
    """The debug variant of ``configs/<name>.py`` initialised from the HF directories."""
    config = load_config_file(str(REPO / "configs" / f"{name}.py") + ":debug")
    config.init = dict(whisper_dir=hf_dirs["whisper_dir"], llm_dir=hf_dirs["llm_dir"], random=None)
    for key, value in overrides.items():
        override(config, key, value)
    return config


@pytest.fixture(autouse=True)
def _in_repo(monkeypatch):
    monkeypatch.chdir(REPO)  # configs name data/tiny_debug relative to the checkout


def _flat(tree) -> dict:
    return traverse_util.flatten_dict(jax.device_get(tree), sep="/")


@pytest.fixture(scope="module")
def salmonn_step0(hf_dirs, tmp_path_factory) -> dict:
    """A salmonn_style:debug run from the HF directories with its step-0 checkpoint written:
    {"run", "mesh", "workdir", "layout", "batch", "step0": flat params restored from it}."""
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(REPO)
        run = build(_config("salmonn_style", hf_dirs), progress=False)
        mesh = make_mesh(run.train.mesh)
        workdir = str(tmp_path_factory.mktemp("salmonn_run"))
        assert write_pretrained(run, workdir, mesh) is not None
        batch = Batch.padding(run.train_pipeline().batch_shapes()[0])
    layout = build_layout(run.task, batch, run.train.optimizer, mesh, run.train.sharding_rules)
    checkpointer = Checkpointer(os.path.join(workdir, run.train.checkpoint.subdir), run.train.checkpoint)
    step0 = _flat(checkpointer.restore(0, layout.abstract, with_data=False).state["params"])
    checkpointer.close()
    return {"run": run, "mesh": mesh, "workdir": workdir, "layout": layout, "batch": batch, "step0": step0}


def _random_init(names) -> list[str]:
    """The parameters no checkpoint holds: the Q-Former and the LoRA adapters."""
    return [name for name in names if name.startswith("connector/") or "/lora_" in name]


def test_step0_holds_the_checkpoints_and_random_init_elsewhere(salmonn_step0, hf_dirs):
    run, step0, vocab = salmonn_step0["run"], salmonn_step0["step0"], hf_dirs["vocab"]
    # The placeholder is appended to the LLM's tokenizer; the chat template frames the prompt.
    model = run.kind.model
    assert model.placeholder_id == run.tokenizer.token_to_id(AUDIO_PLACEHOLDER) == vocab
    assert run.tokenizer.vocab_size == model.llm.vocab_size == vocab + 1
    assert run.kind.prompt.chat is True
    assert model.encoder.whisper.num_layers == 2 and model.llm.num_layers == 2  # from config.json

    # encoder/ and llm/ are the converted checkpoints, bitwise (the LLM's vocabulary grown by one row).
    options = {"scan_layers": True}
    encoder = _flat({"encoder": {"whisper": load_hf_whisper_encoder(hf_dirs["whisper_dir"], **options)[1]}})
    llm = _flat({"llm": load_hf_llm(hf_dirs["llm_dir"], **options)[1]["params"]})
    grown = {"llm/embed_tokens/embedding", "llm/lm_head/kernel"}
    for name, value in {**encoder, **llm}.items():
        if name not in grown:
            np.testing.assert_array_equal(step0[name], value, err_msg=name, strict=True)
    embedding, head = step0["llm/embed_tokens/embedding"], step0["llm/lm_head/kernel"]
    assert embedding.shape == (vocab + 1, 32) and head.shape == (32, vocab + 1)
    np.testing.assert_array_equal(embedding[:vocab], llm["llm/embed_tokens/embedding"])
    np.testing.assert_array_equal(head[:, :vocab], llm["llm/lm_head/kernel"])
    np.testing.assert_allclose(embedding[vocab], embedding[:vocab].mean(axis=0, dtype=np.float64), rtol=1e-6)
    np.testing.assert_allclose(head[:, vocab], head[:, :vocab].mean(axis=1, dtype=np.float64), rtol=1e-6)
    # ... and the converter's output is the torch weights (spot checks independent of it).
    torch_llm = Qwen2ForCausalLM.from_pretrained(hf_dirs["llm_dir"]).state_dict()
    np.testing.assert_array_equal(embedding[:vocab], torch_llm["model.embed_tokens.weight"].numpy())
    np.testing.assert_array_equal(
        step0["llm/layers/self_attn/q_proj/kernel"][1], torch_llm["model.layers.1.self_attn.q_proj.weight"].numpy().T
    )

    # Everything else (Q-Former, LoRA adapters) is the task's own random init for the run's seed.
    fresh = _flat(init_state(run.task, salmonn_step0["batch"], salmonn_step0["layout"], run.train.seed)["params"])
    kept = _random_init(fresh)
    assert kept and set(step0) == set(fresh) == set(encoder) | set(llm) | set(kept)
    for name in kept:
        np.testing.assert_array_equal(step0[name], fresh[name], err_msg=name, strict=True)
    assert np.any(step0["connector/queries"] != 0)


def test_one_step_moves_only_the_trained_parts_and_a_rerun_resumes(salmonn_step0, monkeypatch):
    run, mesh, workdir, step0 = (salmonn_step0[k] for k in ("run", "mesh", "workdir", "step0"))
    iterator = run.train_pipeline().iterator()
    result = train(run.task, dataclasses.replace(run.train, total_steps=1), iterator, workdir, mesh=mesh)
    iterator.close()
    assert result.step == 1
    trained = _flat(result.state["params"])
    kept = _random_init(step0)
    for name in set(step0) - set(kept):  # the encoder and the LLM are frozen: bitwise
        np.testing.assert_array_equal(trained[name], step0[name], err_msg=name, strict=True)
    # The Q-Former and LoRA B move (A's first gradient is 0: B starts at 0); a single query attends
    # only to itself, so the Q-Former's self-attention q/k get no gradient either.
    no_gradient = re.compile(r"connector/blocks_\d+/self_attn/[qk]_proj/.*")
    moved = [
        name
        for name in kept
        if (name.startswith("connector/") and not no_gradient.fullmatch(name)) or name.endswith("lora_b")
    ]
    assert moved and all(not np.array_equal(trained[name], step0[name]) for name in moved)

    # A workdir with a checkpoint resumes: the checkpoints are not even read again.
    monkeypatch.setattr(
        speech_llm_init.PretrainedSpeechLLM, "load", lambda *args: pytest.fail("re-initialised a resumable run")
    )
    assert write_pretrained(run, workdir, mesh) is None


@pytest.mark.parametrize("tied", [True, False])
def test_extend_vocab_adds_mean_rows_then_zero_padding_to_the_embedding_and_an_untied_head(tied):
    rng = np.random.default_rng(0)
    llm = {"embed_tokens": {"embedding": rng.normal(size=(5, 3)).astype(np.float32)}, "norm": {"scale": np.ones(3)}}
    if not tied:
        llm["lm_head"] = {"kernel": rng.normal(size=(3, 5)).astype(np.float32)}
    grown = speech_llm_init.extend_vocab(llm, LLMConfig(vocab_size=7, vocab_multiple=4))  # 7 tokens in 8 rows
    embedding = grown["embed_tokens"]["embedding"]
    assert embedding.shape == (8, 3) and grown["norm"] is llm["norm"]
    np.testing.assert_array_equal(embedding[:5], llm["embed_tokens"]["embedding"])
    np.testing.assert_allclose(
        embedding[5:7], np.tile(llm["embed_tokens"]["embedding"].mean(axis=0), (2, 1)), rtol=1e-6
    )
    np.testing.assert_array_equal(embedding[7:], 0.0)
    if tied:
        assert "lm_head" not in grown
    else:
        head = grown["lm_head"]["kernel"]
        assert head.shape == (3, 8)
        np.testing.assert_array_equal(head[:, :5], llm["lm_head"]["kernel"])
        np.testing.assert_allclose(
            head[:, 5:7], np.tile(llm["lm_head"]["kernel"].mean(axis=1)[:, None], (1, 2)), rtol=1e-6
        )
        np.testing.assert_array_equal(head[:, 7:], 0.0)
    same = speech_llm_init.extend_vocab(llm, LLMConfig(vocab_size=5))
    assert same["embed_tokens"]["embedding"] is llm["embed_tokens"]["embedding"]
    with pytest.raises(ValueError, match="4 token rows, fewer than the checkpoint's 5"):
        speech_llm_init.extend_vocab(llm, LLMConfig(vocab_size=4))


def test_misshapen_checkpoints_and_trees_are_named_with_the_expected_shape(tmp_path, hf_dirs):
    # A checkpoint whose tensor disagrees with its config.json.
    bad_llm = tmp_path / "bad_llm"
    bad_llm.mkdir()
    reader = SafetensorsReader(hf_dirs["llm_dir"])
    tensors = {name: np.array(reader.get(name)) for name in reader.keys()}
    tensors["model.layers.1.mlp.up_proj.weight"] = np.zeros((47, 32), np.float32)
    write_safetensors(tensors, str(bad_llm))
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json"):
        (bad_llm / name).write_bytes((pathlib.Path(hf_dirs["llm_dir"]) / name).read_bytes())
    run = build(_config("slam_asr", {**hf_dirs, "llm_dir": str(bad_llm)}), progress=False)
    with pytest.raises(
        CheckpointError,
        match=r"'model\.layers\.1\.mlp\.up_proj\.weight' has shape \(47, 32\), "
        r"expected \(48, 32\)",
    ):
        run.kind.pretrained().load()

    # A converted tree that does not fit the model: named, with the shape the model expects.
    mesh = make_mesh(run.train.mesh)
    batch = Batch.padding(run.train_pipeline().batch_shapes()[0])
    layout = build_layout(run.task, batch, run.train.optimizer, mesh, run.train.sharding_rules)
    good = dataclasses.replace(run.kind.init, llm_dir=hf_dirs["llm_dir"])
    params = speech_llm_init.PretrainedSpeechLLM(good, run.kind.model).load()
    wrong = {**params, "llm": {**params["llm"], "norm": {"scale": np.ones(31, np.float32)}}}
    with pytest.raises(
        ValueError,
        match=r"pretrained params: parameter llm/norm/scale has shape \(31,\), the model "
        r"expects \(32,\)",
    ):
        place_params(wrong, layout)
    missing = {**params, "llm": {k: v for k, v in params["llm"].items() if k != "norm"}}
    with pytest.raises(ValueError, match=r"missing \['llm/norm/scale'\], unexpected \[\]"):
        place_params(missing, layout)
    extra = {**params, "llm": {**params["llm"], "extra": {"kernel": np.ones(2)}}}
    with pytest.raises(ValueError, match=r"missing \[\], unexpected \['llm/extra/kernel'\]"):
        place_params(extra, layout)
    with pytest.raises(ValueError, match=r"leave \['connector/mlp/fc1/bias'.*no initialised params"):
        place_params(params, layout)


def test_init_errors_say_what_to_set(hf_dirs, tmp_path):
    debug = str(REPO / "configs" / "slam_asr.py")
    with pytest.raises(
        ValueError,
        match=r"pass the checkpoints with --set init\.whisper_dir=<HF Whisper directory> "
        r"--set init\.llm_dir=<HF Llama/Qwen2 directory>",
    ):
        build(load_config_file(debug), progress=False)
    with pytest.raises(ValueError, match="starts from both checkpoints"):
        build(_config("slam_asr", hf_dirs, **{"init.llm_dir": None}), progress=False)
    with pytest.raises(ValueError, match="not both"):
        build(_config("slam_asr", hf_dirs, **{"init.random": {"llm": {"num_layers": 1}}}), progress=False)
    with pytest.raises(ValueError, match=r"model\.llm: sets \['hidden_size'\], which config\.init decides"):
        build(_config("slam_asr", hf_dirs, **{"model.llm.hidden_size": 64}), progress=False)
    with pytest.raises(ValueError, match=r"init\.random\.llm: holds shapes only: set \['scan_layers'\] in model\.llm"):
        config = load_config_file(debug + ":debug")
        config.init.random.llm.scan_layers = False
        build(config, progress=False)
    # A tokenizer more than the placeholder larger than the embedding is not the checkpoint's.
    small = tmp_path / "small_llm"
    small.mkdir()
    hf = json.loads((pathlib.Path(hf_dirs["llm_dir"]) / "config.json").read_text())
    (small / "config.json").write_text(json.dumps({**hf, "vocab_size": hf_dirs["vocab"] - 1}))
    with pytest.raises(
        ValueError, match=rf"has {hf_dirs['vocab'] + 1} tokens, .* {hf_dirs['vocab'] - 1} embedding rows"
    ):
        build(
            _config("slam_asr", {**hf_dirs, "llm_dir": str(small)}, **{"data.tokenizer": hf_dirs["llm_dir"]}),
            progress=False,
        )


@pytest.mark.slow
def test_the_main_job_starts_from_the_checkpoints(tmp_path, hf_dirs):
    workdir = tmp_path / "run"
    args = [
        "train",
        "--config",
        "configs/slam_asr.py:debug",
        "--workdir",
        str(workdir),
        "--no-progress",
        "--set",
        "init.random=None",
        "--set",
        f"init.whisper_dir={hf_dirs['whisper_dir']}",
        "--set",
        f"init.llm_dir={hf_dirs['llm_dir']}",
        "--set",
        "train.total_steps=1",
    ]
    assert main(args) == 0
    assert sorted(os.listdir(workdir / "checkpoints")) == ["0", "1"]
    assert sorted(os.listdir(workdir / "tokenizer")) == [
        "generation_config.json",
        "tokenizer.json",
        "tokenizer_config.json",
    ]
    report = (workdir / "report.md").read_text()
    assert f"Initialised from HF checkpoints {hf_dirs['whisper_dir']} (encoder)" in report and "| test | 4 |" in report
