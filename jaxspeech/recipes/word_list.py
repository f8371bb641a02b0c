"""A run's decoding lexicon: where its words come from, and their token automaton.

``eval.lexicon`` names a word list (a text file, one word per line) or a data set of the run
(``"train"``: the words of its transcripts). A training run copies the resolved list to
``<workdir>/lexicon.txt`` and points its saved config there, so ``jaxspeech eval`` and
``jaxspeech transcribe`` decode with the same words without the training data.
"""

from __future__ import annotations

import json
from typing import Callable

from jaxspeech import paths
from jaxspeech.data.tokenizers import Tokenizer
from jaxspeech.errors import ConfigError, MissingFileError, UsageError
from jaxspeech.decoding.lexicon import TokenAutomaton, word_automaton

LEXICON_FILE = "lexicon.txt"
PAIRS_CHECKED = 200


def read_words(spec: str, manifest: Callable[[str], str]) -> list[str]:
    """The sorted distinct words of ``spec``: a word-list file, or the transcripts (``text``) of the
    data set ``spec`` whose manifest path ``manifest(spec)`` gives."""
    if paths.is_file(spec):
        words = {line.strip() for line in paths.read_text(spec).split("\n") if line.strip()}
        several = sorted(word for word in words if len(word.split()) > 1)
        if several:
            raise UsageError(spec, f"a lexicon holds one word per line, found {several[0]!r}")
    else:
        path = manifest(spec)
        if not paths.is_file(path):
            raise MissingFileError(
                "eval.lexicon", f"{spec!r} is neither a word-list file nor a data set ({path} not found)"
            )
        lines = paths.read_text(path).split("\n")
        words = {word for line in lines if line.strip() for word in json.loads(line).get("text", "").split()}
    if not words:
        raise UsageError("eval.lexicon", f"{spec!r} holds no words")
    return sorted(words)


def write_words(words: list[str], workdir: str) -> str:
    """Writes the word list to ``<workdir>/lexicon.txt``; returns its path."""
    path = paths.join(workdir, LEXICON_FILE)
    paths.write_whole(path, "".join(word + "\n" for word in words))
    return path


def lexicon_automaton(words: list[str], tokenizer: Tokenizer, vocab_size: int) -> TokenAutomaton:
    """The token automaton of sentences of ``words`` (``decoding/lexicon.py``) for an LLM with
    ``vocab_size`` logits. Raises if the tokenizer joins tokens across words (then a word's tokens
    would depend on its neighbours)."""
    tokens = [tokenizer.encode(word) for word in words]
    for first, second, a, b in list(zip(words, words[1:], tokens, tokens[1:]))[:PAIRS_CHECKED]:
        if tokenizer.encode(f"{first} {second}") != a + b:
            raise ConfigError(
                "eval.lexicon",
                f"lexicon decoding needs a tokenizer that tokenizes each word on its own; {tokenizer.source} "
                f"tokenizes {first + ' ' + second!r} differently from {first!r} followed by {second!r}",
            )
    return word_automaton(tokens, vocab_size, tuple(tokenizer.eos_ids))
