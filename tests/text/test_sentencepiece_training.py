"""train_sentencepiece: reserved ids, control symbols that text cannot produce, clear errors."""

import pytest

from jaxspeech.data import special_tokens
from jaxspeech.data.sentencepiece_training import reserved_control_symbols, train_sentencepiece
from jaxspeech.data.tokenizers import load_tokenizer


def test_reserved_layout(sp, sp_path):
    reserved = [
        special_tokens.PAD,
        special_tokens.UNK,
        special_tokens.BOS,
        special_tokens.EOS,
        *reserved_control_symbols(),
    ]
    assert [sp.id_to_token(i) for i in range(len(reserved))] == reserved
    assert sp.token_to_id("<chunk_16>") == len(reserved) - 1
    assert {sp.token_to_id(t) for t in reserved} - {sp.unk_id} == set(sp.special_ids)
    assert load_tokenizer(sp_path).vocab_size == 80


def test_streams_from_a_generator(tmp_path):
    def sentences():
        for i in range(300):
            yield f"sentence number {i} about the weather"
            yield ""  # empty lines are skipped

    tok = train_sentencepiece(
        sentences(),
        vocab_size=35,
        out_path=tmp_path / "gen.model",
        num_chunk_tags=2,
        extra_control_symbols=["<|lang_en|>"],
    )
    assert tok.token_to_id("<|lang_en|>") in tok.special_ids
    assert tok.token_to_id("<chunk_3>") is None
    assert tok.decode(tok.encode("the weather 42")) == "the weather 42"


def test_byte_fallback_has_no_unknowns(tmp_path):
    tok = train_sentencepiece(
        ["plain ascii text only"] * 50,
        vocab_size=300,
        out_path=tmp_path / "b.model",
        byte_fallback=True,
        hard_vocab_limit=False,
    )
    ids = tok.encode("ü 😀")
    assert tok.unk_id not in ids and tok.decode(ids) == "ü 😀"


def test_errors(tmp_path):
    with pytest.raises(ValueError, match="must end with .model"):
        train_sentencepiece(["a"], vocab_size=100, out_path=tmp_path / "x.bin")
    with pytest.raises(ValueError, match="vocab_size 10 is too small"):
        train_sentencepiece(["a"], vocab_size=10, out_path=tmp_path / "x.model")
    with pytest.raises(TypeError, match="training text 1 is a bytes"):
        train_sentencepiece(["a", b"b"], vocab_size=60, out_path=tmp_path / "x.model")
    with pytest.raises(ValueError, match="Vocabulary size too high"):
        train_sentencepiece(["tiny corpus"] * 3, vocab_size=500, out_path=tmp_path / "x.model")
    assert not (tmp_path / "x.model").exists()
