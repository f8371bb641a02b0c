"""The Grain pipeline end to end: order, exactly-once resume, host sharding, bucket shapes, packing."""

import dataclasses
import hashlib
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from jaxspeech.errors import RejectReason
from jaxspeech.data.pipeline import DataPipeline, PipelineConfig
from jaxspeech.data.sources import ManifestSource
from jaxspeech.features import mel
from jaxspeech.testing import audio_files

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# 48 clips of 0.2-1.9 s: 20-190 frames, so every clip fits the 200-frame bucket.
BASE = dict(bucket_frames=(50, 100, 200), frame_budget=400, n_mels=16, seed=0, num_epochs=2)


def _pipeline(manifest, process_index=0, process_count=1, tokenize=None, **overrides):
    config = PipelineConfig(**{**BASE, **overrides})
    return DataPipeline(
        ManifestSource(manifest), config, tokenize=tokenize, process_index=process_index, process_count=process_count
    )


def _stream(iterator, steps=None):
    """Example ids of each delivered batch (up to ``steps`` batches)."""
    ids = []
    for host_batch in iterator:
        example_ids = host_batch.batch.example_ids
        ids.append(example_ids[example_ids >= 0].tolist())
        if steps is not None and len(ids) == steps:
            break
    return ids


def test_order_is_pinned_for_a_seed(small_manifest):
    with _pipeline(small_manifest).iterator() as iterator:
        first = _stream(iterator, steps=4)
    # Pinned by running it once; a change means every run's data order changed (review why).
    assert first[:2] == [[46, 40], [24, 42]]
    assert hashlib.sha256(json.dumps(first).encode()).hexdigest()[:16] == "b7129b6ecd7938e1"


@pytest.mark.parametrize("workers", [0, 2])
def test_resume_in_a_fresh_process_is_exactly_once(small_manifest, tmp_path, workers):
    reference_pipeline = _pipeline(small_manifest)
    with reference_pipeline.iterator() as iterator:
        reference = _stream(iterator)
    steps_per_epoch = reference_pipeline.steps_per_epoch
    assert len(reference) == 2 * steps_per_epoch
    interrupt_at = steps_per_epoch + 3  # resume inside the second epoch

    with _pipeline(small_manifest, num_workers=workers).iterator() as iterator:
        before = _stream(iterator, steps=interrupt_at)
        state = iterator.get_state()
    state_path = str(tmp_path / "state.json")
    with open(state_path, "w") as f:
        json.dump(state, f)  # the state must survive JSON, as in an orbax checkpoint

    output = str(tmp_path / "rest.json")
    arguments = {
        "manifest": small_manifest,
        "config": {**BASE, "num_workers": workers},
        "state": state_path,
        "output": output,
    }
    environment = {**os.environ, "PYTHONPATH": REPO_ROOT}
    subprocess.run(
        [sys.executable, "-m", "tests.data.resume_child", json.dumps(arguments)],
        cwd=REPO_ROOT,
        env=environment,
        check=True,
        timeout=300,
    )
    with open(output) as f:
        rest = json.load(f)
    assert before + rest["ids"] == reference
    assert rest["steps"] == list(range(interrupt_at, 2 * steps_per_epoch))
    assert rest["stats"]["delivered"] == 2 * 48 and rest["stats"]["rejected"] == {}

    # The state holds no worker layout: it also restores under another worker count.
    with _pipeline(small_manifest, num_workers=0).iterator(state) as iterator:
        assert _stream(iterator, steps=2) == reference[interrupt_at : interrupt_at + 2]


def test_state_from_a_different_plan_is_refused(small_manifest):
    with _pipeline(small_manifest).iterator() as iterator:
        next(iterator)
        state = iterator.get_state()
    for changed in (dict(seed=1), dict(frame_budget=800), dict(bucket_frames=(100, 200))):
        with pytest.raises(ValueError, match="different plan"):
            _pipeline(small_manifest, **changed).iterator(state)
    with pytest.raises(ValueError, match="different plan"):
        _pipeline(small_manifest, process_index=0, process_count=2).iterator(state)


@pytest.mark.parametrize("hosts", [2, 3])
def test_hosts_see_disjoint_examples_that_cover_the_dataset(small_manifest, hosts):
    per_host, buckets = [], []
    for index in range(hosts):
        with _pipeline(small_manifest, process_index=index, process_count=hosts, num_epochs=1).iterator() as iterator:
            batches = list(iterator)
        per_host.append([i for b in batches for i in b.batch.example_ids.ravel() if i >= 0])
        buckets.append([b.bucket for b in batches])
    assert all(b == buckets[0] for b in buckets)  # same static shape on every host at every step
    flat = [i for ids in per_host for i in ids]
    assert len(flat) == len(set(flat)) == 48 and set(flat) == set(range(48))


def test_bucket_shapes_are_static_and_nothing_is_truncated(small_manifest):
    pipeline = _pipeline(small_manifest, bucket_frames=(40, 80, 150), frame_budget=300, num_epochs=1)
    source = pipeline.source
    frames_of = {i: int(mel.num_frames(round(source[i]["duration"] * 16000))) for i in range(len(source))}
    too_long = {i for i, f in frames_of.items() if f > 150}
    assert too_long  # the fixture has clips over 1.5 s
    with pipeline.iterator() as iterator:
        batches = list(iterator)
        stats = iterator.stats
    shapes = {(b.batch.features.shape, b.batch.tokens.shape) for b in batches}
    assert len(shapes) <= 3
    expected = {(s.batch_size, s.clips, s.frames, s.n_mels) for s in pipeline.batch_shapes()}
    assert {shape[0] for shape in shapes} <= expected
    delivered = {}
    for b in batches:
        for (row, clip), example_id in np.ndenumerate(b.batch.example_ids):
            if example_id >= 0:
                delivered[int(example_id)] = int(b.batch.feature_lengths[row, clip])
                assert b.batch.weights[row] == 1
    assert delivered == {i: f for i, f in frames_of.items() if i not in too_long}  # every frame kept
    assert stats["rejected"] == {"too_long": len(too_long)} and stats["seen"] == 48
    rejected = {r.example_id for b in batches for r in b.rejects}
    assert rejected == too_long


def test_tokens_packing_and_metadata(small_manifest):
    pipeline = _pipeline(
        small_manifest,
        tokenize=audio_files.toy_tokenize,
        clips_per_row=(3, 2, 1),
        max_tokens=(60, 80, 100),
        num_epochs=1,
    )
    assert [(s.batch_size, s.clips, s.tokens) for s in pipeline.batch_shapes()] == [(2, 3, 60), (2, 2, 80), (2, 1, 100)]
    packed_rows = 0
    with pipeline.iterator() as iterator:
        for host_batch in iterator:
            batch = host_batch.batch
            for entry in host_batch.metadata:
                row, clip = entry["row"], entry["clip"]
                assert batch.example_ids[row, clip] == entry["example_id"]
                expected = audio_files.toy_tokenize({"text": entry["text"]}, (int(batch.feature_lengths[row, clip]),))
                segment = batch.segment_ids[row] == clip + 1
                np.testing.assert_array_equal(batch.tokens[row, segment], expected.tokens)
                np.testing.assert_array_equal(batch.positions[row, segment], np.arange(len(expected.tokens)))
                np.testing.assert_array_equal(batch.loss_mask[row, segment], expected.loss_mask)
            packed_rows += int(((batch.example_ids >= 0).sum(axis=1) > 1).sum())
        stats = iterator.stats
    assert packed_rows > 0
    # Rows are packed by planned token counts, so every example finds its place.
    assert stats["delivered"] == 48 and stats["rejected"] == {}


def test_over_long_token_sequences_are_rejected_not_truncated(small_manifest):
    pipeline = _pipeline(small_manifest, tokenize=audio_files.toy_tokenize, max_tokens=40, num_epochs=1)
    with pipeline.iterator() as iterator:
        batches = list(iterator)
        stats = iterator.stats
    lengths = {}
    for i in range(48):
        record = pipeline.source[i]
        frames = int(mel.num_frames(round(record["duration"] * 16000)))
        lengths[i] = len(audio_files.toy_tokenize(record, (frames,)).tokens)
    assert stats["rejected"] == {"too_many_tokens": sum(n > 40 for n in lengths.values())} != {}
    delivered = [int(i) for b in batches for i in b.batch.example_ids.ravel() if i >= 0]
    assert sorted(delivered) == sorted(i for i, n in lengths.items() if n <= 40)
    assert all(
        r.reason == RejectReason.TOO_MANY_TOKENS and r.path.endswith(".flac") for b in batches for r in b.rejects
    )


def test_raw_audio_mode_carries_waveforms(small_manifest):
    pipeline = _pipeline(small_manifest, compute_features_on_host=False, num_epochs=1, shuffle=False)
    host_batch = next(iter(pipeline))
    batch = host_batch.batch
    assert batch.features is None and batch.audio.shape[:2] == batch.example_ids.shape
    assert batch.audio.shape[2] == 50 * mel.HOP_LENGTH  # the first unshuffled batch is bucket 0
    entry = host_batch.metadata[0]
    from jaxspeech.data.audio import load_audio

    audio = load_audio(entry["audio_filepath"])
    np.testing.assert_array_equal(batch.audio[entry["row"], entry["clip"], : len(audio)], audio)
    assert pipeline.batch_shapes()[0].audio_samples == 50 * mel.HOP_LENGTH


def test_read_threads_do_not_change_the_stream(small_manifest):
    with _pipeline(small_manifest, num_epochs=1).iterator() as iterator:
        serial = _stream(iterator)
    with _pipeline(small_manifest, num_epochs=1, read_threads=3, prefetch=4).iterator() as iterator:
        threaded = _stream(iterator)
    assert serial == threaded


def test_config_validation():
    with pytest.raises(ValueError, match="strictly increasing"):
        PipelineConfig(bucket_frames=(100, 100))
    with pytest.raises(ValueError, match="max_tokens has 2 entries for 3 buckets"):
        PipelineConfig(bucket_frames=(1, 2, 3), max_tokens=(5, 6))
    with pytest.raises(ValueError, match="16000 Hz"):
        PipelineConfig(sample_rate=8000)
    config = PipelineConfig(bucket_frames=(10, 20), max_tokens=7, clips_per_row=2)
    assert config.max_tokens == (7, 7) and config.clips_per_row == (2, 2)
    assert dataclasses.replace(config, seed=5).max_tokens == (7, 7)


def test_on_the_fly_synthetic_source():
    """Records carrying audio arrays (the eSpeak corpus renders them per index) go through as well."""
    from jaxspeech.corpus.utterances import SyntheticUtterances

    source = SyntheticUtterances(split="train", size=8)
    config = PipelineConfig(bucket_frames=(300, 600), frame_budget=1200, n_mels=16, num_epochs=1)
    pipeline = DataPipeline(source, config, tokenize=audio_files.toy_tokenize, process_index=0, process_count=1)
    with pipeline.iterator() as iterator:
        batches = list(iterator)
        stats = iterator.stats
    ids = sorted(int(i) for b in batches for i in b.batch.example_ids.ravel() if i >= 0)
    assert ids == list(range(8)) and stats["rejected"] == {}
    entry = batches[0].metadata[0]
    assert entry["id"] == source[entry["example_id"]]["id"] and entry["text"]


def test_planned_rows_per_bucket_replace_the_frame_budget(small_manifest):
    pipeline = _pipeline(small_manifest, bucket_rows=(6, 3, 2), num_epochs=1)
    assert [s.batch_size for s in pipeline.batch_shapes()] == [6, 3, 2]
    with pipeline.iterator() as iterator:
        sizes = {b.batch.features.shape[2]: b.batch.features.shape[0] for b in iterator}
    assert sizes == {50: 6, 100: 3, 200: 2}
    with pytest.raises(ValueError, match="bucket_rows .* one positive row count per bucket"):
        PipelineConfig(bucket_frames=(10, 20), bucket_rows=(4,))
