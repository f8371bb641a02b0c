"""A run's lexicon: word lists from files and transcripts, their token automaton, clear errors."""

import json

import numpy as np
import pytest

from jaxspeech.data.sentencepiece_training import train_sentencepiece
from jaxspeech.data.tokenizers import load_tokenizer
from jaxspeech.recipes.word_list import lexicon_automaton, read_words, write_words
from jaxspeech.testing.tokenizer_dirs import write_llama3_dir

SENTENCES = ["the cat sat on the mat", "a dog ran to the park", "the birds sang at dawn", "cats and dogs sat"] * 20


@pytest.fixture(scope="module")
def sentencepiece(tmp_path_factory):
    return train_sentencepiece(
        SENTENCES, vocab_size=60, out_path=tmp_path_factory.mktemp("spm") / "t.model", hard_vocab_limit=False
    )


def _manifest(tmp_path, texts):
    path = tmp_path / "train.jsonl"
    path.write_text("".join(json.dumps({"id": str(i), "text": t}) + "\n" for i, t in enumerate(texts)))
    return path


def test_words_come_from_a_data_set_or_a_file(tmp_path):
    manifest = _manifest(tmp_path, ["the cat sat", "a cat ran"])
    words = read_words("train", lambda name: str(tmp_path / f"{name}.jsonl"))
    assert words == ["a", "cat", "ran", "sat", "the"]
    path = write_words(words, str(tmp_path))
    assert read_words(path, lambda name: pytest.fail("a file is not a data set")) == words
    assert manifest.exists()


def test_bad_word_sources_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="'dev' is neither a word-list file nor a data set.*dev.jsonl"):
        read_words("dev", lambda name: str(tmp_path / f"{name}.jsonl"))
    (tmp_path / "words.txt").write_text("cat\nred hat\n")
    with pytest.raises(ValueError, match="one word per line, found 'red hat'"):
        read_words(str(tmp_path / "words.txt"), str)
    _manifest(tmp_path, [""])
    with pytest.raises(ValueError, match="holds no words"):
        read_words("train", lambda name: str(tmp_path / f"{name}.jsonl"))


def test_automaton_accepts_the_tokenised_sentences_of_its_words(sentencepiece):
    words = sorted({w for s in SENTENCES for w in s.split()})
    automaton = lexicon_automaton(words, sentencepiece, sentencepiece.vocab_size + 2)
    table = np.asarray(automaton.next_state)
    assert table.shape[1] == sentencepiece.vocab_size + 2  # the LLM's logits may outnumber the tokenizer's ids

    def accepts(tokens):
        state = 0
        for token in tokens:
            state = table[state, token]
            if state < 0:
                return False
        return True

    eos = sentencepiece.eos_ids[0]
    for sentence in ("the cat sat on the mat", "dogs sang", "the the the"):
        assert accepts(sentencepiece.encode(sentence) + [eos])
    for not_words in ("the ca", "thecat sat", "cat sa"):  # a word's prefix, two words run together
        assert not accepts(sentencepiece.encode(not_words) + [eos]), not_words
    assert not accepts([eos])  # no empty sentence


def test_a_tokenizer_that_joins_words_is_refused(tmp_path):
    byte_level = load_tokenizer(write_llama3_dir(str(tmp_path)))  # "dog" alone and " dog" after a word differ
    with pytest.raises(ValueError, match="tokenizes each word on its own.*'cat dog'"):
        lexicon_automaton(["cat", "dog"], byte_level, byte_level.vocab_size)
