"""Long-form transcription: chunk windows, token merge rule, the transcriber and ``jaxspeech transcribe``."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest
import soundfile as sf
from hypothesis import given, settings
from hypothesis import strategies as st

from jaxspeech.cli import main
from jaxspeech.data.audio import load_audio
from jaxspeech.decoding.whisper import make_generate_fn
from jaxspeech.recipes.longform import WhisperTranscriber, chunk_windows, merge_chunks, merge_overlapping
from jaxspeech.testing.audio_mutations import lying_flac
from jaxspeech.testing.whisper import EOS, MICRO_FRAMES, MICRO_SAMPLES, padded_features, random_audio


def test_chunk_windows_arithmetic():
    second = 16000
    assert chunk_windows(10 * second, 30 * second, 5 * second) == [(0, 10 * second)]
    assert chunk_windows(30 * second, 30 * second, 5 * second) == [(0, 30 * second)]
    # 70 s, 30-s windows, 5-s strides: a window every 20 s; the last ends at the end of the audio.
    assert chunk_windows(70 * second, 30 * second, 5 * second) == [
        (0, 30 * second),
        (20 * second, 50 * second),
        (40 * second, 70 * second),
    ]
    assert chunk_windows(75 * second, 30 * second, 5 * second)[-1] == (45 * second, 75 * second)
    with pytest.raises(ValueError, match="window > 2 \\* stride"):
        chunk_windows(100, 10, 5)


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 5000), st.integers(10, 400), st.integers(0, 200))
def test_chunk_windows_cover_the_audio_with_overlaps(num_samples, window, stride):
    if window <= 2 * stride:
        return
    windows = chunk_windows(num_samples, window, stride)
    assert windows[0][0] == 0 and windows[-1][1] == num_samples
    for (start, end), (next_start, next_end) in zip(windows, windows[1:]):
        assert end - start == window == next_end - next_start
        assert end - next_start >= 2 * stride  # every cut lies inside an overlap of two strides or more
        assert next_start > start


def test_merge_overlapping_rule():
    assert merge_overlapping([1, 2, 3, 4, 5, 6], [4, 5, 6, 7, 8]) == [1, 2, 3, 4, 5, 6, 7, 8]
    # Overlap of k = 4 with errors at both cut edges: the left chunk supplies the first k // 2 overlap
    # tokens, the right chunk the rest, so each edge error is dropped.
    assert merge_overlapping([1, 2, 3, 4, 5, 6, 9], [9, 5, 6, 7, 8, 10]) == [1, 2, 3, 4, 5, 6, 7, 8, 10]
    assert merge_overlapping([1, 2, 3, 4, 5, 6, 7], [4, 5, 0, 7, 8]) == [1, 2, 3, 4, 5, 0, 7, 8]  # k = 4, 3 matches
    # No alignment with two matching tokens: plain concatenation.
    assert merge_overlapping([1, 2, 3], [3, 7, 8]) == [1, 2, 3, 3, 7, 8]
    assert merge_overlapping([], [1, 2]) == [1, 2] and merge_overlapping([1, 2], []) == [1, 2]


def test_merging_chunk_transcripts_recovers_the_long_transcript():
    """Chunks of a known 120-token transcript (40-token windows, 8-token strides, as the audio
    windows), each wrong at its cut edges where the model hears half a word, merge back exactly."""
    transcript = np.random.RandomState(0).randint(0, 50, 120).tolist()
    windows = chunk_windows(len(transcript), 40, 8)
    assert len(windows) == 5
    chunks = []
    for i, (start, end) in enumerate(windows):
        chunk = list(transcript[start:end])
        if i > 0:
            chunk[0] = 99
        if i < len(windows) - 1:
            chunk[-1] = 98
        chunks.append(chunk)
    assert merge_chunks(chunks) == transcript


@pytest.fixture(scope="module")
def transcriber(micro):
    return WhisperTranscriber(micro.directory, batch_size=4, max_new_tokens=10)


def test_transcriber_short_and_long_audio(micro, transcriber):
    short = random_audio(9000, seed=0)
    long = random_audio(int(2.6 * MICRO_SAMPLES), seed=1)
    windows = chunk_windows(len(long), transcriber.window, transcriber.stride)
    assert transcriber.window == MICRO_SAMPLES and len(windows) == 4
    tokens = transcriber.transcribe_tokens([short, long])

    # Reference: the model's greedy tokens for each 1-s window zero-padded, decoded one by one.
    generate = make_generate_fn(micro.config, micro.generation, max_new_tokens=10)
    full = jnp.full((1,), MICRO_FRAMES, jnp.int32)

    def greedy(audio):
        out = generate(micro.params, jnp.asarray(padded_features([audio])), full)
        return [t for t in np.asarray(out.tokens[0, : out.lengths[0]]).tolist() if t != EOS]

    assert tokens[0] == greedy(short)
    assert tokens[1] == merge_chunks([greedy(long[start:end]) for start, end in windows])
    texts = transcriber.transcribe([short, long])
    assert texts[0] == " ".join(f"w{t}" for t in tokens[0])


def test_transcribe_cli_prints_one_line_per_file_and_reports_bad_files(micro, transcriber, tmp_path, capsys):
    rate_audio = {
        "a.wav": (16000, random_audio(12000, seed=3)),
        "b_8k_stereo.flac": (8000, np.stack([random_audio(5000, seed=4), random_audio(5000, seed=5)], axis=1)),
        "c_long.ogg": (16000, random_audio(int(2.2 * MICRO_SAMPLES), seed=6)),
    }
    paths = []
    for name, (rate, audio) in rate_audio.items():
        path = str(tmp_path / name)
        sf.write(path, audio, rate)
        paths.append(path)
    corrupt = str(tmp_path / "corrupt.wav")
    with open(corrupt, "wb") as f:
        f.write(b"RIFF\x00\x00\x00\x00WAVEfmt garbage that is not audio")
    paths.insert(1, corrupt)
    lying = str(tmp_path / "lying.flac")  # 7 KB whose header claims 2^36 - 1 samples (256 GiB as float32)
    with open(lying, "wb") as f:
        f.write(lying_flac())
    paths.insert(0, lying)  # the files after it are still transcribed

    code = main(["transcribe", "--whisper-dir", micro.directory, "--batch-size", "2", "--max-new-tokens", "10", *paths])
    out, err = capsys.readouterr()
    assert code == 1
    assert corrupt in err and f"{lying}: [corrupt] header declares {2**36 - 1} frames" in err
    good = [p for p in paths if p not in (corrupt, lying)]
    lines = out.strip().split("\n")
    assert [line.split("\t")[0] for line in lines] == good
    expected = transcriber.transcribe([load_audio(p) for p in good])
    assert [line.split("\t", 1)[1] for line in lines] == expected
    assert all(text for text in expected)
