"""Host-side data: audio I/O and validation, sources, tokenizers and prompts, bucketing, the Grain pipeline,
packed text batches."""

# A lazy import: ``import jaxspeech.data`` stays cheap; names load on first use.
from etils import epy

with epy.lazy_api_imports(globals()):
    from jaxspeech.data.audio import load_audio
    from jaxspeech.data.pipeline import DataPipeline
    from jaxspeech.data.pipeline_config import PipelineConfig
    from jaxspeech.data.prompts import EncodedExample, encode_example
    from jaxspeech.data.sources import LibriSpeechSource, ManifestSource, TfdsSource, write_manifest
    from jaxspeech.data.speech_llm_tokens import SpeechLLMTokens, TranscriptTokens, load_speech_tokenizer
    from jaxspeech.data.text_batches import ManifestTexts, TextPipeline
    from jaxspeech.data.tokenizers import Tokenizer, load_tokenizer
    from jaxspeech.data.whisper_tokens import WhisperTokens
