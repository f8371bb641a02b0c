"""Full models: the Speech LLM and the Whisper encoder-decoder baseline."""
