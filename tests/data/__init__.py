"""Tests of jaxspeech.data (audio, sources, batching, pipeline) and jaxspeech.types."""
