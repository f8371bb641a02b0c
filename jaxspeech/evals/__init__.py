"""jaxspeech.evals."""
