"""Trains a sentencepiece model from in-memory text with jaxspeech's control tokens reserved."""

from __future__ import annotations

import io
import os
from collections.abc import Iterable, Iterator, Sequence

import sentencepiece as spm

from jaxspeech.data import special_tokens
from jaxspeech.data.tokenizers import SentencePieceTokenizer


def reserved_control_symbols(num_chunk_tags: int = special_tokens.DEFAULT_NUM_CHUNK_TAGS) -> list[str]:
    """Control symbols after pad/unk/bos/eos (ids 0-3): the audio placeholder, role tokens, chunk tags."""
    return [
        special_tokens.AUDIO_PLACEHOLDER,
        *special_tokens.ROLE_TOKENS.values(),
        *(special_tokens.chunk_tag(i) for i in range(1, num_chunk_tags + 1)),
    ]


def train_sentencepiece(
    texts: Iterable[str],
    vocab_size: int,
    out_path: str | os.PathLike,
    *,
    model_type: str = "unigram",
    character_coverage: float = 1.0,
    byte_fallback: bool = False,
    num_chunk_tags: int = special_tokens.DEFAULT_NUM_CHUNK_TAGS,
    extra_control_symbols: Sequence[str] = (),
    hard_vocab_limit: bool = True,
    num_threads: int = 2,
) -> SentencePieceTokenizer:
    """Trains on ``texts`` (one sentence per item, streamed) and writes ``out_path`` (a ``.model``).

    Ids 0-3 are <pad>, <unk>, <s>, </s>; then the control symbols of ``reserved_control_symbols``
    and ``extra_control_symbols``. Control symbols are never produced from text. ``vocab_size``
    counts them all; with ``hard_vocab_limit=False`` a small corpus may give fewer pieces.
    """
    out_path = os.fspath(out_path)
    if not out_path.endswith(".model"):
        raise ValueError(f"{out_path}: the sentencepiece model path must end with .model")
    controls = reserved_control_symbols(num_chunk_tags) + list(extra_control_symbols)
    minimum = 4 + len(controls) + 1
    if vocab_size < minimum:
        raise ValueError(f"vocab_size {vocab_size} is too small: {minimum - 1} ids are reserved for control tokens")
    counter = _CountingSentences(texts)
    model = io.BytesIO()
    try:
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(counter),
            model_writer=model,
            vocab_size=vocab_size,
            model_type=model_type,
            character_coverage=character_coverage,
            byte_fallback=byte_fallback,
            split_digits=True,
            pad_id=0,
            unk_id=1,
            bos_id=2,
            eos_id=3,
            pad_piece=special_tokens.PAD,
            unk_piece=special_tokens.UNK,
            bos_piece=special_tokens.BOS,
            eos_piece=special_tokens.EOS,
            control_symbols=controls,
            hard_vocab_limit=hard_vocab_limit,
            num_threads=num_threads,
            minloglevel=2,
        )
    except RuntimeError as e:
        if counter.error is not None:  # sentencepiece re-raises errors from the iterator as RuntimeError
            raise counter.error from None
        raise ValueError(f"sentencepiece training for {out_path} failed on {counter.count} sentences: {e}") from e
    if counter.count == 0:
        raise ValueError(f"no non-empty training text for {out_path}")
    directory = os.path.dirname(out_path)
    if directory:
        os.makedirs(directory, exist_ok=True)
    partial = out_path + ".partial"
    with open(partial, "wb") as f:
        f.write(model.getvalue())
    os.replace(partial, out_path)
    return SentencePieceTokenizer(out_path)


class _CountingSentences:
    """Streams non-empty sentences, checking their type and counting them."""

    def __init__(self, texts: Iterable[str]):
        self._texts = texts
        self.count = 0
        self.error: TypeError | None = None

    def __iter__(self) -> Iterator[str]:
        for k, text in enumerate(self._texts):
            if not isinstance(text, str):
                self.error = TypeError(f"training text {k} is a {type(text).__name__}, expected str")
                raise self.error
            if text.strip():
                self.count += 1
                yield text
