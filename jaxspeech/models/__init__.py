"""Whole models: the Speech LLM (three fusions), its LLM alone (``TextLM``) and the Whisper encoder-decoder."""

# A lazy import: ``import jaxspeech.models`` stays cheap; names load on first use.
from etils import epy

with epy.lazy_api_imports(globals()):
    from jaxspeech.models.audio_encoder import (
        AudioEncoder,
        AudioEncoderConfig,
        ConformerAudioEncoderConfig,
        WhisperAudioEncoderConfig,
    )
    from jaxspeech.models.speech_llm import SpeechLLM, SpeechLLMConfig
    from jaxspeech.models.text_lm import TextLM
    from jaxspeech.models.whisper_seq2seq import (
        WhisperConfig,
        WhisperDecoderConfig,
        WhisperGenerationConfig,
        WhisperSeq2Seq,
        whisper_config,
    )
