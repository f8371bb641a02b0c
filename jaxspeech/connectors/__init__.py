"""jaxspeech.connectors."""
