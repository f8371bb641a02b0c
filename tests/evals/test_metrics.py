"""WER/CER/BLEU/exact match on hand-made examples with exact expected numbers."""

import math

import pytest

from jaxspeech.evals.metrics import (
    PER_SET_METRICS,
    ErrorCounts,
    bleu,
    cer,
    exact_match,
    get_normalizer,
    headline,
    transcript_echo,
    wer,
)


def test_one_substitution_in_four_words():
    result = wer(["the cat sat down"], ["the cat sit down"])
    assert result.counts == ErrorCounts(substitutions=1, deletions=0, insertions=0, reference_length=4)
    assert result.rate == 0.25


def test_corpus_rate_pools_counts():
    # 1 substitution / 4 words and 1 deletion / 2 words: pooled 2 / 6, not the mean of 25% and 50%.
    result = wer(["the cat sat down", "hello world"], ["the cat sit down", "hello"])
    assert result.counts == ErrorCounts(1, 1, 0, 6)
    assert result.rate == pytest.approx(2 / 6)
    assert [e.counts.rate for e in result.examples] == [0.25, 0.5]


def test_insertions_and_empty_references():
    result = wer(["a b", ""], ["a x b", "oh well"], normalizer="none")
    assert result.examples[0].counts == ErrorCounts(0, 0, 1, 2)
    assert result.examples[1].counts == ErrorCounts(0, 0, 2, 0)
    assert result.examples[1].counts.rate == math.inf
    assert result.rate == pytest.approx(3 / 2)
    assert wer([""], [""]).rate == 0.0
    assert cer([""], ["ab"], normalizer="none").counts == ErrorCounts(0, 0, 2, 0)


def test_normalisation_applies_before_scoring():
    result = wer(["Hello, World! It's twenty-one."], ["hello world it is 21"])
    assert result.rate == 0.0
    assert result.examples[0].reference_normalized == "hello world it is 21"
    assert wer(["Hello, World!"], ["hello world"], normalizer="none").rate == 1.0
    assert wer(["A B"], ["a b"], normalizer=str.lower).rate == 0.0


def test_cer_counts_characters():
    result = cer(["abcd"], ["abed"])
    assert result.counts == ErrorCounts(1, 0, 0, 4) and result.rate == 0.25
    result = cer(["ab cd"], ["ab c"])  # the space counts as a character
    assert result.counts == ErrorCounts(0, 1, 0, 5)


def test_ids_are_kept():
    result = wer(["a", "b"], ["a", "c"], ids=["utt-1", "utt-2"])
    assert [e.id for e in result.examples] == ["utt-1", "utt-2"]


def test_bleu_hand_computed():
    # n-gram precisions 5/6, 3/5, 2/4, 1/3; equal lengths so no brevity penalty.
    result = bleu(["the cat sat on the mat"], ["the cat sat on a mat"])
    assert result.precisions == pytest.approx((500 / 6, 60.0, 50.0, 100 / 3))
    assert result.brevity_penalty == 1.0
    assert result.score == pytest.approx(100 * (5 / 6 * 3 / 5 * 2 / 4 * 1 / 3) ** 0.25)
    assert bleu(["a b c d e"], ["a b c d e"]).score == pytest.approx(100.0)
    assert "tok:13a" in result.signature


def test_errors():
    with pytest.raises(ValueError, match="2 references but 1 hypotheses"):
        wer(["a", "b"], ["a"])
    with pytest.raises(TypeError, match="hypothesis 1 is NoneType"):
        wer(["a", "b"], ["a", None])
    with pytest.raises(TypeError, match="not a single string"):
        wer("a b", "a b")
    with pytest.raises(ValueError, match="1 ids for 2 references"):
        wer(["a", "b"], ["a", "b"], ids=["x"])
    with pytest.raises(ValueError, match="unknown normalizer 'french'"):
        get_normalizer("french")


def test_exact_match_compares_normalised_texts():
    result = exact_match(["Yes.", "Paris, France", "two"], ["yes", "paris france!", "2"], ids=["a", "b", "c"])
    assert result.matches == (True, True, False) and result.ids == ("a", "b", "c")
    assert result.accuracy == pytest.approx(2 / 3) and headline(result) == pytest.approx(2 / 3)
    assert exact_match(["two"], ["2"], normalizer="english").matches == (True,)  # numbers standardised
    assert exact_match(["Yes."], ["yes"], normalizer="none").matches == (False,)
    assert exact_match([], []).accuracy == 0.0
    with pytest.raises(ValueError, match="1 ids for 2 references"):
        exact_match(["a", "b"], ["a", "b"], ids=["x"])


def test_every_per_set_metric_scores_and_has_a_headline():
    references, hypotheses = ["the cat sat on the mat", "hello"], ["the cat sat on a mat", "hello"]
    results = {name: fn(references, hypotheses, ids=["a", "b"]) for name, fn in PER_SET_METRICS.items()}
    assert list(results) == ["wer", "cer", "bleu", "exact_match", "transcript_echo"]
    assert headline(results["wer"]) == pytest.approx(1 / 7)
    assert headline(results["bleu"]) == pytest.approx(bleu(references, hypotheses).score)
    assert headline(results["exact_match"]) == 0.5
    assert headline(results["transcript_echo"]) == 1.0  # both within WER 0.5 of their "transcripts"


def test_transcript_echo_counts_hypotheses_close_to_the_transcript():
    transcripts = ["the red car stopped at five", "call anna now", "the cat sleeps", "they ate two apples"]
    hypotheses = ["red", "call anna now", "the cat sleep", "they ate"]  # answered; echoed; echoed (1/3); 2/4
    result = transcript_echo(transcripts, hypotheses, ids=["a", "b", "c", "d"])
    assert result.transcript_wers == pytest.approx((5 / 6, 0.0, 1 / 3, 0.5))
    assert result.echoes == (False, True, True, False)  # strictly below the threshold
    assert result.share == 0.5 and headline(result) == 0.5 and result.ids == ("a", "b", "c", "d")
    assert transcript_echo(transcripts, hypotheses, threshold=0.6).share == 0.75
    assert transcript_echo(["The Cat sleeps."], ["the cat sleeps"]).echoes == (True,)  # normalised first
    assert transcript_echo([], []).share == 0.0
