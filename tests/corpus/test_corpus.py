"""Utterance specs and on-the-fly synthesis (SyntheticUtterances), noise mixing."""

import pickle

import numpy as np
import pytest

from jaxspeech.corpus.utterances import (
    CorpusConfig,
    SyntheticUtterances,
    colored_noise,
    render_utterance,
    utterance_spec,
)
from jaxspeech.corpus.sentences import split_of

SMALL = CorpusConfig(dev_utterances=6, test_utterances=6, held_out_utterances=4)


def test_specs_are_deterministic_and_seed_dependent():
    specs = [utterance_spec(SMALL, "train", i) for i in range(20)]
    assert specs == [utterance_spec(SMALL, "train", i) for i in range(20)]
    other = [utterance_spec(CorpusConfig(seed=1), "train", i) for i in range(20)]
    assert all(a.text != b.text for a, b in zip(specs, other))
    for spec in specs:
        assert SMALL.rate_wpm[0] <= spec.rate <= SMALL.rate_wpm[1]
        assert SMALL.pitch[0] <= spec.pitch <= SMALL.pitch[1]
        assert spec.voice in SMALL.train_voices and not spec.held_out_voice
        assert split_of(spec.text) == "train" and spec.noise is None
    assert len({s.voice for s in specs}) > 3 and len({s.rate for s in specs}) > 10


def test_held_out_voice_only_at_the_end_of_test():
    test = [utterance_spec(SMALL, "test", i) for i in range(SMALL.split_size("test"))]
    assert [s.held_out_voice for s in test] == [False] * 6 + [True] * 4
    assert all(s.voice == SMALL.held_out_voice for s in test[6:])
    assert all(s.voice != SMALL.held_out_voice for s in test[:6])
    assert all("held_out_voice" in s.metadata() for s in test)
    assert "held_out_voice" not in utterance_spec(SMALL, "dev", 0).metadata()


def test_config_validation():
    with pytest.raises(ValueError, match="also a training voice"):
        CorpusConfig(held_out_voice="en-us")
    with pytest.raises(ValueError, match="rate_wpm"):
        CorpusConfig(rate_wpm=(200, 140))
    with pytest.raises(ValueError, match="noise_probability"):
        CorpusConfig(noise_probability=2.0)
    for hours in (float("nan"), -1.0):
        with pytest.raises(ValueError, match="train_hours must be a finite number >= 0"):
            CorpusConfig(train_hours=hours)
    assert CorpusConfig.from_json(SMALL.to_json()) == SMALL
    with pytest.raises(ValueError, match="unknown keys"):
        CorpusConfig.from_json({"sed": 1})


def test_on_the_fly_items_are_deterministic_and_picklable():
    dataset = SyntheticUtterances(SMALL, "train", size=50)
    restored = pickle.loads(pickle.dumps(dataset))
    first, again = dataset[7], restored[np.int64(7)]
    np.testing.assert_array_equal(first["audio"], again["audio"])
    assert first["text"] == again["text"] == utterance_spec(SMALL, "train", 7).text
    assert first["audio"].dtype == np.float32 and np.all(np.isfinite(first["audio"]))
    assert np.abs(first["audio"]).max() == pytest.approx(
        10 ** (utterance_spec(SMALL, "train", 7).peak_db / 20), rel=1e-4
    )
    assert first["duration"] == pytest.approx(first["audio"].size / 16000)
    assert 1.0 < first["duration"] < 9.0
    with pytest.raises(IndexError, match="out of range"):
        dataset[50]
    assert len(SyntheticUtterances(SMALL, "test")) == 10 and len(SyntheticUtterances(SMALL)) == 1_000_000


def test_sentence_pool_rerenders_the_same_sentences():
    pooled = SyntheticUtterances(SMALL, "train", size=100, sentence_pool=3)
    specs = [pooled.spec(i) for i in (0, 3, 6, 1)]
    assert specs[0].text == specs[1].text == specs[2].text == utterance_spec(SMALL, "train", 0).text
    assert specs[3].text == utterance_spec(SMALL, "train", 1).text
    assert len({(s.voice, s.rate, s.pitch) for s in specs[:3]}) == 3  # fresh prosody per index


def test_noise_colors_and_snr():
    rng = np.random.default_rng(0)
    spectra = {}
    for color in ("white", "pink", "brown"):
        noise = colored_noise(32000, color, rng)
        assert noise.dtype == np.float32 and np.sqrt(np.mean(noise.astype(np.float64) ** 2)) == pytest.approx(
            1, rel=1e-3
        )
        power = np.abs(np.fft.rfft(noise)) ** 2
        spectra[color] = power[100:1000].mean() / power[10000:16000].mean()  # low / high frequency power
    assert spectra["white"] < 2 < spectra["pink"] < spectra["brown"]
    with pytest.raises(ValueError, match="purple"):
        colored_noise(10, "purple", rng)

    noisy_config = CorpusConfig(noise_probability=1.0, snr_db=(10.0, 10.0))
    spec = utterance_spec(noisy_config, "train", 2)
    clean_spec = utterance_spec(CorpusConfig(), "train", 2)
    assert spec.noise in ("white", "pink", "brown") and spec.snr_db == 10.0
    noisy, clean = render_utterance(spec), render_utterance(clean_spec)
    residual = noisy.astype(np.float64) - clean
    snr = 10 * np.log10(np.mean(clean.astype(np.float64) ** 2) / np.mean(residual**2))
    assert snr == pytest.approx(10.0, abs=0.5)  # clipping at +-1 may move it slightly
