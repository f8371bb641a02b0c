"""Helpers for tests of jaxspeech and of projects built on it: small models, synthetic audio files and
manifests, tokenizer directories, a tiny trainer task, Pallas kernel cases.

audio_files.py (WAV/FLAC/OGG files and manifests) · tiny_task.py / pipeline_data.py (a small
``Task`` and its data for trainer tests) · speech_llm.py / random_params.py (tiny Speech-LLM configs,
batches, parameters) · conformer.py · whisper.py (micro Whisper models; needs torch and
transformers, the [dev] extra) · hf_parakeet.py / hf_models.py (transformers references; [dev]) ·
tokenizer_dirs.py (HF tokenizer directories built offline) · flash_cases.py (flash-attention
inputs and tolerances). Nothing outside this package imports it.
"""
