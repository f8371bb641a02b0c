"""The Speech LLM's decoder LLM alone, for training on text: its parameters sit under ``llm/``
exactly as in ``SpeechLLM``, so a text-trained LLM drops into a Speech LLM unchanged."""

from __future__ import annotations

import jax
from flax import linen as nn

from jaxspeech.llm.config import LLMConfig
from jaxspeech.llm.decoder import DecoderLM


class TextLM(nn.Module):
    config: LLMConfig

    def setup(self):
        self.llm = DecoderLM(self.config)

    def __call__(
        self, tokens: jax.Array, *, segment_ids: jax.Array | None = None, positions: jax.Array | None = None
    ) -> jax.Array:
        """tokens i32[B, L] (segment_ids / positions i32[B, L] for packed rows) -> logits f32[B, L, V]."""
        return self.llm(tokens, segment_ids=segment_ids, positions=positions)[0]
