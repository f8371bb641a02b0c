"""Tokenizers built once per test session (tiny, trained in well under a second)."""

import pytest

from jaxspeech.data.sentencepiece_training import train_sentencepiece
from jaxspeech.data.tokenizers import load_tokenizer
from jaxspeech.testing.tokenizer_dirs import CORPUS, write_chatml_dir, write_llama3_dir, write_metaspace_dir


@pytest.fixture(scope="session")
def chatml_dir(tmp_path_factory):
    return write_chatml_dir(str(tmp_path_factory.mktemp("chatml")))


@pytest.fixture(scope="session")
def llama3_dir(tmp_path_factory):
    return write_llama3_dir(str(tmp_path_factory.mktemp("llama3")))


@pytest.fixture(scope="session")
def metaspace_dir(tmp_path_factory):
    return write_metaspace_dir(str(tmp_path_factory.mktemp("metaspace")))


@pytest.fixture(scope="session")
def metaspace(metaspace_dir):
    return load_tokenizer(metaspace_dir)


@pytest.fixture(scope="session")
def chatml(chatml_dir):
    return load_tokenizer(chatml_dir)


@pytest.fixture(scope="session")
def llama3(llama3_dir):
    return load_tokenizer(llama3_dir)


@pytest.fixture(scope="session")
def sp_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("sp") / "tiny.model"
    sentences = [line for text in CORPUS for line in text.split("\n") if line.strip()]
    train_sentencepiece(sentences * 20, vocab_size=80, out_path=path)
    return str(path)


@pytest.fixture(scope="session")
def sp(sp_path):
    return load_tokenizer(sp_path)
