"""eSpeak NG driver: voices of this build, determinism independent of call history, errors."""

import numpy as np
import pytest

from jaxspeech.corpus.utterances import HELD_OUT_VOICE, TRAIN_VOICES
from jaxspeech.corpus.synthesis import EspeakError, get_synthesizer

TEXT = "the old farmer carried three baskets to the market."


@pytest.fixture(scope="module")
def synth():
    return get_synthesizer()


def test_default_voices_exist_and_speak(synth):
    for voice in TRAIN_VOICES + (HELD_OUT_VOICE,):
        audio = synth.synthesize(TEXT, voice, 170, 50)
        assert audio.dtype == np.float32 and audio.ndim == 1
        assert np.all(np.isfinite(audio)) and np.abs(audio).max() <= 1.0
        assert 1.5 < audio.size / 16000 < 6.0, f"{voice}: implausible duration {audio.size / 16000:.2f} s"
        assert np.sqrt(np.mean(audio**2)) > 0.01, f"{voice} is (nearly) silent"


def test_output_depends_only_on_arguments(synth):
    """eSpeak keeps state across utterances; a fresh library per call must make that invisible."""
    first = synth.synthesize(TEXT, "en-us+f2", 160, 40, seed=3)
    synth.synthesize("something else entirely, spoken by another voice.", "en+m3", 195, 70, seed=9)
    again = synth.synthesize(TEXT, "en-us+f2", 160, 40, seed=3)
    np.testing.assert_array_equal(first, again)


def test_prosody_changes_the_audio(synth):
    base = synth.synthesize(TEXT, "en-us", 170, 50)
    slower = synth.synthesize(TEXT, "en-us", 140, 50)
    higher = synth.synthesize(TEXT, "en-us", 170, 70)
    assert slower.size > base.size * 1.1
    assert not np.array_equal(base[: higher.size], higher[: base.size])


def test_errors_name_the_problem(synth):
    with pytest.raises(EspeakError, match="no-such-voice"):
        synth.synthesize(TEXT, "no-such-voice", 170, 50)
    with pytest.raises(ValueError, match="rate_wpm=20"):
        synth.synthesize(TEXT, "en-us", 20, 50)
    with pytest.raises(ValueError, match="pitch=150"):
        synth.synthesize(TEXT, "en-us", 170, 150)
    with pytest.raises(ValueError, match="empty"):
        synth.synthesize("   ", "en-us", 170, 50)
