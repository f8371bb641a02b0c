"""Session fixtures: one random micro Whisper (HF model + its saved directory + our imported params)."""

from __future__ import annotations

import dataclasses

import pytest

from jaxspeech.convert.hf_whisper import load_generation_config, load_hf_whisper
from jaxspeech.models.whisper_seq2seq import WhisperConfig, WhisperGenerationConfig
from jaxspeech.testing.whisper import micro_hf_model, save_micro_dir


@dataclasses.dataclass
class Micro:
    hf: object  # transformers WhisperForConditionalGeneration
    directory: str
    config: WhisperConfig
    params: dict
    generation: WhisperGenerationConfig


@pytest.fixture(scope="session")
def micro(tmp_path_factory) -> Micro:
    hf = micro_hf_model()
    directory = save_micro_dir(hf, str(tmp_path_factory.mktemp("micro_whisper")))
    config, params = load_hf_whisper(directory)
    return Micro(hf, directory, config, params, load_generation_config(directory))
