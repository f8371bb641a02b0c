"""Transcription with a trained workdir (``jaxspeech transcribe --checkpoint WORKDIR``): a Speech-LLM
run decodes with its eval setting (``eval.generation`` and its lexicon), a CTC-encoder run greedily
with its CTC head. (A Whisper run's model is ``WORKDIR/whisper_hf``, which the CLI hands to
``WhisperTranscriber``.)

Audio longer than the model's ``max_audio_frames`` is cut into overlapping windows (a sixth of the
window overlaps on each side) whose token sequences are merged with the rule of
``jaxspeech.recipes.longform``. Windows are padded to the training buckets, so decoding compiles
at most one program per bucket.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import jax
import numpy as np

from jaxspeech.decoding.speech import generate_from_audio
from jaxspeech.errors import UsageError
from jaxspeech.features.mel import HOP_LENGTH, log_mel_spectrogram
from jaxspeech.recipes.longform import chunk_windows, merge_chunks
from jaxspeech.recipes.restore import restore
from jaxspeech.tasks.ctc_encoder_kind import CTCEncoderKind
from jaxspeech.tasks.speech_llm_kind import SpeechLLMKind


class RunTranscriber:
    """``transcribe(audios: list of f32[N] at 16 kHz) -> list[str]`` with a Speech-LLM or CTC-encoder run."""

    def __init__(self, workdir: str, *, num_beams: int = 1, max_new_tokens: int | None = None, batch_size: int = 8):
        run, params, self.step = restore(workdir)
        self.run, self.batch_size = run, batch_size
        self.buckets = run.pipeline.bucket_frames
        if isinstance(run.kind, CTCEncoderKind):
            if num_beams > 1 or max_new_tokens:
                raise UsageError(workdir, "is a CTC-encoder run: it decodes greedily (no --beam, no --max-new-tokens)")
            self.ctc = run.decoder()
            self.ctc_params = self.ctc.prepare(params)
            self._decode_group = self._greedy_ctc
            return
        if not isinstance(run.kind, SpeechLLMKind):
            raise UsageError(
                workdir,
                f"is a {type(run.kind).__name__} run, which transcribes nothing; a Speech-LLM or CTC-encoder "
                "run does (a Whisper run's model is WORKDIR/whisper_hf: jaxspeech transcribe --whisper-dir)",
            )
        self._decode_group = self._generate
        generation = run.eval.generation
        if num_beams > 1 or max_new_tokens:
            changes = {"method": "beam" if num_beams > 1 else generation.method, "num_beams": max(num_beams, 1)}
            if max_new_tokens:
                changes["max_new_tokens"] = max_new_tokens
            run.eval = dataclasses.replace(run.eval, generation=dataclasses.replace(generation, **changes))
        decoder = run.decoder()
        self.gen, self.lexicon, self.decoding = decoder.generation, decoder.lexicon, decoder.prepare(params)
        self.prompts = run.kind.example_tokens(inference=True)
        self.max_tokens = run.pipeline.max_tokens

    def _bucket(self, frames: int) -> int:
        for i, size in enumerate(self.buckets):
            if frames <= size:
                return i
        raise ValueError(f"{frames} frames exceed the largest bucket {self.buckets[-1]}")

    def _decode(self, chunks: list[np.ndarray]) -> list[list[int]]:
        """Token ids for each window (all of them fit the largest bucket), in groups of the batch
        size padded to their bucket."""
        features = [log_mel_spectrogram(chunk, n_mels=self.run.kind.model.encoder.n_mels) for chunk in chunks]
        order = sorted(range(len(chunks)), key=lambda i: len(features[i]))
        results: list[list[int]] = [[] for _ in chunks]
        for begin in range(0, len(order), self.batch_size):
            group = order[begin : begin + self.batch_size]
            bucket = self._bucket(max(len(features[i]) for i in group))
            feats = np.zeros((self.batch_size, 1, self.buckets[bucket], features[group[0]].shape[-1]), np.float32)
            lengths = np.zeros((self.batch_size, 1), np.int32)
            for row, index in enumerate(group):
                n = len(features[index])
                feats[row, 0, :n], lengths[row, 0] = features[index], n
            for index, ids in zip(group, self._decode_group(bucket, len(group), feats, lengths)):
                results[index] = ids
        return results

    def _greedy_ctc(self, bucket: int, count: int, feats: np.ndarray, lengths: np.ndarray) -> list[list[int]]:
        return self.ctc.label_paths(self.ctc_params, feats, lengths)[:count]

    def _generate(self, bucket: int, count: int, feats: np.ndarray, lengths: np.ndarray) -> list[list[int]]:
        """The first ``count`` rows decoded by the Speech LLM (the other rows decode a dummy prompt)."""
        rows, width = len(feats), self.max_tokens[bucket]
        tokens = np.zeros((rows, width), np.int32)
        segments = np.zeros((rows, width), np.int32)
        segments[:, 0] = 1  # padding rows decode a dummy one-token prompt
        for row in range(count):
            prompt = self.prompts({"text": ""}, (int(lengths[row, 0]),)).tokens
            tokens[row, : len(prompt)], segments[row, : len(prompt)] = prompt, 1
        config, params = self.decoding
        out = generate_from_audio(
            config,
            params,
            tokens,
            segments,
            feats,
            lengths,
            self.gen,
            lexicon=self.lexicon,
            active=np.arange(rows) < count,
        )
        ids, counts = jax.device_get((out.tokens, out.lengths))
        eos = set(self.gen.eos_ids)
        return [[int(t) for t in ids[row, : counts[row]] if int(t) not in eos] for row in range(count)]

    def transcribe(self, audios: Sequence[np.ndarray]) -> list[str]:
        window = self.buckets[-1] * HOP_LENGTH
        spans = [chunk_windows(len(audio), window, window // 6) for audio in audios]
        chunks = [audio[start:end] for audio, windows in zip(audios, spans) for start, end in windows]
        decoded = self._decode(chunks) if chunks else []
        texts, cursor = [], 0
        for windows in spans:
            texts.append(self.run.tokenizer.decode(merge_chunks(decoded[cursor : cursor + len(windows)])))
            cursor += len(windows)
        return texts
