"""The data pipeline's ``tokenize`` callables for Speech-LLM training and inference (and for CTC on
its encoder alone, ``TranscriptTokens``).

``SpeechLLMTokens(record, frames_per_clip)`` turns a source record (``text``, optional ``instruction``,
``prompt``, ``target``, ``language``) and the log-mel frame count of each clip into prompt +
target tokens with the audio placeholder spans sized by the model's downsampling arithmetic.
It is picklable (worker processes load the tokenizer lazily, once, with ``load_speech_tokenizer``).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Mapping, Sequence

import numpy as np

from jaxspeech.audio_tokens import downsampled_length
from jaxspeech.data.prompts import EncodedExample, encode_example
from jaxspeech.data.sources import answer_text
from jaxspeech.data.special_tokens import AUDIO_PLACEHOLDER, chunk_tag
from jaxspeech.data.tokenizers import HFTokenizer, Tokenizer, load_tokenizer
from jaxspeech.errors import ConfigError, UsageError


def load_speech_tokenizer(path: str) -> Tokenizer:
    """The tokenizer at ``path`` (see ``load_tokenizer``) with the audio placeholder ``<|audio|>`` as a
    control token: a Hugging Face tokenizer that lacks it (an LLM's own) gets it appended, at the id
    of its former ``vocab_size`` on every load. Others are returned as they are (a sentencepiece
    model cannot grow; ``placeholder_id`` then names the missing token)."""
    tokenizer = load_tokenizer(path)
    if isinstance(tokenizer, HFTokenizer) and tokenizer.token_to_id(AUDIO_PLACEHOLDER) not in tokenizer.special_ids:
        tokenizer.add_special_tokens([AUDIO_PLACEHOLDER])
    return tokenizer


@functools.lru_cache(maxsize=8)
def _tokenizer(path: str) -> Tokenizer:
    return load_speech_tokenizer(path)


@dataclasses.dataclass(frozen=True)
class SpeechLLMTokens:
    """``audio_steps``: frames -> placeholder tokens (``SpeechLLMConfig.inline_steps``); an empty
    tuple means the audio is not inline (cross-attention). ``chunk_tags``: the audio is cut into time
    chunks, each clip into pieces of ``chunk_frames`` log-mel frames (None: one chunk per clip), and
    the k-th chunk's placeholders follow the control token ``<chunk_k>`` (NVLM's tile tags in time; with
    cross-attention the tags alone stand in the prompt, one per chunk). The prompt then needs a single
    ``{audio}`` slot when a clip has several chunks. ``inference`` drops the target."""

    tokenizer_path: str
    audio_steps: tuple[Any, ...]
    instruction: str = "asr"
    chat: bool = False
    prompts: Mapping[str, str] | None = None
    system: str | None = None
    chunk_tags: bool = False
    chunk_frames: int | None = None
    inference: bool = False

    @property
    def tokenizer(self) -> Tokenizer:
        return _tokenizer(self.tokenizer_path)

    @property
    def placeholder_id(self) -> int:
        token_id = self.tokenizer.token_to_id(AUDIO_PLACEHOLDER)
        if token_id is None:
            raise UsageError(self.tokenizer_path, f"has no {AUDIO_PLACEHOLDER} token: not a Speech LLM tokenizer")
        return token_id

    def chunk_tag_ids(self, clips: int) -> list[int]:
        """The ids of ``<chunk_1>`` .. ``<chunk_{clips}>``; an error names a tag the tokenizer lacks."""
        ids = [self.tokenizer.token_to_id(chunk_tag(k)) for k in range(1, clips + 1)]
        missing = [chunk_tag(k) for k, i in enumerate(ids, 1) if i is None or i not in self.tokenizer.special_ids]
        if missing:
            raise ConfigError(
                "task.prompt.chunk_tags",
                f"needs the control tokens {missing}, which tokenizer {self.tokenizer_path} does not have",
            )
        return ids

    def audio_tokens(self, frames: int) -> int:
        return downsampled_length(int(frames), self.audio_steps) if self.audio_steps else 0

    def chunk_token_counts(self, frames_per_clip: Sequence[int]) -> list[int]:
        """Placeholder tokens of each time chunk, clip after clip. Chunk [a, b) of a clip gets
        ``audio_tokens(b) - audio_tokens(a)``: the clip's placeholders in total, split at the frames'
        token boundaries."""
        counts = []
        for frames in (int(f) for f in frames_per_clip):
            bounds = [*range(0, frames, self.chunk_frames or max(frames, 1)), frames]
            before = [0] + [self.audio_tokens(b) for b in bounds[1:-1]]  # tokens before each chunk
            counts += [self.audio_tokens(end) - start for start, end in zip(before, bounds[1:])]
        return counts

    def __call__(self, record: Mapping[str, Any], frames_per_clip: Sequence[int]) -> EncodedExample:
        language = record.get("language")
        target = None if self.inference else answer_text(record)
        counts = (
            self.chunk_token_counts(frames_per_clip)
            if self.chunk_tags
            else [self.audio_tokens(f) for f in frames_per_clip]
        )
        return encode_example(
            self.tokenizer,
            instruction=record.get("instruction") or self.instruction,
            audio_token_counts=counts,
            placeholder_id=self.placeholder_id,
            prompt=record.get("prompt"),
            target=target,
            system=self.system,
            fields={"target_language": language} if language and (record.get("instruction") == "ast") else None,
            prompts=self.prompts,
            chat=self.chat,
            chunk_tag_ids=self.chunk_tag_ids(len(counts)) if self.chunk_tags else None,
        )


@dataclasses.dataclass(frozen=True)
class TranscriptTokens:
    """The pipeline's ``tokenize`` for CTC on the encoder alone: the transcript's tokens, every one a
    target (no prompt, no placeholders, no end token); ``inference`` gives no tokens."""

    tokenizer_path: str
    inference: bool = False

    def __call__(self, record: Mapping[str, Any], frames_per_clip: Sequence[int]) -> EncodedExample:
        del frames_per_clip
        ids = [] if self.inference else _tokenizer(self.tokenizer_path).encode(answer_text(record))
        return EncodedExample(np.asarray(ids, np.int32), np.ones(len(ids), np.float32), [(0, 0)])
