"""Packed text batches (``data/text_batches.py``): layout, exact resume, limits and the text sources."""

import json

import numpy as np
import pytest

from jaxspeech.corpus.sentences import SentenceStream, split_of
from jaxspeech.data.text_batches import Interleaved, ManifestTexts, ShuffledPasses, TextPipeline

WORDS = ["a", "bb", "ccc", "dddd", "eeeee", "ffffff", "g", "hh"]


def encode(text: str) -> list[int]:
    """BOS (1) + one id per character + EOS (2)."""
    return [1, *(ord(c) for c in text), 2]


def test_texts_are_packed_in_order_with_segments_positions_and_targets():
    pipeline = TextPipeline(WORDS, encode, rows=2, length=8, limit=len(WORDS))
    batches = list(pipeline.iterator())
    first = batches[0]
    # Row 0: "a" (3 ids) + "bb" (4 ids); "ccc" (5) does not fit the 1 left, so it opens row 1.
    assert first.tokens[0].tolist() == [1, 97, 2, 1, 98, 98, 2, 0]
    assert first.segment_ids[0].tolist() == [1, 1, 1, 2, 2, 2, 2, 0]
    assert first.positions[0].tolist() == [0, 1, 2, 0, 1, 2, 3, 0]
    assert first.loss_mask[0].tolist() == [0, 1, 1, 0, 1, 1, 1, 0]  # no target at a text's first token
    assert first.tokens[1].tolist()[:5] == encode("ccc")
    # "dddd" (6 ids) fits neither the rest of row 1 nor a row past the last: it opens the next batch.
    assert batches[1].tokens[0].tolist()[:6] == encode("dddd")
    decoded = [
        "".join(chr(t) for t in row[s == k] if t > 2)
        for b in batches
        for row, s in zip(b.tokens, b.segment_ids)
        for k in range(1, s.max() + 1)
    ]
    assert decoded == [w for w in WORDS if len(w) + 2 <= 8]  # every text once, in order; too long ones skipped
    assert len(batches) == 3 and batches[2].tokens[1].tolist() == encode("g") + encode("hh") + [0]


def test_too_long_texts_are_skipped_and_counted():
    with TextPipeline(["x" * 10, "ok"], encode, rows=1, length=8, limit=2).iterator() as batches:
        batch = next(batches)
        assert batch.tokens[0, :4].tolist() == encode("ok") and batches.get_state()["too_long"] == 1
        with pytest.raises(StopIteration):
            next(batches)


def test_resume_from_a_saved_state_gives_the_same_batches():
    stream = ShuffledPasses(WORDS, seed=3)
    pipeline = TextPipeline(stream, encode, rows=2, length=8)
    iterator = pipeline.iterator()
    for _ in range(3):
        next(iterator)
    state = json.loads(json.dumps(iterator.get_state()))
    expected = [next(iterator) for _ in range(4)]
    resumed = pipeline.iterator(state)
    for batch in expected:
        assert np.array_equal(next(resumed).tokens, batch.tokens)
    other = TextPipeline(ShuffledPasses(WORDS, seed=4), encode, rows=2, length=8)
    with pytest.raises(ValueError, match="other texts or batch shape"):
        other.iterator(state)


def test_shuffled_passes_and_interleaving():
    stream = ShuffledPasses(WORDS, seed=0)
    first, second = [stream[n] for n in range(8)], [stream[n] for n in range(8, 16)]
    assert sorted(first) == sorted(WORDS) == sorted(second) and first != second
    both = Interleaved(SentenceStream(seed=0), stream)
    assert [both[n] for n in (1, 3, 5)] == first[:3]
    assert both[0] == SentenceStream(seed=0)[0] and both[2] == SentenceStream(seed=0)[1]


def test_sentence_stream_stays_in_its_split():
    train, dev = SentenceStream(seed=0), SentenceStream(seed=0, split="dev")
    assert all(split_of(train[n]) == "train" for n in range(50))
    assert all(split_of(dev[n]) == "dev" for n in range(20))
    assert train[7] == SentenceStream(seed=0)[7] != SentenceStream(seed=1)[7]


def test_manifest_texts_name_the_bad_line(tmp_path):
    good = tmp_path / "good.jsonl"
    good.write_text('{"text": "one two"}\n\n{"text": "three", "id": "x"}\n')
    assert ManifestTexts([str(good)]).texts == ["one two", "three"]
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "fine"}\n{"id": 3}\n')
    with pytest.raises(ValueError, match=r"bad.jsonl:2: a text manifest record needs a non-empty 'text'"):
        ManifestTexts([str(bad)])
