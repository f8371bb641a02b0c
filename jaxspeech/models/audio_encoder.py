"""One front door to the audio encoders (Whisper, Conformer) for models that combine them with an LLM.

``AudioEncoder`` maps log-mel features f[B, T, F] with lengths i32[B] to hidden states f[B, T', E]
with lengths i32[B]; with ``output_layers`` it concatenates the chosen layers' states along the
feature axis (multi-layer features, SALMONN-2 / Ultravox style).
"""

from __future__ import annotations

import dataclasses
from typing import Union

import jax
import jax.numpy as jnp
from flax import linen as nn

from jaxspeech.encoders.conformer import ConformerConfig, ConformerEncoder, encoder_lengths
from jaxspeech.encoders.whisper import WhisperEncoder, WhisperEncoderConfig


@dataclasses.dataclass(frozen=True)
class ConformerSubsamplingStep:
    """The Conformer front end as a downsampling step (``lengths`` / ``output_length``) for
    ``jaxspeech.audio_tokens``."""

    config: ConformerConfig

    def lengths(self, n):
        return encoder_lengths(n, self.config)

    def output_length(self, n: int) -> int:
        out = int(self.lengths(n))
        if out < 1:
            raise ValueError(f"{n} frames leave no Conformer output frames")
        return out


@dataclasses.dataclass(frozen=True)
class WhisperAudioEncoderConfig:
    """``kind = "whisper"``: a Whisper encoder (``whisper``); ``output_layers`` () = the final output."""

    kind: str = "whisper"
    whisper: WhisperEncoderConfig = WhisperEncoderConfig()
    output_layers: tuple[int, ...] = ()

    @property
    def n_mels(self) -> int:
        return self.whisper.n_mels

    @property
    def width(self) -> int:
        """Feature width of the output (times the number of concatenated layers)."""
        return self.whisper.d_model * max(1, len(self.output_layers))

    @property
    def downsample(self) -> tuple:
        """Length arithmetic from input frames to output frames."""
        return self.whisper.downsample

    def replace(self, **changes) -> "WhisperAudioEncoderConfig":
        return dataclasses.replace(self, **changes)


@dataclasses.dataclass(frozen=True)
class ConformerAudioEncoderConfig:
    """``kind = "conformer"``: a Conformer encoder (``conformer``); ``output_layers`` () = the final output."""

    kind: str = "conformer"
    conformer: ConformerConfig = ConformerConfig()
    output_layers: tuple[int, ...] = ()

    @property
    def n_mels(self) -> int:
        return self.conformer.input_dim

    @property
    def width(self) -> int:
        return self.conformer.d_model * max(1, len(self.output_layers))

    @property
    def downsample(self) -> tuple:
        return (ConformerSubsamplingStep(self.conformer),)

    def replace(self, **changes) -> "ConformerAudioEncoderConfig":
        return dataclasses.replace(self, **changes)


# One config dataclass per encoder kind; an experiment config picks one with ``kind``.
AudioEncoderConfig = Union[WhisperAudioEncoderConfig, ConformerAudioEncoderConfig]


class AudioEncoder(nn.Module):
    """(features f[B, T, F], lengths i32[B]) -> (hidden f[B, T', E], lengths i32[B])."""

    config: AudioEncoderConfig

    @nn.compact
    def __call__(self, features: jax.Array, lengths: jax.Array, *, train: bool = False):
        c = self.config
        layers = c.output_layers or None
        if c.kind == "whisper":
            out = WhisperEncoder(c.whisper, name="whisper")(features, lengths, output_layers=layers)
            states, out_lengths = (out.layer_states if layers else (out.hidden,)), out.lengths
        else:
            result = ConformerEncoder(c.conformer, name="conformer")(
                features, lengths, train=train, hidden_layers=layers
            )
            out_lengths = result[1]
            states = tuple(result[2]) if layers else (result[0],)
        return jnp.concatenate(states, axis=-1), out_lengths
