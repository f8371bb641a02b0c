"""200 corrupt files of 15 kinds mixed with 100 valid ones, through the decoder and the pipeline;
then a mutation fuzzer over valid WAV, FLAC and OGG files.

Every kind has one correct outcome, asserted exactly: odd but well-formed audio (other sample
rates, stereo, silence, Vorbis) is delivered, resampled or mixed to mono; damaged or mislabelled
files (a header that claims 2^36 - 1 samples among them) are rejected with their path and reason;
nothing crashes and the counters match. The fuzzer (240 seeded cases by default, 2,400 in the slow
run) finds no error other than ``AudioError`` and no decode that allocates more than 8 MiB.
"""

import collections
import os
import random
import tracemalloc

import numpy as np
import pytest
import soundfile as sf

from jaxspeech.data.audio import load_audio
from jaxspeech.errors import AudioError, DataQualityError, RejectReason
from jaxspeech.data.pipeline import DataPipeline, PipelineConfig
from jaxspeech.data.sources import ManifestSource, decode_record
from jaxspeech.features import mel
from jaxspeech.data.audio import decode_audio_bytes
from jaxspeech.testing import audio_files
from jaxspeech.testing.audio_mutations import BASES, encode, lying_flac, mutate

VALID_KINDS = {  # kind: (count, sample rate, channels, extension, soundfile options)
    "flac_16k": (40, 16000, 1, ".flac", {}),
    "wav_16k": (15, 16000, 1, ".wav", {"subtype": "PCM_16"}),
    "wav_8k": (10, 8000, 1, ".wav", {"subtype": "PCM_16"}),
    "flac_44k": (10, 44100, 1, ".flac", {}),
    "stereo_wav": (10, 16000, 2, ".wav", {"subtype": "FLOAT"}),
    "silence_flac": (5, 16000, 1, ".flac", {}),
    "ogg_16k": (10, 16000, 1, ".ogg", {}),
}

CORRUPT_KINDS = {
    "truncated_wav": RejectReason.CORRUPT,
    "truncated_flac": RejectReason.CORRUPT,
    "truncated_ogg": RejectReason.CORRUPT,
    "header_only_wav": RejectReason.CORRUPT,
    "header_only_flac": RejectReason.CORRUPT,
    "bit_flipped_flac": RejectReason.CORRUPT,
    "lying_header_flac": RejectReason.CORRUPT,  # 7 KB whose STREAMINFO claims 2^36 - 1 samples
    "nan_float_wav": RejectReason.NON_FINITE,
    "zero_byte_file": RejectReason.EMPTY,
    "zero_sample_wav": RejectReason.EMPTY,
    "random_bytes": RejectReason.UNSUPPORTED_FORMAT,
    "text_named_flac": RejectReason.UNSUPPORTED_FORMAT,
    "duration_mismatch": RejectReason.DURATION_MISMATCH,
    "8k_labelled_16k": RejectReason.DURATION_MISMATCH,  # manifest computed as if the file were 16 kHz
    "missing_file": RejectReason.UNREADABLE,
}
NUM_CORRUPT = 200


def _encoded(kind_extension: str, seconds: float, seed: int, rate: int = 16000, **options) -> bytes:
    import io

    buffer = io.BytesIO()
    fmt = {".wav": "WAV", ".flac": "FLAC", ".ogg": "OGG"}[kind_extension]
    sf.write(buffer, audio_files.tone(seconds, rate, seed=seed), rate, format=fmt, **options)
    return buffer.getvalue()


def _write_corrupt(folder: str, kind: str, index: int, rng: np.random.Generator) -> tuple[str, float]:
    """Writes one damaged file of ``kind``; returns (path, manifest duration)."""
    seconds = float(rng.uniform(0.1, 0.55))
    exact = round(seconds * 16000) / 16000
    path = os.path.join(folder, f"bad_{index:03d}_{kind}")
    content: bytes | None
    if kind == "truncated_wav":
        data = _encoded(".wav", seconds, index, subtype="PCM_16")
        content, path = data[: len(data) * 2 // 3], path + ".wav"
    elif kind == "truncated_flac":
        data = _encoded(".flac", seconds, index)
        content, path = data[: len(data) // 2], path + ".flac"
    elif kind == "truncated_ogg":
        data = _encoded(".ogg", seconds, index)
        content, path = data[: len(data) // 2], path + ".ogg"
    elif kind == "header_only_wav":
        content, path = _encoded(".wav", seconds, index, subtype="PCM_16")[:44], path + ".wav"
    elif kind == "header_only_flac":
        content, path = _encoded(".flac", seconds, index)[:42], path + ".flac"  # marker + STREAMINFO
    elif kind == "bit_flipped_flac":
        data = bytearray(_encoded(".flac", seconds, index))
        position = int(rng.integers(len(data) // 2, len(data)))  # inside the audio frames
        data[position] ^= 1 << int(rng.integers(8))
        content, path = bytes(data), path + ".flac"
    elif kind == "lying_header_flac":
        content, path = lying_flac(), path + ".flac"
    elif kind == "nan_float_wav":
        audio = audio_files.tone(seconds, seed=index)
        audio[int(rng.integers(len(audio)))] = np.nan
        path += ".wav"
        sf.write(path, audio, 16000, subtype="FLOAT")
        content = None
    elif kind == "zero_byte_file":
        content, path = b"", path + ".flac"
    elif kind == "zero_sample_wav":
        content, path = _encoded(".wav", 0.0, index, subtype="PCM_16"), path + ".wav"
    elif kind == "random_bytes":
        content, path = rng.bytes(int(rng.integers(10, 4000))), path + ".flac"
    elif kind == "text_named_flac":
        content, path = ("utterance %d: this is a transcript, not audio\n" % index).encode() * 20, path + ".flac"
    elif kind == "duration_mismatch":
        content, path = _encoded(".flac", seconds, index), path + ".flac"
        exact += 0.3
    elif kind == "8k_labelled_16k":
        content, path = _encoded(".wav", seconds, index, rate=8000, subtype="PCM_16"), path + ".wav"
        exact = round(seconds * 8000) / 16000  # the samples counted at the wrong rate
    elif kind == "missing_file":
        content, path = None, path + ".flac"
    else:
        raise AssertionError(kind)
    if content is not None:
        with open(path, "wb") as f:
            f.write(content)
    return path, exact


@pytest.fixture(scope="module")
def fuzz_dataset(tmp_path_factory):
    folder = str(tmp_path_factory.mktemp("fuzz"))
    rng = np.random.default_rng(1234)
    entries, expected = [], {}
    kinds = list(CORRUPT_KINDS)
    for i in range(NUM_CORRUPT):
        kind = kinds[i % len(kinds)]
        path, duration = _write_corrupt(folder, kind, i, rng)
        expected[path] = CORRUPT_KINDS[kind]
        entries.append({"id": f"bad-{i}", "audio_filepath": path, "duration": duration, "text": kind})
    valid = []
    for kind, (count, rate, channels, extension, options) in VALID_KINDS.items():
        for n in range(count):
            path = os.path.join(folder, f"ok_{kind}_{n:02d}{extension}")
            seconds = float(rng.uniform(0.1, 0.55))
            if kind == "silence_flac":
                sf.write(path, np.zeros(round(seconds * rate), np.float32), rate)
                duration = round(seconds * rate) / rate
            else:
                duration = audio_files.write_clip(path, seconds, sample_rate=rate, channels=channels, seed=n, **options)
            valid.append(path)
            entries.append({"id": f"ok-{kind}-{n}", "audio_filepath": path, "duration": duration, "text": kind})
    order = rng.permutation(len(entries))  # interleave good and bad
    manifest = audio_files.write_manifest(os.path.join(folder, "fuzz.jsonl"), [entries[i] for i in order])
    return manifest, expected, valid


def test_fixture_has_the_promised_mix(fuzz_dataset):
    _, expected, valid = fuzz_dataset
    assert len(expected) == 200 and len(valid) == 100
    assert len({path.split("_", 2)[2].rsplit(".", 1)[0] for path in map(os.path.basename, expected)}) == 15


def test_decoder_never_crashes_and_names_every_failure(fuzz_dataset):
    manifest, expected, valid = fuzz_dataset
    source = ManifestSource(manifest)
    outcomes = {}
    for i in range(len(source)):
        record = source[i]
        try:
            audio = decode_record(record)
        except AudioError as e:
            assert e.path == record["audio_filepath"] and e.path in str(e)
            outcomes[e.path] = e.reason
        else:
            assert audio.dtype == np.float32 and audio.ndim == 1 and np.isfinite(audio).all()
            outcomes[record["audio_filepath"]] = "ok"
    assert {p: r for p, r in outcomes.items() if r != "ok"} == expected
    assert sorted(p for p, r in outcomes.items() if r == "ok") == sorted(valid)


def test_pipeline_skips_and_counts_exactly(fuzz_dataset):
    manifest, expected, valid = fuzz_dataset
    # The 90-frame bucket holds every manifest duration (<= 0.85 s), so each file reaches the decoder.
    config = PipelineConfig(bucket_frames=(30, 90), frame_budget=540, n_mels=16, num_epochs=1, max_bad_fraction=1.0)
    pipeline = DataPipeline(ManifestSource(manifest), config, process_index=0, process_count=1)
    delivered, rejects = {}, {}
    with pipeline.iterator() as iterator:
        for host_batch in iterator:
            batch = host_batch.batch
            assert batch.features.shape[2] in (30, 90) and np.isfinite(batch.features).all()
            for entry in host_batch.metadata:
                delivered[entry["audio_filepath"]] = int(batch.feature_lengths[entry["row"], entry["clip"]])
            for reject in host_batch.rejects:
                assert reject.path not in rejects
                rejects[reject.path] = reject.reason
        stats = iterator.stats
    assert rejects == expected
    assert sorted(delivered) == sorted(valid)
    for path, frames in delivered.items():  # resampled / mixed audio, every frame of it
        assert frames == mel.num_frames(len(load_audio(path)))
    counts = collections.Counter(reason.value for reason in expected.values())
    assert stats["rejected"] == dict(counts)
    assert (stats["seen"], stats["delivered"]) == (300, 100)
    for samples in stats["samples"].values():
        assert len(samples) == 3 and all(s.split(" (")[0] in expected for s in samples)


def test_pipeline_stops_when_too_much_is_bad(fuzz_dataset):
    manifest, _, _ = fuzz_dataset
    config = PipelineConfig(
        bucket_frames=(30, 90), frame_budget=540, n_mels=16, num_epochs=1, min_examples_for_bad_check=50
    )
    pipeline = DataPipeline(ManifestSource(manifest), config, process_index=0, process_count=1)
    with pytest.raises(DataQualityError) as info, pipeline.iterator() as iterator:
        for _ in iterator:
            pass
    message = str(info.value)
    assert "over the limit of 5.0%" in message and "corrupt:" in message and "bad_" in message
    assert iterator.counters.seen >= 50


def test_a_header_claiming_more_samples_than_the_file_holds_is_refused_before_allocating(tmp_path):
    path = str(tmp_path / "lying.flac")
    with open(path, "wb") as f:
        f.write(lying_flac())
    tracemalloc.start()
    try:
        with pytest.raises(AudioError) as info:
            load_audio(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert info.value.path == path and info.value.reason == RejectReason.CORRUPT
    assert f"header declares {2**36 - 1} frames" in str(info.value) and path in str(info.value)
    assert peak < 1 << 20


ALLOCATION_BOUND = 8 << 20  # bytes: the valid files decode to < 0.3 MB


def _fuzz(cases: int, seed: int) -> collections.Counter:
    """Decodes ``cases`` mutated files; returns outcome counts. Fails listing every case that raised
    anything but ``AudioError`` or allocated more than ``ALLOCATION_BOUND`` (traced by tracemalloc:
    numpy's buffers included)."""
    bases = [(spec[0], encode(*spec, seconds=0.4, seed=i)) for i, spec in enumerate(BASES)]
    rng = random.Random(seed)
    outcomes, untyped, oversized = collections.Counter(), [], []
    tracemalloc.start()
    try:
        for case in range(cases):
            container, base = bases[case % len(bases)]
            data, mutations = mutate(container, base, rng)
            name = f"fuzz/{case}.{container.lower()}"
            tracemalloc.reset_peak()
            before = tracemalloc.get_traced_memory()[0]
            try:
                audio = decode_audio_bytes(data, name=name)
            except AudioError as e:
                assert e.path == name and name in str(e)
                outcomes[e.reason.value] += 1
            except Exception as e:  # noqa: BLE001 (what the fuzzer looks for)
                untyped.append((case, container, mutations, repr(e)[:200]))
            else:
                assert audio.dtype == np.float32 and audio.ndim == 1 and len(audio) and np.isfinite(audio).all()
                outcomes["ok"] += 1
            peak = tracemalloc.get_traced_memory()[1] - before
            if peak > ALLOCATION_BOUND:
                oversized.append((case, container, mutations, peak))
    finally:
        tracemalloc.stop()
    assert not untyped, f"{len(untyped)} untyped errors, e.g. {untyped[:5]}"
    assert not oversized, f"{len(oversized)} decodes allocated more than {ALLOCATION_BOUND} bytes: {oversized[:5]}"
    assert sum(outcomes.values()) == cases
    return outcomes


def test_fuzzed_headers_and_bodies_give_only_typed_errors_and_bounded_memory():
    outcomes = _fuzz(240, seed=0)
    assert outcomes["ok"] >= 10 and outcomes["corrupt"] >= 100  # both outcomes are exercised


@pytest.mark.slow
def test_fuzzed_headers_and_bodies_2400_cases():
    outcomes = _fuzz(2400, seed=1)
    assert outcomes["ok"] >= 100 and outcomes["corrupt"] >= 1000
