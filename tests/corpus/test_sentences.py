"""Lexicon inflection, the grammar engine (parsing, sampling, exact counting), split-disjoint sentences."""

import re

import numpy as np
import pytest

from jaxspeech.corpus import words
from jaxspeech.corpus.grammar import Grammar, GrammarError, Slot, render
from jaxspeech.corpus.sentences import (
    OPEN_VOCAB_SLOTS,
    SPLITS,
    SentenceGenerator,
    english_grammar,
    open_vocab_entries,
    open_vocab_words,
    open_vocab_words_in,
    split_of,
)

TRANSCRIPT = re.compile(r"^[a-z]+( [a-z]+)*$")


def test_verb_and_noun_inflection():
    assert words.verb_forms("stop+") == {
        "base": "stop",
        "s": "stops",
        "past": "stopped",
        "pp": "stopped",
        "ing": "stopping",
    }
    assert words.verb_forms("take/took/taken") == {
        "base": "take",
        "s": "takes",
        "past": "took",
        "pp": "taken",
        "ing": "taking",
    }
    assert words.verb_forms("carry")["s"] == "carries" and words.verb_forms("carry")["past"] == "carried"
    assert words.verb_forms("watch")["s"] == "watches" and words.verb_forms("see/saw/seen")["ing"] == "seeing"
    assert words.verb_forms("go/went/gone")["s"] == "goes" and words.verb_forms("play")["s"] == "plays"
    assert words.noun_forms("knife/knives")["pl"] == "knives" and words.noun_forms("box")["pl"] == "boxes"
    assert words.noun_forms("city")["pl"] == "cities" and words.noun_forms("key")["pl"] == "keys"
    with pytest.raises(ValueError, match="base/past/participle"):
        words.verb_forms("go/went")


def test_indefinite_article():
    assert [words.indefinite_article(w) for w in ("apple", "hour", "unicorn", "umbrella", "dog", "one")] == [
        "an",
        "an",
        "a",
        "an",
        "a",
        "a",
    ]


def test_lexicon_is_a_few_thousand_clean_words():
    surface = set()
    for name in dir(words):
        block = getattr(words, name)
        if name.isupper() and not name.startswith("_") and isinstance(block, str):
            for entry in words.words(block):
                forms = words.verb_forms(entry).values() if name.startswith("VERB") else entry.split("/")
                surface.update(w for form in forms for w in form.split())
    assert len(surface) > 3000
    assert all(re.fullmatch("[a-z]+", w) for w in surface)


def toy_grammar():
    rules = """
    S      -> 2: NP VP[past] . | NP VP[s] ?
    NP     -> the {noun} | @a {noun} | NP and NP
    VP[F]  -> {verb:F} | {verb:F} NP
    """
    slots = {
        "noun": Slot(("owl", "cat", "ice cream"), lambda e, f: words.noun_forms(e)["sg"]),
        "verb": Slot(("see/saw/seen", "jump"), lambda e, f: words.verb_forms(e)[f or "base"]),
    }
    return Grammar(rules, slots, max_depth=6)


def test_counting_matches_enumeration():
    """count_by_length equals a brute-force enumeration of the toy grammar's derivations."""
    grammar = toy_grammar()
    counts = grammar.count_by_length(5)
    # NP of 2 words: 2 determiners x 3 nouns, but "ice cream" has 2 words -> 4 NPs of 2 words, 2 of 3.
    np_by_len = {2: 4, 3: 2}
    np_and = {n: sum(np_by_len.get(a, 0) * np_by_len.get(n - 1 - a, 0) for a in range(n)) for n in range(6)}
    nps = {n: np_by_len.get(n, 0) + np_and[n] for n in range(6)}
    vp = {n: (2 if n == 1 else 0) + 2 * nps.get(n - 1, 0) for n in range(6)}
    expected = [sum(2 * nps.get(a, 0) * vp.get(n - a, 0) for a in range(n + 1)) for n in range(6)]
    assert counts == expected


def test_sampling_and_rendering():
    grammar = toy_grammar()
    rng = np.random.default_rng(0)
    seen = set()
    for _ in range(200):
        try:
            transcript, spoken = render(grammar.sample(rng), words.indefinite_article)
        except RecursionError:
            continue
        assert TRANSCRIPT.match(transcript)
        assert spoken.endswith((".", "?")) and spoken.replace(".", "").replace("?", "") == transcript
        assert "a owl" not in transcript and "an cat" not in transcript
        seen.add(transcript)
    assert any("an owl" in t for t in seen) and any(t.startswith("the cat") for t in seen)


def test_grammar_errors_are_clear():
    slots = {"noun": Slot(("owl",), lambda e, f: e)}
    with pytest.raises(GrammarError, match="undefined rule NP"):
        Grammar("S -> NP", slots)
    with pytest.raises(GrammarError, match="unknown lexicon slot"):
        Grammar("S -> {verb}", slots)
    with pytest.raises(GrammarError, match="bad token 'Owl!'"):
        Grammar("S -> Owl!", slots)
    with pytest.raises(GrammarError, match="takes one argument"):
        Grammar("S -> VP\nVP[F] -> {noun}", slots)
    with pytest.raises(GrammarError, match="defined twice"):
        Grammar("S -> {noun}\nS -> {noun}", slots)


def test_sentences_deterministic_bounded_and_in_their_split():
    generator = SentenceGenerator()
    for split in SPLITS:
        first = [generator.draw(np.random.default_rng([7, i]), split) for i in range(30)]
        again = [generator.draw(np.random.default_rng([7, i]), split) for i in range(30)]
        assert first == again
        for sentence in first:
            assert TRANSCRIPT.match(sentence.transcript), sentence
            assert generator.min_words <= len(sentence.transcript.split()) <= generator.max_words
            assert split_of(sentence.transcript) == split
        assert len({s.transcript for s in first}) == 30


def test_split_assignment_is_stable_and_partitions():
    assert split_of("the cat sat on the mat") == split_of("the cat sat on the mat")
    rng = np.random.default_rng(1)
    grammar = english_grammar()
    buckets = [split_of(render(grammar.sample(rng), words.indefinite_article)[0]) for _ in range(2000)]
    fractions = {split: buckets.count(split) / len(buckets) for split in SPLITS}
    assert 0.01 < fractions["dev"] < 0.05 and 0.01 < fractions["test"] < 0.05 and fractions["train"] > 0.6
    assert 0.15 < fractions["open_vocab"] < 0.4  # sentences with a held-out word


def test_open_vocab_holds_out_a_tenth_of_the_nouns_names_and_verbs():
    grammar = english_grammar()
    entries = open_vocab_entries()
    assert set(entries) == set(OPEN_VOCAB_SLOTS)
    held_out = sum(len(e) for e in entries.values())
    total = sum(len(grammar.slots[slot].entries) for slot in OPEN_VOCAB_SLOTS)
    assert 0.07 < held_out / total < 0.12, (held_out, total)
    for slot, chosen in entries.items():
        assert chosen and set(chosen) <= set(grammar.slots[slot].entries), slot
    held_out_words = open_vocab_words()
    assert {"read", "reads", "reading"} <= held_out_words and {"ran", "running"} <= held_out_words  # every form
    assert {"calf", "calves", "bought"} <= held_out_words
    assert not held_out_words & {"the", "a", "home", "to", "and", "is", "was", "one", "red", "monday"}
    rng = np.random.default_rng(5)
    for _ in range(50):
        for split in ("train", "dev", "test"):
            assert not set(SentenceGenerator().draw(rng, split).transcript.split()) & held_out_words
        assert open_vocab_words_in(SentenceGenerator().draw(rng, "open_vocab").transcript)


def test_sentence_space_is_huge():
    assert SentenceGenerator().count_derivations() > 1e20
    draws = [SentenceGenerator().draw(np.random.default_rng([3, i]), "train").transcript for i in range(3000)]
    assert len(set(draws)) > 2985  # fewer than 0.5% repeats in 3,000 draws


def test_all_rules_reachable_and_all_slots_used():
    grammar = english_grammar()
    used = {
        m for alts in grammar._rules.values() for a in alts for t in a.tokens for m in re.findall(r"\{([a-z_]+)", t)
    }
    assert used == set(grammar.slots)
    heads = {name.split("[")[0] for name in grammar._rules}
    assert heads == set(grammar._templates)
