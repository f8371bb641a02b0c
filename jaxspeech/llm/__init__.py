"""Llama / Qwen2-family decoder LLMs."""
