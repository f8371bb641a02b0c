"""The text side of jaxspeech in one import: tokenizers, chat templates, prompts and loss masks.

Implementation lives in small modules beside this one:
  tokenizers.py              ``Tokenizer``, ``load_tokenizer`` (HF tokenizer.json or sentencepiece)
  sentencepiece_training.py  ``train_sentencepiece`` with reserved control tokens
  special_tokens.py          the control-token strings jaxspeech reserves
  chat.py                    HF-compatible chat templates with injection-safe tokenization
  prompts.py                 task prompts and ``encode_example`` (tokens, loss mask, audio spans)
  ../audio_tokens.py         placeholder-span arithmetic shared with the models
"""

from jaxspeech.audio_tokens import (
    FrameStack,
    Identity,
    Pooling,
    QFormerWindows,
    StridedConv,
    WHISPER_ENCODER,
    audio_token_count,
    conv_output_length,
    downsampled_length,
)
from jaxspeech.data.chat import ChatEncoding, TokenIds, builtin_template, encode_chat
from jaxspeech.data.prompts import DEFAULT_INSTRUCTION_PROMPTS, EncodedExample, encode_example, instruction_prompts
from jaxspeech.data.sentencepiece_training import reserved_control_symbols, train_sentencepiece
from jaxspeech.data.special_tokens import AUDIO_PLACEHOLDER, ROLE_TOKENS, chunk_tag
from jaxspeech.data.tokenizers import HFTokenizer, SentencePieceTokenizer, Tokenizer, load_tokenizer

__all__ = [
    "AUDIO_PLACEHOLDER",
    "ChatEncoding",
    "DEFAULT_INSTRUCTION_PROMPTS",
    "EncodedExample",
    "FrameStack",
    "HFTokenizer",
    "Identity",
    "Pooling",
    "QFormerWindows",
    "ROLE_TOKENS",
    "SentencePieceTokenizer",
    "StridedConv",
    "TokenIds",
    "Tokenizer",
    "WHISPER_ENCODER",
    "audio_token_count",
    "builtin_template",
    "chunk_tag",
    "conv_output_length",
    "downsampled_length",
    "encode_chat",
    "encode_example",
    "load_tokenizer",
    "reserved_control_symbols",
    "instruction_prompts",
    "train_sentencepiece",
]
