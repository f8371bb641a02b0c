"""Checkpoint converters: HF Llama/Qwen2, HF and OpenAI Whisper, Parakeet, Qwen2-Audio (safetensors)."""

# A lazy import: ``import jaxspeech.convert`` stays cheap; names load on first use.
from etils import epy

with epy.lazy_api_imports(globals()):
    from jaxspeech.convert.hf_llm import export_hf_llm, load_hf_llm, load_hf_llm_config
    from jaxspeech.convert.hf_whisper import (
        export_hf_whisper,
        load_hf_whisper,
        load_hf_whisper_encoder,
        load_openai_whisper,
    )
    from jaxspeech.convert.parakeet import load_parakeet
    from jaxspeech.convert.qwen2_audio import load_hf_qwen2_audio
    from jaxspeech.convert.safetensors_io import CheckpointError, SafetensorsReader, write_safetensors
