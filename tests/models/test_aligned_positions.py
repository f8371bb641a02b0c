"""Rotary positions from the CTC path (``audio_positions="ctc"``): a fixed distance from each
transcript token to the audio it reads, whatever the clip's length."""

import jax.numpy as jnp
import numpy as np
import pytest

from jaxspeech.connectors.ctc_compress import labels_before
from jaxspeech.models.aligned_positions import ctc_aligned_positions
from jaxspeech.testing.speech_llm import tiny_config

P = 3  # the placeholder


def test_audio_tokens_take_the_label_count_and_the_text_after_restarts():
    tokens = jnp.array([[1, 5, P, P, P, 7, 8, 9, 10, 0]], jnp.int32)
    positions = jnp.array([[0, 1, 2, 3, 4, 5, 6, 7, 8, 8]], jnp.int32)  # padding repeats the last
    before = jnp.array([[0, 0, 1, 1, 2, 3]], jnp.int32)  # 2 CTC frames per audio token
    aligned = ctc_aligned_positions(tokens, positions, P, before, frames_per_token=2)
    np.testing.assert_array_equal(aligned, [[0, 1, 2, 3, 4, 2, 3, 4, 5, 5]])


def test_the_distance_to_the_next_label_does_not_depend_on_the_clip_length():
    """Two clips of 3 labels, one twice as long: transcript token k (after two header tokens) and the
    audio token where label k + 1 starts are the same distance apart in both."""
    blank = 0
    short = [blank, 21, blank, 22, 22, blank, 23, blank]  # labels start at frames 1, 3, 6
    long = [blank, blank, 21, 21, blank, blank, 22, blank, blank, blank, 23, 23, blank, blank, blank, blank]
    distances = []
    for path in (short, long):
        frames = len(path)
        logits = jnp.asarray(np.eye(32)[path][None] * 10.0, jnp.float32)
        before = labels_before(logits, jnp.array([frames]), blank)
        audio = frames  # one CTC frame per audio token
        tokens = jnp.asarray([[1] + [P] * audio + [40, 41] + [21, 22, 23]], jnp.int32)
        positions = jnp.arange(tokens.shape[1], dtype=jnp.int32)[None]
        aligned = np.asarray(ctc_aligned_positions(tokens, positions, P, before, frames_per_token=1))[0]
        first_transcript = 1 + audio + 2
        label_starts = [i for i in range(frames) if path[i] != blank and (i == 0 or path[i - 1] != path[i])]
        for k in range(2):  # transcript token k predicts label k + 1
            distances.append(aligned[first_transcript + k] - aligned[1 + label_starts[k + 1]])
    assert len(set(distances)) == 1, distances


@pytest.mark.parametrize(
    "changes, named",
    [
        (dict(fusion="cross_attention"), "fusion 'cross_attention'"),
        (dict(ctc_vocab_size=0), "ctc_vocab_size 0"),
        (dict(connector="qformer"), "connector 'qformer'"),
    ],
)
def test_what_ctc_positions_need_is_named(changes, named):
    changes = dict(ctc_vocab_size=32, audio_positions="ctc") | changes
    fusion, connector = changes.pop("fusion", "decoder_only"), changes.pop("connector", "frame_stack")
    with pytest.raises(ValueError, match=named):
        tiny_config(fusion, connector, **changes)
    with pytest.raises(ValueError, match="audio_positions must be one of"):
        tiny_config(audio_positions="rope")
