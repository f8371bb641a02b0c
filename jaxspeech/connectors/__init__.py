"""Connectors: encoder frames -> (downsampled) embeddings in the LLM's input space."""
