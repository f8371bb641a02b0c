"""jaxspeech.data."""
