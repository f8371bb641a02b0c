"""Tasks: a model with its loss for the trainer (``SpeechLLMTask``, ``WhisperTask``), and the task
kinds the recipe builds from a config's ``task.kind`` (``kinds.py``): tokenization, decoding,
pretrained weights."""
