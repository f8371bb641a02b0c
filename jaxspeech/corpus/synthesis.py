"""Offline English speech synthesis with eSpeak NG, through the library bundled by ``espeakng-loader``.

No system install is needed: the shared library and its voice data ship inside the pip package and
are driven here through ``ctypes``. eSpeak renders at 22,050 Hz; we resample to 16 kHz with soxr.

Thread and process safety: libespeak-ng keeps process-global state (current voice, parameters,
the output callback), so every call takes one process-wide lock; several threads may share a
synthesizer but synthesise one at a time. ``get_synthesizer()`` returns a per-process instance,
created on first use; worker processes (multiprocessing, Grain) each build their own after
fork/spawn, which is safe because nothing is shared between processes. The output is a pure
function of the arguments (see ``EspeakSynthesizer`` for how that is achieved).
"""

from __future__ import annotations

import _ctypes
import ctypes
import os
import threading

import numpy as np
import soxr

OUTPUT_SAMPLE_RATE = 16000

_AUDIO_OUTPUT_SYNCHRONOUS = 2
_CHARS_UTF8 = 1
_PARAM_RATE, _PARAM_VOLUME, _PARAM_PITCH, _PARAM_RANGE, _PARAM_WORDGAP = 1, 2, 3, 4, 7
_EE_OK = 0

_LIBRARY_LOCK = threading.Lock()
# A lock held by another thread at fork time would stay locked forever in the child.
os.register_at_fork(after_in_child=lambda: globals().update(_LIBRARY_LOCK=threading.Lock()))

# int SynthCallback(short *wav, int numsamples, espeak_EVENT *events); returns 0 to continue.
_SYNTH_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)


class EspeakError(RuntimeError):
    """eSpeak NG refused a call (unknown voice, bad parameter, initialisation failure)."""


class EspeakSynthesizer:
    """``synthesize(text, voice, rate_wpm, pitch) -> f32[N]`` at 16 kHz, in [-1, 1].

    Voices are eSpeak names with an optional variant, e.g. ``"en-us"``, ``"en"`` (British),
    ``"en-us+m3"``, ``"en-us+f2"``. ``rate_wpm`` 80-450, ``pitch`` and ``pitch_range`` 0-100,
    ``word_gap`` in units of 10 ms, ``seed`` drives eSpeak's breath/voicing noise.

    Determinism: libespeak-ng keeps state across utterances that no API call resets (a
    function-static pitch-flutter index, the glottal phase), so the same call made after
    different earlier calls returns different samples. Each utterance therefore runs in a freshly
    loaded copy of the library (``dlopen``, synthesise, ``dlclose``), which costs about 5 ms and
    makes the output a pure function of the arguments. This needs the process to hold no other
    handle on the library (another module loading ``espeakng_loader``'s library would keep it
    mapped and the state would survive).
    """

    def __init__(self):
        import espeakng_loader  # deferred: only processes that synthesise need the library

        self._library_path = espeakng_loader.get_library_path()
        self._data_path = espeakng_loader.get_data_path().encode()
        self._libc = ctypes.CDLL(None)
        self._chunks: list[np.ndarray] = []
        # The ctypes callback must outlive every espeak_Synth call: keep a reference on the instance.
        self._callback = _SYNTH_CALLBACK(self._collect)
        self.native_sample_rate = self._run(lambda lib: None)[0]

    def _collect(self, wav, num_samples, events) -> int:
        if wav and num_samples > 0:
            self._chunks.append(np.ctypeslib.as_array(wav, shape=(num_samples,)).copy())
        return 0

    def _run(self, body) -> tuple[int, object]:
        """Loads a fresh libespeak-ng, initialises it, runs ``body(lib)`` and unloads it again."""
        with _LIBRARY_LOCK:
            lib = ctypes.CDLL(self._library_path)
            try:
                lib.espeak_Initialize.restype = ctypes.c_int
                lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
                sample_rate = lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, self._data_path, 0)
                if sample_rate <= 0:
                    raise EspeakError(
                        f"espeak_Initialize failed (returned {sample_rate}) with data at {self._data_path!r}"
                    )
                lib.espeak_SetSynthCallback(self._callback)
                try:
                    return sample_rate, body(lib)
                finally:
                    lib.espeak_Terminate()
            finally:
                _ctypes.dlclose(lib._handle)

    @staticmethod
    def _set(lib, parameter: int, value: int, name: str) -> None:
        status = lib.espeak_SetParameter(parameter, int(value), 0)
        if status != _EE_OK:
            raise EspeakError(f"espeak_SetParameter({name}={value}) failed with status {status}")

    def synthesize_native(
        self,
        text: str,
        voice: str,
        rate_wpm: int = 175,
        pitch: int = 50,
        *,
        pitch_range: int = 50,
        word_gap: int = 0,
        seed: int = 0,
    ) -> np.ndarray:
        """int16[N] at ``native_sample_rate`` (22,050 Hz)."""
        if not text.strip():
            raise ValueError("synthesize: text is empty")
        for name, value, low, high in (
            ("rate_wpm", rate_wpm, 80, 450),
            ("pitch", pitch, 0, 100),
            ("pitch_range", pitch_range, 0, 100),
            ("word_gap", word_gap, 0, 100),
        ):
            if not low <= value <= high:
                raise ValueError(f"synthesize: {name}={value} is outside [{low}, {high}]")
        encoded = text.encode("utf-8")

        def speak(lib) -> list[np.ndarray]:
            status = lib.espeak_SetVoiceByName(voice.encode())
            if status != _EE_OK:
                raise EspeakError(f"unknown eSpeak voice {voice!r} (espeak_SetVoiceByName returned {status})")
            self._set(lib, _PARAM_RATE, rate_wpm, "rate")
            self._set(lib, _PARAM_PITCH, pitch, "pitch")
            self._set(lib, _PARAM_RANGE, pitch_range, "range")
            self._set(lib, _PARAM_WORDGAP, word_gap, "wordgap")
            self._set(lib, _PARAM_VOLUME, 100, "volume")
            # Breath noise draws from eSpeak's own generator and from libc rand(): seed both.
            lib.espeak_ng_SetRandSeed(ctypes.c_long(seed))
            self._libc.srand(ctypes.c_uint(seed & 0xFFFFFFFF))
            self._chunks = []
            status = lib.espeak_Synth(
                ctypes.c_char_p(encoded), ctypes.c_size_t(len(encoded) + 1), 0, 0, 0, _CHARS_UTF8, None, None
            )
            lib.espeak_Synchronize()
            if status != _EE_OK:
                raise EspeakError(f"espeak_Synth failed with status {status} for text {text[:60]!r}")
            chunks, self._chunks = self._chunks, []
            return chunks

        chunks = self._run(speak)[1]
        return np.concatenate(chunks) if chunks else np.zeros(0, np.int16)

    def synthesize(
        self,
        text: str,
        voice: str,
        rate_wpm: int = 175,
        pitch: int = 50,
        *,
        pitch_range: int = 50,
        word_gap: int = 0,
        seed: int = 0,
    ) -> np.ndarray:
        """f32[N] at 16 kHz in [-1, 1]: ``text`` spoken by ``voice`` at ``rate_wpm`` and ``pitch``."""
        native = self.synthesize_native(
            text, voice, rate_wpm, pitch, pitch_range=pitch_range, word_gap=word_gap, seed=seed
        )
        audio = native.astype(np.float32) / 32768.0
        resampled = soxr.resample(audio, self.native_sample_rate, OUTPUT_SAMPLE_RATE, quality="HQ")
        return np.clip(resampled, -1.0, 1.0).astype(np.float32)


_process_synthesizer: tuple[int, EspeakSynthesizer] | None = None


def get_synthesizer() -> EspeakSynthesizer:
    """The synthesizer of the current process, created lazily (a forked child builds its own)."""
    global _process_synthesizer
    pid = os.getpid()
    if _process_synthesizer is None or _process_synthesizer[0] != pid:
        _process_synthesizer = (pid, EspeakSynthesizer())
    return _process_synthesizer[1]
