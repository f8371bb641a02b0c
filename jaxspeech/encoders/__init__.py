"""jaxspeech.encoders."""
