"""Scores per evaluation set: ``eval.metrics`` / ``eval.set_metrics`` (WER, CER, BLEU, exact match)
against each example's answer, their per-example records, and unknown names refused by key."""

import pytest

from jaxspeech.cli import main
from jaxspeech.data.sources import answer_text
from jaxspeech.errors import ConfigError
from jaxspeech.evals.metrics import BleuResult, ErrorRateResult, ExactMatchResult
from jaxspeech.recipes.config import EvalConfig
from jaxspeech.recipes.evaluate import example_records, score


def decoded_set():
    """Decoded rows as ``decode_manifest`` gives them: a translation-like set whose records carry a
    ``target`` besides their transcript, one rejected clip."""
    records = [
        {"id": "a", "text": "hallo welt", "target": "hello world", "hypothesis": "hello world"},
        {"id": "b", "text": "guten morgen", "target": "good morning", "hypothesis": "good evening"},
        {"id": "c", "text": "ja", "hypothesis": "ja"},  # no target: the transcript is the answer
    ]
    rows = [{**r, "reference": answer_text(r)} for r in records]
    return rows + [{"id": "d", "reference": "", "hypothesis": "", "rejected": "empty"}]


def test_the_reference_is_the_target_else_the_text():
    assert answer_text({"text": "hallo", "target": "hello"}) == "hello"
    assert answer_text({"text": "hallo", "target": ""}) == "hallo"
    assert answer_text({"text": "hallo"}) == "hallo"


def test_score_computes_each_metric_with_its_own_result():
    scores = score(decoded_set(), "ast", ("bleu", "exact_match", "wer"))
    assert list(scores) == ["ast BLEU", "ast EXACT_MATCH", "ast WER"]
    assert isinstance(scores["ast BLEU"], BleuResult)
    assert scores["ast BLEU"].precisions[:2] == (80.0, 50.0)  # 4 of 5 words, 1 of 2 bigrams of the targets
    assert isinstance(scores["ast EXACT_MATCH"], ExactMatchResult)
    assert scores["ast EXACT_MATCH"].matches == (True, False, True)  # against the targets; rejected left out
    assert isinstance(scores["ast WER"], ErrorRateResult) and scores["ast WER"].counts.errors == 1
    assert scores["ast WER"].counts.reference_length == 5


def test_per_example_records_carry_every_per_example_score():
    decoded = decoded_set()
    scores = score(decoded, "ast", ("bleu", "exact_match", "wer", "cer"))
    records = {r["id"]: r for r in example_records(decoded, scores, "ast")}
    b = records["b"]
    assert (b["reference"], b["text"], b["exact_match"]) == ("good morning", "guten morgen", False)
    assert b["wer"] == 0.5 and b["substitutions"] == 1 and b["reference_words"] == 2  # S/D/I: of the WER
    assert b["cer"] == pytest.approx(scores["ast CER"].examples[1].counts.rate) and b["cer"] != b["wer"]
    assert records["a"]["exact_match"] is True and "BLEU" not in str(sorted(b))
    assert records["d"] == decoded[-1]  # a rejected clip: as decoded
    only_bleu = example_records(decoded, score(decoded, "ast", ("bleu",)), "ast")
    assert only_bleu == decoded  # a corpus score adds nothing per example


def test_transcript_echo_scores_against_the_transcript_not_the_answer():
    rows = [
        {"id": "a", "text": "the red car stopped", "target": "red", "hypothesis": "red"},
        {"id": "b", "text": "call anna now", "target": "anna", "hypothesis": "call anna now"},
        {"id": "c", "text": "the cat sleeps", "target": "fast", "hypothesis": "slow", "held_out_voice": True},
    ]
    decoded = [{**r, "reference": answer_text(r), "held_out_voice": r.get("held_out_voice", False)} for r in rows]
    scores = score(decoded, "test_color", ("exact_match", "transcript_echo"))
    assert scores["test_color EXACT_MATCH"].matches == (True, False, False)
    assert scores["test_color TRANSCRIPT_ECHO"].echoes == (False, True, False)
    assert scores["test_color/train_voices TRANSCRIPT_ECHO"].share == 0.5
    assert scores["test_color/held_out_voice TRANSCRIPT_ECHO"].share == 0.0
    records = {r["id"]: r for r in example_records(decoded, scores, "test_color")}
    assert (records["b"]["transcript_echo"], records["b"]["transcript_wer"], records["b"]["exact_match"]) == (
        True,
        0.0,
        False,
    )


def test_set_metrics_override_the_metrics_of_named_sets():
    config = EvalConfig(metrics=("wer",), set_metrics={"ast_test": ("bleu", "exact_match")})
    assert config.metrics_of("ast_test") == ("bleu", "exact_match") and config.metrics_of("test") == ("wer",)
    assert EvalConfig(metrics="bleu").metrics == ("bleu",)


@pytest.mark.parametrize(
    "values, key",
    [
        ({"metrics": ("wer", "blue")}, "eval.metrics"),
        ({"metrics": ()}, "eval.metrics"),
        ({"set_metrics": {"ast_test": ("exact",)}}, "eval.set_metrics.ast_test"),
    ],
)
def test_unknown_metric_names_are_named_with_their_key(values, key):
    with pytest.raises(
        ConfigError,
        match=rf"^{key}: unknown metric\(s\) .*expected names of \['wer', 'cer', 'bleu', 'exact_match', 'transcript_echo'\]",
    ):
        EvalConfig(**values)


def test_eval_cli_refuses_an_unknown_metric_before_reading_the_run(tmp_path, capsys):
    assert main(["eval", "--workdir", str(tmp_path / "nowhere"), "--metrics", "wer,bleu4"]) == 2
    assert "--metrics: unknown metric(s) ['bleu4']" in capsys.readouterr().err
