"""CTC compression (Speech-LLaMA's CTC compressor): one audio vector per label the CTC head emits;
and the label posteriors behind each inline audio token (``posteriors_per_token``).

The greedy CTC path of each clip splits its frames into runs: a run starts at a non-blank frame
whose label differs from the previous frame's, and takes the frames that repeat its label; blank
frames belong to no run. Averaging the encoder states over each run turns T frames into about as
many vectors as the transcript has tokens, in order: a memory the LLM can read one token at a time.
The run boundaries come from an argmax (no gradient); the averaged values keep their gradients.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def run_starts(labels: jax.Array, lengths: jax.Array, blank_id: int) -> tuple[jax.Array, jax.Array]:
    """Greedy labels i32[N, T] + lengths i32[N] -> (frames that emit a label bool[N, T]: valid and not
    blank; frames where a run starts bool[N, T]: emitting a label unlike the previous frame's)."""
    frames = labels.shape[1]
    valid = jnp.arange(frames)[None, :] < lengths[:, None]
    previous = jnp.pad(labels[:, :-1], ((0, 0), (1, 0)), constant_values=blank_id)
    emitted = valid & (labels != blank_id)
    return emitted, emitted & (labels != previous)


def ctc_runs(labels: jax.Array, lengths: jax.Array, blank_id: int) -> tuple[jax.Array, jax.Array]:
    """Greedy labels i32[N, T] + lengths i32[N] -> (run index of every frame i32[N, T], -1 where a
    frame is blank or padding; number of runs i32[N])."""
    emitted, starts = run_starts(labels, lengths, blank_id)
    run = jnp.cumsum(starts, axis=1) - 1
    return jnp.where(emitted, run, -1).astype(jnp.int32), starts.sum(axis=1).astype(jnp.int32)


def labels_before(ctc_logits: jax.Array, lengths: jax.Array, blank_id: int) -> jax.Array:
    """CTC logits f[N, T, K] + lengths i32[N] -> i32[N, T]: how many labels the greedy path emits
    before each frame (no gradient)."""
    labels = jnp.argmax(jax.lax.stop_gradient(ctc_logits), axis=-1)
    _, starts = run_starts(labels, lengths, blank_id)
    return (jnp.cumsum(starts, axis=1) - starts).astype(jnp.int32)


def average_runs(values: jax.Array, run: jax.Array) -> jax.Array:
    """values f[N, T, D], run index i32[N, T] (-1: no run) -> per-run means f[N, T, D] (run r at
    position r; positions past the last run are zero)."""
    frames = values.shape[1]
    members = jax.nn.one_hot(run, frames, dtype=values.dtype)  # -1 gives an all-zero row
    sums = jnp.einsum("ntr,ntd->nrd", members, values)
    counts = members.sum(axis=1)[..., None]
    return sums / jnp.maximum(counts, 1)


def ctc_compress(
    hidden: jax.Array, ctc_logits: jax.Array, lengths: jax.Array, blank_id: int
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Encoder states f[N, T, E] + their CTC logits f[N, T, K] + lengths i32[N] ->
    (run-averaged states f[N, T, E], run-averaged CTC posteriors f32[N, T, K], run counts i32[N])."""
    labels = jnp.argmax(jax.lax.stop_gradient(ctc_logits), axis=-1)
    run, counts = ctc_runs(labels, lengths, blank_id)
    posteriors = jax.nn.softmax(ctc_logits.astype(jnp.float32), axis=-1)
    return average_runs(hidden, run), average_runs(posteriors, run), counts


def posteriors_per_token(
    ctc_logits: jax.Array, lengths: jax.Array, blank_id: int, frames_per_token: int, num_tokens: int
) -> jax.Array:
    """CTC logits f[N, F, K] + lengths i32[N] -> f32[N, num_tokens, K]: for audio token j, the label
    posteriors of its CTC frames j * frames_per_token ... (j + 1) * frames_per_token - 1 summed, blank
    left out and frames past ``lengths`` counted as zero, so a token covering one emitted label holds
    about that label's one-hot and a silent token about nothing."""
    n, frames, vocab = ctc_logits.shape
    needed = num_tokens * frames_per_token
    if needed < frames:
        raise ValueError(f"{num_tokens} audio tokens of {frames_per_token} CTC frames cannot cover {frames} frames")
    posteriors = jax.nn.softmax(ctc_logits.astype(jnp.float32), axis=-1)
    valid = jnp.arange(frames)[None, :, None] < lengths[:, None, None]
    posteriors = jnp.where(valid & (jnp.arange(vocab) != blank_id)[None, None, :], posteriors, 0.0)
    posteriors = jnp.pad(posteriors, ((0, 0), (0, needed - frames), (0, 0)))
    return posteriors.reshape(n, num_tokens, frames_per_token, vocab).sum(axis=2)
