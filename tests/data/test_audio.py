"""load_audio / decode_audio_bytes / prepare_waveform: decoding, conversion and validation."""

import os

import numpy as np
import pytest
import soundfile as sf
import soxr

from jaxspeech.data.audio import decode_audio_bytes, load_audio, prepare_waveform
from jaxspeech.errors import AudioError, RejectReason
from jaxspeech.testing import audio_files


@pytest.mark.parametrize("extension,kwargs", [(".wav", {"subtype": "PCM_16"}), (".flac", {}), (".ogg", {})])
def test_decodes_each_container_to_mono_float32(tmp_path, extension, kwargs):
    path = str(tmp_path / f"clip{extension}")
    duration = audio_files.write_clip(path, 0.5, **kwargs)
    audio = load_audio(path, expected_duration=duration)
    assert audio.dtype == np.float32 and audio.ndim == 1
    assert audio.shape == (8000,)
    reference = audio_files.tone(0.5)
    tolerance = 0.05 if extension == ".ogg" else 1e-4  # Vorbis is lossy; PCM_16 quantises to 3e-5
    assert np.abs(audio - reference).max() < tolerance


def test_stereo_is_averaged_to_mono(tmp_path):
    path = str(tmp_path / "stereo.wav")
    audio_files.write_clip(path, 0.25, channels=2, subtype="FLOAT")
    expected = audio_files.tone(0.25, channels=2).mean(axis=1)
    np.testing.assert_allclose(load_audio(path), expected, atol=1e-7)


@pytest.mark.parametrize("rate", [8000, 22050, 44100])
def test_other_rates_are_resampled_with_soxr(tmp_path, rate):
    path = str(tmp_path / f"r{rate}.wav")
    duration = audio_files.write_clip(path, 0.5, sample_rate=rate, subtype="FLOAT")
    audio = load_audio(path, expected_duration=duration)
    source = audio_files.tone(0.5, sample_rate=rate)
    np.testing.assert_allclose(audio, soxr.resample(source, rate, 16000, quality="HQ"), atol=1e-6)
    assert abs(len(audio) - 8000) <= 1


def test_silence_is_valid(tmp_path):
    path = str(tmp_path / "silence.flac")
    sf.write(path, np.zeros(1600, np.float32), 16000)
    assert np.array_equal(load_audio(path, expected_duration=0.1), np.zeros(1600, np.float32))


def test_duration_check_uses_the_tolerance(tmp_path):
    path = str(tmp_path / "one_second.flac")
    audio_files.write_clip(path, 1.0)
    load_audio(path, expected_duration=1.024)  # 24 ms off: accepted
    with pytest.raises(AudioError) as info:
        load_audio(path, expected_duration=1.03)
    assert info.value.reason == RejectReason.DURATION_MISMATCH and info.value.path == path
    assert "1.000 s" in str(info.value) and "1.030 s" in str(info.value)


def test_max_seconds_rejects_or_chunks(tmp_path):
    path = str(tmp_path / "long.flac")
    audio_files.write_clip(path, 2.5)
    with pytest.raises(AudioError) as info:
        load_audio(path, max_seconds=2.0)
    assert info.value.reason == RejectReason.TOO_LONG
    chunks = load_audio(path, max_seconds=1.0, over_length="chunk")
    assert [len(c) for c in chunks] == [16000, 16000, 8000]
    np.testing.assert_array_equal(np.concatenate(chunks), load_audio(path))
    assert [len(c) for c in load_audio(path, max_seconds=3.0, over_length="chunk")] == [40000]


def test_bad_options_raise_value_errors(tmp_path):
    path = str(tmp_path / "a.flac")
    audio_files.write_clip(path, 0.1)
    with pytest.raises(ValueError, match="needs max_seconds"):
        load_audio(path, over_length="chunk")
    with pytest.raises(ValueError, match="over_length"):
        load_audio(path, over_length="truncate")
    with pytest.raises(ValueError, match="max_seconds must be positive"):
        load_audio(str(tmp_path / "missing.flac"), max_seconds=0)  # options are checked before the file


def _reason(call) -> RejectReason:
    with pytest.raises(AudioError) as info:
        call()
    return info.value.reason


def test_each_failure_has_its_reason_and_names_the_file(tmp_path):
    good = str(tmp_path / "good.wav")
    audio_files.write_clip(good, 0.5, subtype="PCM_16")
    data = open(good, "rb").read()
    cases = {
        "missing.flac": (None, RejectReason.UNREADABLE),
        "empty.flac": (b"", RejectReason.EMPTY),
        "random.flac": (np.random.default_rng(0).bytes(3000), RejectReason.UNSUPPORTED_FORMAT),
        "text.flac": (b"not audio at all\n" * 40, RejectReason.UNSUPPORTED_FORMAT),
        "half.wav": (data[: len(data) // 2], RejectReason.CORRUPT),
        "header_only.wav": (data[:44], RejectReason.CORRUPT),
    }
    for name, (content, reason) in cases.items():
        path = str(tmp_path / name)
        if content is not None:
            with open(path, "wb") as f:
                f.write(content)
        with pytest.raises(AudioError) as info:
            load_audio(path)
        assert info.value.reason == reason, name
        assert info.value.path == path and path in str(info.value)
    nan_path = str(tmp_path / "nan.wav")
    sf.write(nan_path, np.array([0.0, np.nan, 0.5], np.float32), 16000, subtype="FLOAT")
    assert _reason(lambda: load_audio(nan_path)) == RejectReason.NON_FINITE
    empty_wav = str(tmp_path / "zero_samples.wav")
    sf.write(empty_wav, np.zeros(0, np.float32), 16000)
    assert _reason(lambda: load_audio(empty_wav)) == RejectReason.EMPTY


def test_corrupt_flac_errors_are_wrapped_with_the_path(tmp_path):
    path = str(tmp_path / "clip.flac")
    audio_files.write_clip(path, 0.5)
    data = bytearray(open(path, "rb").read())
    truncated = str(tmp_path / "truncated.flac")
    with open(truncated, "wb") as f:
        f.write(data[: len(data) // 2])
    flipped = str(tmp_path / "flipped.flac")
    data[len(data) // 2] ^= 0x10
    with open(flipped, "wb") as f:
        f.write(data)
    for bad in (truncated, flipped):
        with pytest.raises(AudioError) as info:
            load_audio(bad)
        assert info.value.reason == RejectReason.CORRUPT and bad in str(info.value)


def test_decode_audio_bytes_matches_load_audio(tmp_path):
    path = str(tmp_path / "clip.flac")
    audio_files.write_clip(path, 0.3, sample_rate=22050)
    from_file = load_audio(path)
    from_bytes = decode_audio_bytes(open(path, "rb").read(), name="record-7")
    np.testing.assert_array_equal(from_file, from_bytes)
    with pytest.raises(AudioError, match="record-7"):
        decode_audio_bytes(b"garbage" * 100, name="record-7")


def test_prepare_waveform_scales_integer_pcm_and_validates():
    pcm = np.array([0, 16384, -32768, 32767], np.int16)
    np.testing.assert_allclose(prepare_waveform(pcm, 16000), pcm / 32768.0, atol=0)
    left = np.array([0, 1 << 30, -(1 << 30), 12345 << 16], np.int32)
    stereo = np.stack([left, -left], axis=1)  # opposite channels cancel when averaged
    np.testing.assert_array_equal(prepare_waveform(stereo, 16000), np.zeros(4, np.float32))
    np.testing.assert_allclose(prepare_waveform(left, 16000), left / 2.0**31, atol=0)
    with pytest.raises(AudioError) as info:
        prepare_waveform(np.zeros((0,), np.float32), 16000, name="tfds/3")
    assert info.value.reason == RejectReason.EMPTY and info.value.path == "tfds/3"
    with pytest.raises(AudioError) as info:
        prepare_waveform(np.array([np.inf], np.float32), 16000)
    assert info.value.reason == RejectReason.NON_FINITE
    assert len(prepare_waveform(np.zeros(800, np.float32), 8000)) == 1600


def test_audio_error_survives_pickling():
    import pickle

    error = pickle.loads(pickle.dumps(AudioError("/x.flac", RejectReason.CORRUPT, "bad frame")))
    assert (error.path, error.reason, error.message) == ("/x.flac", RejectReason.CORRUPT, "bad frame")


def test_unreadable_directory_path(tmp_path):
    folder = str(tmp_path / "a_folder.flac")
    os.makedirs(folder)
    assert _reason(lambda: load_audio(folder)) == RejectReason.UNREADABLE
