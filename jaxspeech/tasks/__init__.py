"""Tasks: a model plus its loss, in the form the trainer (``jaxspeech.train``) consumes."""
