"""Tasks: a model with its loss for the trainer (``SpeechLLMTask``, ``CTCEncoderTask``, ``TextLMTask``,
``WhisperTask``), and the task kinds the recipe builds from a config's ``task.kind`` (``kinds.py``):
tokenization, decoding, pretrained weights."""

# A lazy import: ``import jaxspeech.tasks`` stays cheap; names load on first use.
from etils import epy

with epy.lazy_api_imports(globals()):
    from jaxspeech.tasks.kinds import KINDS, TaskKind
    from jaxspeech.tasks.ctc_encoder import CTCEncoderTask
    from jaxspeech.tasks.speech_llm import SpeechLLMTask
    from jaxspeech.tasks.text_lm import TextLMTask
    from jaxspeech.tasks.whisper_seq2seq import WhisperTask
