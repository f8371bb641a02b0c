"""Rotary positions that lay the transcript out against the audio (``audio_positions="ctc"``).

With sequential positions, the audio token that a transcript token has to read sits at a rotary
distance that grows with the clip's length, so the LLM must find its place in the audio by content
alone. Here each audio token takes the position of the first audio token plus the number of labels
the CTC head's greedy path emits before its frames, and the tokens after the audio count on from
the first audio token's position again. The k-th transcript token and the audio token where the
path emits its (k+1)-th label are then always the same distance apart (the number of tokens
between the audio and the transcript), whatever the clip's length: a distance one attention head
can learn.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def ctc_aligned_positions(
    tokens: jax.Array, positions: jax.Array, placeholder_id: int, labels_before: jax.Array, frames_per_token: int
) -> jax.Array:
    """Rows of one audio span each: tokens i32[B, L] (the span marked by ``placeholder_id``) and their
    sequential positions i32[B, L]; ``labels_before`` i32[B, T]: labels the CTC path emits before each
    of the clip's CTC frames, ``frames_per_token`` CTC frames per audio token -> positions i32[B, L].

    Audio token j: its span's first position + labels_before[frames_per_token * j]. A token after the
    span: its position minus the span's length. Tokens before the span keep theirs."""
    is_audio = tokens == placeholder_id
    seen = jnp.cumsum(is_audio, axis=1, dtype=jnp.int32)  # audio tokens up to and including each one
    total = seen[:, -1:]
    ordinal = seen - 1  # j of the j-th audio token
    frame = jnp.clip(ordinal * frames_per_token, 0, labels_before.shape[1] - 1)
    emitted = jnp.take_along_axis(labels_before, frame, axis=1)
    after = ~is_audio & (seen == total) & (total > 0)
    shift = jnp.where(is_audio, ordinal - emitted, jnp.where(after, total, 0))
    return positions - shift
