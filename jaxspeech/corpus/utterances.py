"""The embedded speech corpus: synthetic English speech with exact transcripts, built offline.

Every utterance is a pure function of ``(CorpusConfig, split, index)``: the sentence comes from
``sentences.SentenceGenerator`` (split-disjoint by construction), the voice and prosody (eSpeak
voice, rate, pitch, pitch range, word gap, level, optional background noise) from a random
stream seeded by the same triple, and the audio from ``synth.EspeakSynthesizer``, which is
deterministic. ``SyntheticUtterances`` renders utterances on demand (a Grain
``RandomAccessDataSource``: fresh sentences and voices for every index, so training can draw new
renderings every epoch); ``corpus_build.build_corpus`` writes a fixed corpus to disk.

Test split: indices ``0 .. test_utterances - 1`` use the training voices on unseen sentences;
the next ``held_out_utterances`` use ``held_out_voice``, which no other split uses. The
open-vocabulary split (``open_vocab``) is built the same way (``open_vocab_utterances`` with the
training voices, then ``open_vocab_held_out_utterances`` with the held-out voice) from sentences
that each hold at least one word no other split has (``sentences.open_vocab_words``); its records
list those words (``open_vocab_words``).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np

from jaxspeech.corpus.sentences import GENERATOR_VERSION, OPEN_VOCAB, SPLITS, SentenceGenerator, open_vocab_words_in
from jaxspeech.corpus.synthesis import OUTPUT_SAMPLE_RATE, get_synthesizer

CORPUS_VERSION = f"corpus-2/{GENERATOR_VERSION}"
DEFAULT_CORPUS_DIR = "data/tiny"
SAMPLE_RATE = OUTPUT_SAMPLE_RATE

# eSpeak NG voices of this build that a pretrained ASR model recognises well (NOTES.md), and
# their combinations: two accents (American, British) x three voice qualities.
TRAIN_VOICES = ("en-us", "en-us+m3", "en-us+f2", "en", "en+m3", "en+f2")
HELD_OUT_VOICE = "en-us+m1"
NOISE_COLORS = ("white", "pink", "brown")

_SPLIT_CODES = {split: code for code, split in enumerate(SPLITS)}
_TEXT_STREAM, _VOICE_STREAM = 0, 1
# Splits whose last utterances use the held-out voice: the config field counting the others.
_VOICE_SPLIT = {"test": "test_utterances", OPEN_VOCAB: "open_vocab_utterances"}


@dataclasses.dataclass(frozen=True)
class CorpusConfig:
    """What to synthesise. Ranges are inclusive ``(low, high)``. The default size is the main job's
    (configs/tiny_asr.py; why 12 h: experiments/tiny_asr/README.md)."""

    seed: int = 0
    train_hours: float = 12.0
    dev_utterances: int = 300
    test_utterances: int = 400  # training voices, unseen sentences
    held_out_utterances: int = 200  # held-out voice, unseen sentences
    open_vocab_utterances: int = 200  # training voices, sentences with held-out words
    open_vocab_held_out_utterances: int = 100  # held-out voice, sentences with held-out words
    train_voices: tuple[str, ...] = TRAIN_VOICES
    held_out_voice: str = HELD_OUT_VOICE
    rate_wpm: tuple[int, int] = (140, 200)
    pitch: tuple[int, int] = (30, 70)
    pitch_range: tuple[int, int] = (30, 80)
    word_gap_probability: float = 0.2
    max_word_gap: int = 3  # units of 10 ms between words
    peak_db: tuple[float, float] = (-12.0, -1.0)  # peak level of each utterance, dBFS
    noise_probability: float = 0.0
    snr_db: tuple[float, float] = (10.0, 30.0)
    min_words: int = 8
    max_words: int = 16

    def __post_init__(self):
        if not self.train_voices:
            raise ValueError("CorpusConfig.train_voices is empty")
        if self.held_out_voice in self.train_voices:
            raise ValueError(f"CorpusConfig.held_out_voice {self.held_out_voice!r} is also a training voice")
        for name in ("rate_wpm", "pitch", "pitch_range", "peak_db", "snr_db"):
            low, high = getattr(self, name)
            if low > high:
                raise ValueError(f"CorpusConfig.{name}: low {low} > high {high}")
        for name in (
            "dev_utterances",
            "test_utterances",
            "held_out_utterances",
            "open_vocab_utterances",
            "open_vocab_held_out_utterances",
            "max_word_gap",
        ):
            if getattr(self, name) < 0:
                raise ValueError(f"CorpusConfig.{name} must be >= 0, got {getattr(self, name)}")
        if not math.isfinite(self.train_hours) or self.train_hours < 0:
            raise ValueError(f"CorpusConfig.train_hours must be a finite number >= 0, got {self.train_hours}")
        for name in ("word_gap_probability", "noise_probability"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"CorpusConfig.{name} must be in [0, 1], got {getattr(self, name)}")
        SentenceGenerator(self.min_words, self.max_words)  # validates the word bounds

    def split_size(self, split: str) -> int | None:
        """Fixed utterance count of dev/test/open_vocab; None for train (its size follows ``train_hours``)."""
        if split == "train":
            return None
        if split == "dev":
            return self.dev_utterances
        if split == "test":
            return self.test_utterances + self.held_out_utterances
        if split == OPEN_VOCAB:
            return self.open_vocab_utterances + self.open_vocab_held_out_utterances
        raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")

    def to_json(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "CorpusConfig":
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - fields
        if unknown:
            raise ValueError(f"CorpusConfig: unknown keys {sorted(unknown)}")
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})


@dataclasses.dataclass(frozen=True)
class UtteranceSpec:
    """Everything that determines one utterance's audio."""

    id: str
    split: str
    index: int
    text: str  # transcript: lower-case words, no punctuation
    spoken: str  # text given to the synthesizer (with punctuation, for intonation)
    voice: str
    rate: int
    pitch: int
    pitch_range: int
    word_gap: int
    peak_db: float
    noise: str | None  # noise colour, None for clean speech
    snr_db: float | None
    seed: int
    held_out_voice: bool

    def metadata(self) -> dict[str, Any]:
        """Manifest fields (everything but the audio path, duration and spoken text)."""
        record = {
            "id": self.id,
            "text": self.text,
            "voice": self.voice,
            "rate": self.rate,
            "pitch": self.pitch,
            "pitch_range": self.pitch_range,
            "word_gap": self.word_gap,
            "peak_db": round(self.peak_db, 2),
            "noise": self.noise,
            "snr_db": None if self.snr_db is None else round(self.snr_db, 2),
            "split": self.split,
        }
        if self.split in _VOICE_SPLIT:
            record["held_out_voice"] = self.held_out_voice
        if self.split == OPEN_VOCAB:
            record["open_vocab_words"] = open_vocab_words_in(self.text)
        return record


def utterance_id(split: str, index: int) -> str:
    return f"{split}-{index:07d}"


def utterance_spec(config: CorpusConfig, split: str, index: int, text_index: int | None = None) -> UtteranceSpec:
    """The utterance ``index`` of ``split``; its sentence is sentence ``text_index`` (default: index)."""
    if split not in _SPLIT_CODES:
        raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
    if index < 0:
        raise IndexError(f"utterance index must be >= 0, got {index}")
    code = _SPLIT_CODES[split]
    text_rng = np.random.default_rng([config.seed, _TEXT_STREAM, code, index if text_index is None else text_index])
    sentence = SentenceGenerator(config.min_words, config.max_words).draw(text_rng, split)
    rng = np.random.default_rng([config.seed, _VOICE_STREAM, code, index])
    # Every value is drawn unconditionally so that each one keeps its place in the stream.
    voice_choice = int(rng.integers(len(config.train_voices)))
    rate = int(rng.integers(config.rate_wpm[0], config.rate_wpm[1] + 1))
    pitch = int(rng.integers(config.pitch[0], config.pitch[1] + 1))
    pitch_range = int(rng.integers(config.pitch_range[0], config.pitch_range[1] + 1))
    gap_draw, gap = float(rng.random()), int(rng.integers(1, config.max_word_gap + 1)) if config.max_word_gap else 0
    peak_db = float(rng.uniform(*config.peak_db))
    noise_draw, noise_color = float(rng.random()), NOISE_COLORS[int(rng.integers(len(NOISE_COLORS)))]
    snr_db = float(rng.uniform(*config.snr_db))
    seed = int(rng.integers(2**31 - 1))
    held_out = split in _VOICE_SPLIT and index >= getattr(config, _VOICE_SPLIT[split])
    noisy = noise_draw < config.noise_probability
    return UtteranceSpec(
        id=utterance_id(split, index),
        split=split,
        index=index,
        text=sentence.transcript,
        spoken=sentence.spoken,
        voice=config.held_out_voice if held_out else config.train_voices[voice_choice],
        rate=rate,
        pitch=pitch,
        pitch_range=pitch_range,
        word_gap=gap if gap_draw < config.word_gap_probability else 0,
        peak_db=peak_db,
        noise=noise_color if noisy else None,
        snr_db=snr_db if noisy else None,
        seed=seed,
        held_out_voice=held_out,
    )


def colored_noise(num_samples: int, color: str, rng: np.random.Generator) -> np.ndarray:
    """f32[num_samples] noise of unit RMS with a white, pink (1/f) or brown (1/f^2) power spectrum."""
    if color not in NOISE_COLORS:
        raise ValueError(f"unknown noise colour {color!r}; expected one of {NOISE_COLORS}")
    white = rng.standard_normal(num_samples)
    if color != "white" and num_samples > 1:
        spectrum = np.fft.rfft(white)
        frequencies = np.arange(spectrum.shape[0], dtype=np.float64)
        frequencies[0] = 1.0  # keep the DC bin finite
        spectrum /= np.sqrt(frequencies) if color == "pink" else frequencies
        white = np.fft.irfft(spectrum, n=num_samples)
    rms = np.sqrt(np.mean(white**2)) if num_samples else 1.0
    return (white / max(rms, 1e-12)).astype(np.float32)


def render_utterance(spec: UtteranceSpec) -> np.ndarray:
    """f32[N] at 16 kHz in [-1, 1]: synthesised speech at the spec's level, plus its noise."""
    audio = get_synthesizer().synthesize(
        spec.spoken,
        spec.voice,
        spec.rate,
        spec.pitch,
        pitch_range=spec.pitch_range,
        word_gap=spec.word_gap,
        seed=spec.seed,
    )
    peak = float(np.max(np.abs(audio))) if audio.size else 0.0
    if peak == 0.0:
        raise RuntimeError(f"{spec.id}: eSpeak produced silence for voice {spec.voice!r} and text {spec.spoken!r}")
    audio = audio * np.float32(10.0 ** (spec.peak_db / 20.0) / peak)
    if spec.noise is not None:
        speech_rms = float(np.sqrt(np.mean(audio.astype(np.float64) ** 2)))
        noise = colored_noise(audio.shape[0], spec.noise, np.random.default_rng(spec.seed))
        audio = audio + noise * np.float32(speech_rms * 10.0 ** (-spec.snr_db / 20.0))
    return np.clip(audio, -1.0, 1.0).astype(np.float32)


class SyntheticUtterances:
    """On-the-fly corpus: ``ds[i] -> {"id", "audio" f32[N], "text", "voice", "duration", ...}``.

    A Grain ``RandomAccessDataSource`` (``__len__`` / ``__getitem__``), deterministic per index and
    picklable: it holds only its config; each worker process creates its own synthesizer on first
    use. ``size`` defaults to the split's size (1,000,000 for train: every index is a new sentence
    and a new rendering). With ``sentence_pool=N`` the sentences cycle through the first ``N``
    sentences of the split (those of a prepared corpus with N utterances) while voice and prosody
    stay fresh per index, which re-renders a fixed text set differently every epoch.
    """

    def __init__(
        self,
        config: CorpusConfig = CorpusConfig(),
        split: str = "train",
        size: int | None = None,
        sentence_pool: int | None = None,
    ):
        if split not in _SPLIT_CODES:
            raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
        if sentence_pool is not None and sentence_pool < 1:
            raise ValueError(f"sentence_pool must be >= 1, got {sentence_pool}")
        self.config = config
        self.split = split
        self.size = size if size is not None else (config.split_size(split) or 1_000_000)
        self.sentence_pool = sentence_pool

    def __len__(self) -> int:
        return self.size

    def spec(self, index: int) -> UtteranceSpec:
        index = int(index)
        if not 0 <= index < self.size:
            raise IndexError(f"index {index} out of range for {self.size} {self.split} utterances")
        text_index = index % self.sentence_pool if self.sentence_pool else index
        return utterance_spec(self.config, self.split, index, text_index)

    def __getitem__(self, index: int) -> dict[str, Any]:
        spec = self.spec(index)
        audio = render_utterance(spec)
        return {**spec.metadata(), "audio": audio, "sample_rate": SAMPLE_RATE, "duration": audio.shape[0] / SAMPLE_RATE}

    def __repr__(self) -> str:
        return (
            f"SyntheticUtterances(split={self.split!r}, size={self.size}, seed={self.config.seed}, "
            f"sentence_pool={self.sentence_pool})"
        )
