"""Plain text is tokenized by the tokenizer's own rules: ``encode_text`` gives exactly
``AutoTokenizer.from_pretrained(d)(text).input_ids`` for Llama-3-style (BOS added), Qwen2-style (no BOS
token), SmolLM2-style (BOS token defined, not added) tokenizers and two more cases; the plain
(non-chat) prompt of a Speech LLM starts the same way."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

transformers = pytest.importorskip("transformers")

from jaxspeech.data.tokenizers import load_tokenizer  # noqa: E402
from jaxspeech.testing.tokenizer_dirs import TEXT_RULE_SPECIALS, TEXT_RULE_STYLES, write_text_rule_dir  # noqa: E402

TEXTS = [
    "hello world",
    "",
    " leading space",
    "The quick brown fox jumps over the lazy dog; 12 cats!",
    "naïve café — ünïcödé ✓",
    "new\nlines\tand tabs",
    "  ",
]
EXPECTED_PREFIX = {
    "llama3": ["<|begin_of_text|>"],
    "qwen2": [],
    "smollm2": [],
    "config_add_bos": [],
    "bos_and_eos": ["<|begin_of_text|>"],
}


@pytest.fixture(scope="module")
def tokenizers(tmp_path_factory) -> dict:
    pairs = {}
    for style in TEXT_RULE_STYLES:
        directory = write_text_rule_dir(str(tmp_path_factory.mktemp(style)), style)
        pairs[style] = (load_tokenizer(directory), transformers.AutoTokenizer.from_pretrained(directory))
    return pairs


@pytest.mark.parametrize("style", list(TEXT_RULE_STYLES))
def test_encode_text_equals_transformers(tokenizers, style):
    ours, theirs = tokenizers[style]
    for text in TEXTS:
        assert ours.encode_text(text) == theirs(text).input_ids, (style, text)
    assert [ours.id_to_token(i) for i in ours.text_prefix] == EXPECTED_PREFIX[style]
    assert ours.text_suffix == ((ours.token_to_id("<|end_of_text|>"),) if style == "bos_and_eos" else ())
    if style == "smollm2":
        assert ours.bos_id == ours.token_to_id("<|im_start|>")  # defined, yet plain text gets no BOS


@settings(max_examples=60, deadline=None)
@given(text=st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=40))
def test_encode_text_equals_transformers_on_any_text(tokenizers, text):
    if any(special in text for special in TEXT_RULE_SPECIALS):
        return  # transformers reads special-token strings in text as the tokens; plain text here never does
    for style, (ours, theirs) in tokenizers.items():
        assert ours.encode_text(text) == theirs(text).input_ids, (style, text)


def test_sentencepiece_text_gets_bos(sp):
    assert sp.encode_text("hello world") == [sp.bos_id, *sp.encode("hello world")]
