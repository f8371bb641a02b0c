"""jaxspeech.convert."""
