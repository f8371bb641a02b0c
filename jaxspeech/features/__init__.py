"""jaxspeech.features."""
