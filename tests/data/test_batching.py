"""Bucketing arithmetic, the global batch plan, packing and array assembly (no audio files)."""

import numpy as np
import pytest

from jaxspeech.data import batching
from jaxspeech.errors import RejectReason
from jaxspeech.features import mel


def test_frames_follow_the_log_mel_hop():
    # 1 s = 16000 samples = 100 frames; 10 ms per frame, partial frames do not count.
    frames = batching.frames_for_durations(np.array([1.0, 0.0099, 0.01, 2.345, np.nan, -1.0]))
    assert frames.tolist() == [100, 0, 1, 234, -1, -1]
    # A duration rounded down by < 0.05 ms (e.g. 4800 samples written as 0.29996 s) keeps its last frame.
    assert batching.frames_for_durations(np.array([0.29996, 0.29994])).tolist() == [30, 29]


def test_assign_buckets_takes_the_smallest_that_fits():
    ids = batching.assign_buckets(np.array([0, 100, 101, 200, 300, 301, -1]), (100, 200, 300))
    assert ids.tolist() == [0, 0, 1, 1, 2, -1, -1]


def test_rows_per_bucket_follow_the_frame_budget():
    assert batching.rows_per_bucket((100, 200, 300, 1000), (1, 1, 1, 1), 1000) == (10, 5, 3, 1)
    assert batching.rows_per_bucket((100, 200, 300, 1000), (1, 1, 1, 1), 1000, multiple=4) == (8, 4, 4, 4)
    assert batching.rows_per_bucket((100, 200), (4, 1), 1600) == (4, 8)


def _plan(frames, process_index=0, process_count=1, **kwargs):
    options = dict(seed=3, shuffle=True, num_epochs=2)
    options.update(kwargs)
    return batching.BatchPlan(
        frames, (100, 200, 400), (4, 2, 1), process_index=process_index, process_count=process_count, **options
    )


FRAMES = np.random.default_rng(0).integers(1, 460, size=57)


def test_each_epoch_covers_every_fitting_example_once_in_a_new_order():
    plan = _plan(FRAMES)
    fitting = set(np.flatnonzero(FRAMES <= 400).tolist())
    orders = []
    for epoch in range(2):
        steps = [plan.step(epoch * plan.steps_per_epoch + s) for s in range(plan.steps_per_epoch)]
        ids = [i for step in steps for i in step.example_ids]
        assert sorted(ids) == sorted(fitting)
        for step in steps:
            assert all(FRAMES[i] <= (100, 200, 400)[step.bucket] for i in step.example_ids)
            assert len(step.example_ids) <= (4, 2, 1)[step.bucket]
        orders.append(ids)
    assert orders[0] != orders[1]
    too_long = sorted(i for i, reason, _ in plan.step(0).plan_rejects if reason == RejectReason.TOO_LONG)
    assert too_long == np.flatnonzero(FRAMES > 400).tolist()
    with pytest.raises(IndexError):
        plan.step(plan.num_steps)


def test_plan_is_a_pure_function_of_the_seed():
    a, b, c = _plan(FRAMES), _plan(FRAMES), _plan(FRAMES, seed=4)
    steps = range(a.steps_per_epoch)
    assert [a.step(s) for s in steps] == [b.step(s) for s in reversed(steps)][::-1]
    assert [a.step(s).example_ids for s in steps] != [c.step(s).example_ids for s in steps]


def test_unshuffled_plan_keeps_source_order_within_buckets():
    plan = _plan(FRAMES, shuffle=False)
    ids = [plan.step(s).example_ids for s in range(plan.steps_per_epoch)]
    flat = [i for batch in ids for i in batch]
    buckets = batching.assign_buckets(FRAMES, (100, 200, 400))
    assert flat == [i for b in range(3) for i in np.flatnonzero(buckets == b)]


@pytest.mark.parametrize("count", [1, 2, 3])
def test_hosts_split_each_global_batch_disjointly_and_together_cover_the_data(count):
    plans = [_plan(FRAMES, process_index=i, process_count=count) for i in range(count)]
    assert len({p.steps_per_epoch for p in plans}) == 1
    seen = []
    for step in range(plans[0].steps_per_epoch):
        shares = [p.step(step) for p in plans]
        assert len({s.bucket for s in shares}) == 1  # every host compiles the same shape at each step
        seen.extend(i for s in shares for i in s.example_ids)
    assert sorted(seen) == sorted(np.flatnonzero(FRAMES <= 400).tolist())
    rejects = [r[0] for p in plans for r in p.step(0).plan_rejects]
    assert sorted(rejects) == np.flatnonzero(FRAMES > 400).tolist()


def test_drop_remainder_drops_only_partial_global_batches():
    frames = np.array([50] * 10 + [150] * 3)
    plan = batching.BatchPlan(frames, (100, 200), (4, 2), seed=0, shuffle=False, drop_remainder=True, num_epochs=1)
    assert [len(plan.step(s).example_ids) for s in range(plan.steps_per_epoch)] == [4, 4, 2]
    with pytest.raises(ValueError, match="no batch can be formed"):
        batching.BatchPlan(np.array([500]), (100,), (4,), seed=0, shuffle=False)


def test_plan_survives_pickling_with_its_cache():
    import pickle

    plan = _plan(FRAMES)
    plan.step(0)
    clone = pickle.loads(pickle.dumps(plan))
    assert [clone.step(s) for s in range(5)] == [plan.step(s) for s in range(5)]


def test_pack_rows_pairs_long_with_short_within_the_limits():
    lengths = np.array([5, 5, 5, 9, 2, 4, 12, 13])
    rows = batching.pack_rows(range(7), lengths, clips=3, max_tokens=12)
    assert rows.tolist() == [[6, -1, -1], [3, 4, -1], [0, 5, -1], [1, 2, -1]]
    for row in rows:
        members = row[row >= 0]
        assert len(members) <= 3 and lengths[members].sum() <= 12
    assert batching.pack_rows([2, 0, 1], np.zeros(3, np.int64), clips=2, max_tokens=0).tolist() == [[0, 2], [1, -1]]


def test_packed_plan_covers_each_example_once_and_rejects_unpackable_ones():
    frames = np.random.default_rng(1).integers(1, 200, size=40)
    tokens = np.random.default_rng(2).integers(3, 30, size=40)
    plan = batching.BatchPlan(
        frames,
        (100, 200),
        (2, 2),
        clips_per_row=(3, 1),
        max_tokens=(25, 50),
        token_lengths=tokens,
        seed=0,
        shuffle=True,
        num_epochs=1,
    )
    small = frames <= 100
    seen = []
    for s in range(plan.steps_per_epoch):
        step = plan.step(s)
        assert len(step.rows) <= 2
        for row in step.rows:
            assert len(row) <= (3, 1)[step.bucket]
            if step.bucket == 0:
                assert tokens[list(row)].sum() <= 25
        seen += step.example_ids
    unpackable = np.flatnonzero(small & (tokens > 25)).tolist()
    assert sorted(seen) == sorted(set(range(40)) - set(unpackable))
    assert [(i, r) for i, r, _ in plan.plan_rejects] == [(i, RejectReason.TOO_MANY_TOKENS) for i in unpackable]
    assert sum(1 for rows in plan.rows[0] if (rows >= 0).sum() > 1) > 0  # something was packed


def _example(example_id, seconds, tokens):
    audio = np.random.default_rng(example_id).uniform(-0.5, 0.5, int(seconds * 16000)).astype(np.float32)
    return batching.LoadedExample(
        example_id,
        audio,
        int(mel.num_frames(len(audio))),
        np.arange(10, 10 + tokens, dtype=np.int32),
        np.ones(tokens, np.float32),
    )


def test_assemble_packs_segments_with_restarting_positions():
    examples = [_example(7, 0.305, 3), _example(8, 0.2, 4), _example(9, 0.1, 2)]
    arrays = batching.assemble_arrays(
        examples,
        [(0, 0), (0, 1), (1, 0)],
        rows=3,
        clips=2,
        frames=40,
        tokens=8,
        n_mels=16,
        features_on_host=True,
        pad_token_id=-5,
    )
    assert arrays["example_ids"].tolist() == [[7, 8], [9, -1], [-1, -1]]
    assert arrays["feature_lengths"].tolist() == [[30, 20], [10, 0], [0, 0]]
    assert arrays["weights"].tolist() == [1, 1, 0]
    assert arrays["segment_ids"].tolist() == [[1, 1, 1, 2, 2, 2, 2, 0], [1, 1, 0, 0, 0, 0, 0, 0], [0] * 8]
    assert arrays["positions"].tolist() == [[0, 1, 2, 0, 1, 2, 3, 0], [0, 1, 0, 0, 0, 0, 0, 0], [0] * 8]
    assert arrays["tokens"][0].tolist() == [10, 11, 12, 10, 11, 12, 13, -5]
    # The first token of every segment has nothing in its own segment to be predicted from.
    assert arrays["loss_mask"].tolist()[:2] == [[0, 1, 1, 0, 1, 1, 1, 0], [0, 1, 0, 0, 0, 0, 0, 0]]
    assert arrays["audio"] is None and arrays["features"].shape == (3, 2, 40, 16)
    # Valid frames equal the log-mel of the clip alone; the padding adds nothing to them.
    alone = mel.log_mel_spectrogram(examples[0].audio, 16)
    np.testing.assert_allclose(arrays["features"][0, 0, :30], alone, atol=1e-5)
    assert np.all(arrays["features"][0, 0, 30:] == mel.padding_value(alone))  # Whisper's silence
    assert np.all(arrays["features"][2] == 0)


def test_assemble_raw_audio_keeps_every_sample_of_valid_frames():
    example = _example(1, 0.2057, 0)  # 3291 samples: 20 frames + a 91-sample tail
    arrays = batching.assemble_arrays(
        [example], [(0, 0)], rows=1, clips=1, frames=25, tokens=0, n_mels=80, features_on_host=False
    )
    assert arrays["features"] is None and arrays["audio"].shape == (1, 1, 25 * 160)
    np.testing.assert_array_equal(arrays["audio"][0, 0, : len(example.audio)], example.audio)
    assert arrays["feature_lengths"].tolist() == [[20]]
