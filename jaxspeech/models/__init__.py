"""jaxspeech.models."""
