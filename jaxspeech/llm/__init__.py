"""jaxspeech.llm."""
