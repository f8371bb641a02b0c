"""The control tokens jaxspeech reserves in the tokenizers it trains, spelled once."""

from __future__ import annotations

PAD = "<pad>"
UNK = "<unk>"
BOS = "<s>"
EOS = "</s>"
# The model splices one audio embedding at each occurrence of this token.
AUDIO_PLACEHOLDER = "<|audio|>"
# Role markers of the built-in chat template (see jaxspeech.data.chat).
ROLE_TOKENS = {"system": "<|system|>", "user": "<|user|>", "assistant": "<|assistant|>"}
DEFAULT_NUM_CHUNK_TAGS = 16


def chunk_tag(index: int) -> str:
    """The tag before the ``index``-th (1-based) 30 s chunk of a long recording: ``<chunk_1>``, ..."""
    if index < 1:
        raise ValueError(f"chunk tags are numbered from 1, got {index}")
    return f"<chunk_{index}>"
