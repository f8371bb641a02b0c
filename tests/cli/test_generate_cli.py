"""`jaxspeech generate` end to end on a random Qwen2 checkpoint with a ChatML tokenizer."""

import json

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from jaxspeech.cli import main  # noqa: E402
from jaxspeech.testing.tokenizer_dirs import write_chatml_dir  # noqa: E402

pytestmark = pytest.mark.parity


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory):
    directory = str(tmp_path_factory.mktemp("qwen2_chat"))
    write_chatml_dir(directory)
    tokenizer = transformers.AutoTokenizer.from_pretrained(directory)
    torch.manual_seed(0)
    config = transformers.Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=96,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        eos_token_id=tokenizer.convert_tokens_to_ids("<|im_end|>"),
    )
    transformers.Qwen2ForCausalLM(config).save_pretrained(directory, safe_serialization=True)
    return directory


def test_greedy_output_matches_transformers(hf_dir, capsys):
    assert main(["generate", "--hf-dir", hf_dir, "--prompt", "hello world", "--max-new-tokens", "10"]) == 0
    ours = capsys.readouterr().out.rstrip("\n")

    tokenizer = transformers.AutoTokenizer.from_pretrained(hf_dir)
    model = transformers.AutoModelForCausalLM.from_pretrained(hf_dir, dtype=torch.float32).eval()
    ids = tokenizer.apply_chat_template(
        [{"role": "user", "content": "hello world"}], add_generation_prompt=True, return_tensors="pt", return_dict=True
    )["input_ids"]
    eos = [tokenizer.convert_tokens_to_ids(t) for t in ("<|im_end|>", "<|endoftext|>")]
    with torch.no_grad():
        out = model.generate(ids, max_new_tokens=10, do_sample=False, eos_token_id=eos, pad_token_id=eos[1])
    theirs = tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True)
    assert ours == theirs


def test_beam_and_batched_prompts(hf_dir, capsys):
    args = [
        "generate",
        "--hf-dir",
        hf_dir,
        "--prompt",
        "hello",
        "--prompt",
        "the quick brown fox",
        "--raw",
        "--max-new-tokens",
        "6",
        "--beam",
        "3",
        "--jsonl",
    ]
    assert main(args) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.strip().split("\n")]
    assert [r["prompt"] for r in rows] == ["hello", "the quick brown fox"]
    assert all(1 <= len(r["tokens"]) <= 6 for r in rows)


def test_sample_and_beam_are_exclusive(hf_dir, capsys):
    assert main(["generate", "--hf-dir", hf_dir, "--prompt", "x", "--sample", "--beam", "2"]) == 2
    assert "exclusive" in capsys.readouterr().err


@pytest.fixture(scope="module")
def raw_dirs(tmp_path_factory) -> dict:
    """One random Llama model beside a Llama-3-, a Qwen2- and a SmolLM2-style tokenizer (same vocabulary)."""
    from jaxspeech.testing.tokenizer_dirs import write_text_rule_dir

    dirs = {
        style: write_text_rule_dir(str(tmp_path_factory.mktemp(style)), style)
        for style in ("llama3", "qwen2", "smollm2")
    }
    vocab = len(transformers.AutoTokenizer.from_pretrained(dirs["llama3"]))
    torch.manual_seed(1)
    config = transformers.LlamaConfig(
        vocab_size=vocab,
        hidden_size=64,
        intermediate_size=96,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
    )
    model = transformers.LlamaForCausalLM(config)
    for directory in dirs.values():
        model.save_pretrained(directory, safe_serialization=True)
    return dirs


@pytest.mark.parametrize("style", ["llama3", "qwen2", "smollm2"])
def test_raw_prompts_tokenize_and_continue_as_transformers(raw_dirs, capsys, style):
    directory, prompt = raw_dirs[style], "the quick brown fox"
    assert (
        main(["generate", "--hf-dir", directory, "--prompt", prompt, "--raw", "--max-new-tokens", "8", "--jsonl"]) == 0
    )
    ours = json.loads(capsys.readouterr().out)["tokens"]

    tokenizer = transformers.AutoTokenizer.from_pretrained(directory)
    model = transformers.AutoModelForCausalLM.from_pretrained(directory, dtype=torch.float32).eval()
    ids = tokenizer(prompt, return_tensors="pt").input_ids
    assert (ids[0, 0].item() == tokenizer.bos_token_id) == (style == "llama3")  # SmolLM2 has a BOS token, unused
    eos = tokenizer.eos_token_id
    with torch.no_grad():
        out = model.generate(ids, max_new_tokens=8, do_sample=False, eos_token_id=eos, pad_token_id=eos)
    theirs = out[0, ids.shape[1] :].tolist()
    theirs = theirs[: theirs.index(eos)] if eos in theirs else theirs
    assert ours == theirs and len(ours) >= 4
