"""Slow checks at the default size: the full corpus builds within 5 minutes; on-the-fly throughput.

python -m pytest tests/corpus/test_full_build.py -m slow -s     # prints the measured numbers
"""

import time

import pytest

from jaxspeech.corpus.utterances import CorpusConfig, SyntheticUtterances
from jaxspeech.corpus.build import build_corpus

BUDGET_SECONDS = 300.0


@pytest.mark.slow
def test_default_corpus_builds_within_budget(tmp_path):
    config = CorpusConfig()
    summary = build_corpus(tmp_path / "tiny", config, tokenizer_vocab=256, progress=False)
    print(f"\ndefault corpus: {summary.counts} utterances, hours {summary.hours}, built in {summary.seconds:.1f} s")
    assert summary.hours["train"] >= config.train_hours
    assert summary.counts["test"] == config.test_utterances + config.held_out_utterances
    assert summary.seconds <= BUDGET_SECONDS


@pytest.mark.slow
def test_on_the_fly_throughput():
    dataset = SyntheticUtterances(CorpusConfig(), "train")
    dataset[0]  # loads the library and builds the grammar
    count, audio_seconds = 200, 0.0
    start = time.perf_counter()
    for index in range(1, count + 1):
        audio_seconds += dataset[index]["duration"]
    elapsed = time.perf_counter() - start
    print(
        f"\non the fly, one process: {count / elapsed:.1f} utterances/s, "
        f"{audio_seconds / elapsed:.0f} audio seconds/s ({audio_seconds / count:.2f} s per utterance)"
    )
    assert audio_seconds / elapsed > 20  # far above what one training step consumes per second on CPU
