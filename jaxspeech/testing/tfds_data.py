"""A tiny TFDS speech dataset prepared offline into a local ``data_dir`` (needs the [tfds] extra)."""

from __future__ import annotations

import os

import numpy as np

from jaxspeech.testing import audio_files

TINY_SPEECH = "tiny_speech"
TINY_SPEECH_UTTERANCES = 5


def write_tiny_speech(data_dir: str, work_dir: str) -> str:
    """Prepares ``tiny_speech`` (split ``train``) under ``data_dir``: utterance ``i`` (0-4) lasts
    0.1 * (i + 1) s, with features ``speech`` (int16 samples at 16 kHz), ``flac`` (the same length
    as FLAC bytes at 22.05 kHz, written through ``work_dir``), ``text`` "utterance i", ``target``
    "answer i" and ``id`` "utt-i". Returns the dataset name."""
    import tensorflow_datasets as tfds

    flac = []
    for i in range(TINY_SPEECH_UTTERANCES):
        path = os.path.join(work_dir, f"{i}.flac")
        audio_files.write_clip(path, 0.1 * (i + 1), sample_rate=22050, seed=i)
        with open(path, "rb") as f:
            flac.append(f.read())

    class TinySpeech(tfds.core.GeneratorBasedBuilder, skip_registration=True):
        """Five synthetic utterances: int16 samples and FLAC bytes."""

        VERSION = tfds.core.Version("1.0.0")

        def _info(self):
            return tfds.core.DatasetInfo(
                builder=self,
                features=tfds.features.FeaturesDict(
                    {
                        "speech": tfds.features.Tensor(shape=(None,), dtype=np.int16),
                        "flac": tfds.features.Tensor(shape=(), dtype=np.object_),
                        "text": tfds.features.Text(),
                        "target": tfds.features.Text(),
                        "id": tfds.features.Tensor(shape=(), dtype=np.str_),
                    }
                ),
            )

        def _split_generators(self, dl_manager):
            return {"train": self._generate_examples()}

        def _generate_examples(self):
            for i, data in enumerate(flac):
                samples = np.round(audio_files.tone(0.1 * (i + 1), seed=i) * 32767).astype(np.int16)
                texts = {"text": f"utterance {i}", "target": f"answer {i}"}
                yield f"key{i}", {"speech": samples, "flac": data, **texts, "id": f"utt-{i}"}

    # TFDS looks for the source of builders defined in packages with importlib_resources, which is
    # not installed (nor needed); a top-level module name sends it down its plain-file path instead.
    TinySpeech.__module__ = "tiny_speech_test_builder"
    TinySpeech(data_dir=data_dir, file_format="array_record").download_and_prepare()
    return TINY_SPEECH
