"""Whisper decoder targets for the data pipeline, and a byte-level Whisper-style tokenizer for debug runs.

``WhisperTokens(record, frames_per_clip)`` gives the teacher-forcing sequence of one example:

    <|startoftranscript|> <|en|> <|transcribe|> <|notimestamps|>  text tokens ... <|endoftext|>
    loss_mask:  0             0       0              0               1 ...            1

(English-only checkpoints take ``language=None``: no language and task tokens, as their
``generation_config.json`` says.) The text is encoded as plain text (it can never spell a special
token) after one leading space, because Whisper's pre-training targets start with a space (its
decoded text reads " Hello."). The tokenizer is a checkpoint directory's ``tokenizer.json`` loaded
through ``jaxspeech.data.tokenizers``; the encoder holds only its path, so it pickles into Grain
worker processes, which load the tokenizer once each.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
from typing import Any, Mapping, Sequence

import numpy as np

from jaxspeech.data.prompts import EncodedExample
from jaxspeech.data.tokenizers import TOKENIZER_CONFIG_JSON, TOKENIZER_JSON, Tokenizer, load_tokenizer

START_OF_TRANSCRIPT = "<|startoftranscript|>"
END_OF_TEXT = "<|endoftext|>"
NO_TIMESTAMPS = "<|notimestamps|>"
TASKS = ("transcribe", "translate")


def language_token(language: str) -> str:
    return f"<|{language}|>"


def task_token(task: str) -> str:
    return f"<|{task}|>"


@functools.lru_cache(maxsize=8)
def _tokenizer(path: str) -> Tokenizer:
    return load_tokenizer(path)


@dataclasses.dataclass(frozen=True)
class WhisperTokens:
    """The pipeline's ``tokenize`` callable for Whisper fine-tuning (see the module docstring).

    ``language`` None means an English-only checkpoint (prefix ``<|startoftranscript|><|notimestamps|>``).
    """

    tokenizer_path: str
    language: str | None = "en"
    task: str = "transcribe"
    leading_space: bool = True

    def __post_init__(self):
        if self.task not in TASKS:
            raise ValueError(f"Whisper task must be one of {TASKS}, got {self.task!r}")

    @property
    def tokenizer(self) -> Tokenizer:
        return _tokenizer(self.tokenizer_path)

    def _control_id(self, token: str) -> int:
        token_id = self.tokenizer.token_to_id(token)
        if token_id is None or token_id not in self.tokenizer.control_ids:
            raise ValueError(
                f"tokenizer {self.tokenizer_path} has no special token {token}: not a Whisper tokenizer "
                "(or it lacks this language)"
            )
        return token_id

    @property
    def prefix_ids(self) -> tuple[int, ...]:
        """The decoder prompt: start of transcript, [language, task,] no timestamps."""
        names = [START_OF_TRANSCRIPT]
        if self.language is not None:
            names += [language_token(self.language), task_token(self.task)]
        names.append(NO_TIMESTAMPS)
        return tuple(self._control_id(name) for name in names)

    @property
    def end_id(self) -> int:
        return self._control_id(END_OF_TEXT)

    def text_ids(self, text: str) -> list[int]:
        """Plain-text ids of a transcript (after the leading space), never a special token."""
        text = text.strip()
        return self.tokenizer.encode(" " + text if self.leading_space else text)

    @staticmethod
    def transcript(record: Mapping[str, Any]) -> str:
        """The record's ``text``; raises naming the record when it is missing or blank."""
        text = record.get("text")
        if not isinstance(text, str) or not text.strip():
            raise ValueError(
                f"record {record.get('id', '?')!r} ({record.get('audio_filepath', 'no audio path')}): "
                f"empty transcript {text!r}; Whisper fine-tuning needs the text of every training example"
            )
        return text

    def __call__(self, record: Mapping[str, Any], frames_per_clip: Sequence[int]) -> EncodedExample:
        """tokens i32[n] = prefix + text + end; loss_mask f32[n] = 1 on the text and the end token."""
        if len(frames_per_clip) != 1:
            raise ValueError(
                f"record {record.get('id', '?')!r}: Whisper rows hold one clip, got {len(frames_per_clip)} "
                "(set data.pipeline.clips_per_row=1)"
            )
        prefix, body = self.prefix_ids, self.text_ids(self.transcript(record))
        tokens = np.asarray([*prefix, *body, self.end_id], np.int32)
        loss_mask = np.zeros(tokens.shape, np.float32)
        loss_mask[len(prefix) :] = 1.0
        return EncodedExample(tokens=tokens, loss_mask=loss_mask, audio_spans=[])


def _byte_symbols() -> list[str]:
    """The character standing for each byte value in byte-level BPE (GPT-2's mapping): printable
    Latin-1 bytes stand for themselves, the others for the characters from U+0100 on, in byte order."""
    printable = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("\u00a1"), ord("\u00ac") + 1),
        *range(ord("\u00ae"), ord("\u00ff") + 1),
    ]
    symbols, shifted = {}, 0
    for byte in range(256):
        if byte in printable:
            symbols[byte] = chr(byte)
        else:
            symbols[byte] = chr(256 + shifted)
            shifted += 1
    return [symbols[byte] for byte in range(256)]


def write_byte_level_whisper_tokenizer(directory: str | os.PathLike, languages: Sequence[str] = ("en",)) -> str:
    """Writes a small Whisper-style ``tokenizer.json`` (+ ``tokenizer_config.json``) into ``directory``.

    The text model is byte-level BPE without merges: one token per UTF-8 byte, its id the byte's
    value, so any text encodes and decodes exactly; Whisper's special tokens follow in Whisper's order
    (``<|endoftext|>``, ``<|startoftranscript|>``, the languages, ``<|translate|>``,
    ``<|transcribe|>``, ``<|notimestamps|>``). For debug runs of a random-init Whisper.
    """
    from tokenizers import AddedToken, Tokenizer as HFTokenizerModel, decoders, models, pre_tokenizers

    directory = os.fspath(directory)
    os.makedirs(directory, exist_ok=True)
    symbols = _byte_symbols()
    if set(symbols) != set(pre_tokenizers.ByteLevel.alphabet()):
        raise RuntimeError("the tokenizers library's byte-level alphabet is not the GPT-2 byte mapping")
    tokenizer = HFTokenizerModel(models.BPE(vocab={symbol: byte for byte, symbol in enumerate(symbols)}, merges=[]))
    # Whisper's (GPT-2's) pre-tokenization: the byte-level split with its word regex, no added prefix space.
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    special = [
        END_OF_TEXT,
        START_OF_TRANSCRIPT,
        *map(language_token, languages),
        *map(task_token, ("translate", "transcribe")),
        NO_TIMESTAMPS,
    ]
    tokenizer.add_special_tokens([AddedToken(token, special=True, normalized=False) for token in special])
    tokenizer.save(os.path.join(directory, TOKENIZER_JSON))
    with open(os.path.join(directory, TOKENIZER_CONFIG_JSON), "w", encoding="utf-8") as f:
        json.dump(
            {
                "tokenizer_class": "PreTrainedTokenizerFast",
                "bos_token": END_OF_TEXT,
                "eos_token": END_OF_TEXT,
                "pad_token": END_OF_TEXT,
            },
            f,
            indent=2,
        )
    return directory
