"""Builds small Hugging Face tokenizer directories (byte-level BPE trained on a few sentences) with
Qwen2-style ChatML and Llama-3-style chat templates, for tests."""

from __future__ import annotations

import json
import os

from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

# The GPT-4/Qwen2 pre-tokenization split (contractions, letters, single digits, punctuation, newlines).
SPLIT_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)

CORPUS = [
    "Transcribe the audio. Translate the audio into German.",
    "The quick brown fox jumps over the lazy dog; 12 cats and 345 dogs!",
    "You are a helpful assistant. What is said in the recording?",
    "hello world, hello there, she said: 'it's fine'.\n\nNew lines\tand tabs.",
]

CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n' }}"
    "{% endif %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

LLAMA3_TEMPLATE = (
    "{% set loop_messages = messages %}"
    "{% for message in loop_messages %}"
    "{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n' + message['content'] | trim"
    " + '<|eot_id|>' %}"
    "{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}"
    "{{ content }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
)

AUDIO_TOKENS = ["<|audio|>", "<chunk_1>", "<chunk_2>", "<chunk_3>"]


def _bpe(special: list[str], non_special: list[str]) -> Tokenizer:
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(SPLIT_PATTERN), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=420, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False
    )
    tokenizer.train_from_iterator(CORPUS * 4, trainer)
    tokenizer.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in special])
    tokenizer.add_tokens([AddedToken(t, special=False, normalized=False) for t in non_special])
    return tokenizer


def _write(directory: str, tokenizer: Tokenizer, config: dict, generation: dict | None) -> str:
    os.makedirs(directory, exist_ok=True)
    tokenizer.save(os.path.join(directory, "tokenizer.json"))
    with open(os.path.join(directory, "tokenizer_config.json"), "w") as f:
        json.dump({"tokenizer_class": "PreTrainedTokenizerFast", **config}, f)
    if generation is not None:
        with open(os.path.join(directory, "generation_config.json"), "w") as f:
            json.dump(generation, f)
    return directory


def write_chatml_dir(directory: str, *, chat_template: str | None = CHATML_TEMPLATE) -> str:
    """Qwen2-Instruct style: eos <|im_end|>, pad <|endoftext|>, no bos; generation eos adds <|endoftext|>."""
    tokenizer = _bpe(["<|endoftext|>", "<|im_start|>", "<|im_end|>", *AUDIO_TOKENS], ["<tool_call>"])
    config = {"eos_token": "<|im_end|>", "pad_token": "<|endoftext|>", "bos_token": None}
    if chat_template is not None:
        config["chat_template"] = chat_template
    ids = [tokenizer.token_to_id(t) for t in ("<|im_end|>", "<|endoftext|>")]
    return _write(directory, tokenizer, config, {"eos_token_id": ids})


def write_llama3_dir(directory: str) -> str:
    """Llama-3-Instruct style: bos <|begin_of_text|>, eos <|eot_id|> (+ <|end_of_text|> in generation_config)."""
    specials = ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]
    tokenizer = _bpe(specials + AUDIO_TOKENS, [])
    config = {"bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>", "chat_template": LLAMA3_TEMPLATE}
    ids = [tokenizer.token_to_id(t) for t in ("<|end_of_text|>", "<|eot_id|>")]
    return _write(
        directory, tokenizer, config, {"bos_token_id": tokenizer.token_to_id("<|begin_of_text|>"), "eos_token_id": ids}
    )


MISTRAL_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "{% if message['role'] == 'assistant' %}{{ message['content'] + eos_token }}"
    "{% else %}{{ '[INST] ' + message['content'] + ' [/INST]' }}{% endif %}"
    "{% endfor %}"
)


def write_metaspace_dir(directory: str) -> str:
    """Llama-2/Mistral style: sentencepiece-like BPE (Metaspace, prepend "first", byte fallback), [INST] template."""
    tokenizer = Tokenizer(models.BPE(byte_fallback=True))
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="first", split=False)
    tokenizer.decoder = decoders.Metaspace(replacement="\u2581", prepend_scheme="first", split=False)
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["<unk>", "<s>", "</s>"], show_progress=False)
    tokenizer.train_from_iterator(CORPUS * 4, trainer)
    tokenizer.add_special_tokens(
        [AddedToken(t, special=True, normalized=False) for t in ["[INST]", "[/INST]", *AUDIO_TOKENS]]
    )
    config = {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "chat_template": MISTRAL_TEMPLATE}
    return _write(directory, tokenizer, config, None)


# How each model family's tokenizer.json treats one plain-text sequence (transformers follows the
# post-processor alone when a tokenizer.json exists; tokenizer_config.json's add_bos_token is ignored).
TEXT_RULE_STYLES = {
    # Llama 3: the post-processor puts <|begin_of_text|> first.
    "llama3": ("PreTrainedTokenizerFast", {"bos_token": "<|begin_of_text|>", "eos_token": "<|end_of_text|>"}, "bos"),
    # Qwen2: no BOS token at all; a ByteLevel post-processor that adds nothing.
    "qwen2": (
        "Qwen2Tokenizer",
        {"bos_token": None, "eos_token": "<|endoftext|>", "pad_token": "<|endoftext|>"},
        "byte_level",
    ),
    # SmolLM2: a BOS token is defined (<|im_start|>) but the post-processor adds nothing.
    "smollm2": ("GPT2Tokenizer", {"bos_token": "<|im_start|>", "eos_token": "<|im_end|>"}, "byte_level"),
    # add_bos_token in tokenizer_config.json without a post-processor that adds it: no BOS.
    "config_add_bos": (
        "PreTrainedTokenizerFast",
        {"bos_token": "<|begin_of_text|>", "eos_token": "<|end_of_text|>", "add_bos_token": True},
        None,
    ),
    # A template that adds BOS and EOS.
    "bos_and_eos": (
        "PreTrainedTokenizerFast",
        {"bos_token": "<|begin_of_text|>", "eos_token": "<|end_of_text|>"},
        "bos_eos",
    ),
}
TEXT_RULE_SPECIALS = ["<|begin_of_text|>", "<|end_of_text|>", "<|im_start|>", "<|im_end|>", "<|endoftext|>"]


def write_text_rule_dir(directory: str, style: str) -> str:
    """A tokenizer directory of ``style`` (a key of ``TEXT_RULE_STYLES``); every style has the same
    vocabulary, so one model serves them all."""
    from tokenizers import processors

    tokenizer_class, config, post = TEXT_RULE_STYLES[style]
    tokenizer = _bpe(TEXT_RULE_SPECIALS, [])
    bos, eos = "<|begin_of_text|>", "<|end_of_text|>"
    if post == "bos":
        tokenizer.post_processor = processors.TemplateProcessing(
            single=f"{bos} $A", pair=f"{bos} $A {bos} $B:1", special_tokens=[(bos, tokenizer.token_to_id(bos))]
        )
    elif post == "bos_eos":
        tokenizer.post_processor = processors.TemplateProcessing(
            single=f"{bos} $A {eos}",
            pair=f"{bos} $A {eos} $B:1 {eos}:1",
            special_tokens=[(bos, tokenizer.token_to_id(bos)), (eos, tokenizer.token_to_id(eos))],
        )
    elif post == "byte_level":
        tokenizer.post_processor = processors.ByteLevel(trim_offsets=False)
    if tokenizer_class == "GPT2Tokenizer":  # transformers rebuilds it with GPT-2's own pre-tokenizer, as SmolLM2 has
        tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    if tokenizer_class == "Qwen2Tokenizer":  # transformers rebuilds it with NFC normalisation, as Qwen2 has
        tokenizer.normalizer = normalizers.NFC()
    _write(directory, tokenizer, config, None)
    with open(os.path.join(directory, "tokenizer_config.json"), "w") as f:
        json.dump({**config, "tokenizer_class": tokenizer_class}, f)
    return directory
