"""``jaxspeech generate``: continue a text prompt with a Hugging Face Llama / Qwen2 checkpoint.

  jaxspeech generate --hf-dir ./Qwen2-0.5B-Instruct --prompt "Name three rivers."
  jaxspeech generate --hf-dir ./SmolLM-135M --prompt "Once upon a time" --raw --max-new-tokens 64 --beam 4
  jaxspeech generate --hf-dir ./model --prompt "Hello" --sample --temperature 0.7 --top-p 0.9 --seed 1

The directory needs config.json, model.safetensors (or shards + index) and tokenizer.json. When its
tokenizer has a chat template, the prompt is sent as one user turn; ``--raw`` sends it as plain text,
tokenized as the model's own tokenizer does (``tokenizer(text)`` in transformers: with BOS only
where its ``tokenizer.json`` adds one).
Prints the continuation only (``--jsonl``: one JSON object per prompt).

Errors (exit 2): an --hf-dir without a readable config.json, safetensors weights or tokenizer
(the file and tensor are named); --sample with --beam; a number flag out of range.
"""

from __future__ import annotations

import argparse
import json

import jax
import jax.numpy as jnp

from jaxspeech.cli.arguments import number
from jaxspeech.convert.hf_llm import load_hf_llm
from jaxspeech.data.chat import encode_chat
from jaxspeech.data.tokenizers import load_tokenizer
from jaxspeech.decoding.generate import GenerationConfig, generate, pad_prompts
from jaxspeech.errors import UsageError

_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "generate",
        help="continue a prompt with an HF Llama/Qwen2 checkpoint",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--hf-dir", required=True, help="HF model directory (config.json, safetensors, tokenizer.json)")
    parser.add_argument("--prompt", required=True, action="append", help="prompt text; repeat to batch several prompts")
    parser.add_argument("--max-new-tokens", type=number(int, 1), default=64)
    parser.add_argument(
        "--beam", type=number(int, 1), default=1, metavar="N", help="beam search with N beams (default: greedy)"
    )
    parser.add_argument("--sample", action="store_true", help="sample instead of greedy decoding")
    parser.add_argument("--temperature", type=number(float, 0, low_open=True), default=1.0)
    parser.add_argument("--top-k", type=number(int, 0), default=0, help="sample from the K likeliest tokens (0: all)")
    parser.add_argument("--top-p", type=number(float, 0, 1, low_open=True), default=1.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--raw",
        action="store_true",
        help="plain text, no chat template (special tokens only where the tokenizer itself adds them)",
    )
    parser.add_argument("--system", default=None, help="system message for chat templates")
    parser.add_argument("--dtype", choices=sorted(_DTYPES), default="float32", help="compute dtype")
    parser.add_argument(
        "--jsonl",
        action="store_true",
        help="print one JSON object per prompt ({prompt, continuation, tokens}) instead of plain text",
    )
    parser.set_defaults(func=run)


def encode_prompt(tokenizer, text: str, raw: bool, system: str | None) -> list[int]:
    """Token ids of ``text``: a user turn through the chat template, or plain text with the special
    tokens the tokenizer's own rules add (``Tokenizer.encode_text``: BOS for Llama 3, none for Qwen2)."""
    if raw or tokenizer.chat_template is None:
        return tokenizer.encode_text(text)
    messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": text}]
    return encode_chat(tokenizer, messages, add_generation_prompt=True).ids


def run(args: argparse.Namespace) -> int:
    if args.sample and args.beam > 1:
        raise UsageError("--sample", "and --beam are exclusive (sampling draws one continuation per prompt)")
    tokenizer = load_tokenizer(args.hf_dir)
    config, params = load_hf_llm(args.hf_dir, dtype=_DTYPES[args.dtype], scan_layers=False)
    params = jax.device_put(params)
    prompts = [encode_prompt(tokenizer, text, args.raw, args.system) for text in args.prompt]
    method = "beam" if args.beam > 1 else "sample" if args.sample else "greedy"
    gen = GenerationConfig(
        max_new_tokens=args.max_new_tokens,
        method=method,
        eos_ids=tuple(tokenizer.eos_ids),
        pad_id=tokenizer.pad_id if tokenizer.pad_id is not None else 0,
        num_beams=max(args.beam, 1),
        temperature=args.temperature,
        top_k=args.top_k,
        top_p=args.top_p,
    )
    tokens, segment_ids = pad_prompts(prompts, pad_id=gen.pad_id)
    out = generate(config, params, tokens, segment_ids, gen, jax.random.key(args.seed))
    for text, row, length in zip(args.prompt, jax.device_get(out.tokens), jax.device_get(out.lengths)):
        ids = [int(t) for t in row[: int(length)]]
        continuation = tokenizer.decode(ids, skip_special_tokens=True)
        print(json.dumps({"prompt": text, "continuation": continuation, "tokens": ids}) if args.jsonl else continuation)
    return 0
