"""NVLM-style time-chunk tags (``task.prompt.chunk_tags``, ``chunk_frames``) from the config through the
data pipeline's batches into the hybrid fusion's model; off, the batches are those of the prompt without tags."""

import dataclasses
import os

import jax
import numpy as np
import pytest
from flax import linen as nn
from flax import traverse_util

from jaxspeech.audio_tokens import FrameStack
from jaxspeech.config_dict import load_config_file
from jaxspeech.data.prompts import encode_example
from jaxspeech.data.special_tokens import chunk_tag
from jaxspeech.data.speech_llm_tokens import SpeechLLMTokens
from jaxspeech.errors import ConfigError
from jaxspeech.recipes.build import build, read_sections
from jaxspeech.testing.tokenizer_dirs import write_chatml_dir

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
pytestmark = pytest.mark.xdist_group("repo_data")  # builds / reads data/tiny_debug in the checkout


def hybrid_run(chunk_tags: bool | None, chunk_frames: int | None = None):
    os.chdir(REPO)
    config = load_config_file("configs/hybrid.py:debug")
    if chunk_tags is not None:
        config.task.prompt.chunk_tags = chunk_tags
    if chunk_frames is not None:
        config.task.prompt.chunk_frames = chunk_frames
    return build(config, progress=False)


def first_batch(run):
    iterator = run.eval_data(run.manifest("test"), max_examples=2).iterator()
    try:
        return next(iterator)
    finally:
        iterator.close()


@pytest.fixture(scope="module")
def runs():
    return {**{tags: hybrid_run(tags) for tags in (None, False, True)}, "time": hybrid_run(True, chunk_frames=100)}


def test_tags_reach_the_batch_before_each_clips_audio(runs):
    tagged, plain = first_batch(runs[True]).batch, first_batch(runs[False]).batch
    tag_id = runs[True].tokenizer.token_to_id(chunk_tag(1))
    placeholder = runs[True].kind.model.placeholder_id
    for row_tagged, row_plain, lengths in zip(tagged.tokens, plain.tokens, tagged.feature_lengths):
        if not lengths.any():
            continue
        first_audio = int(np.argmax(row_tagged == placeholder))
        assert (row_tagged == tag_id).sum() == 1 and row_tagged[first_audio - 1] == tag_id
        untagged = row_tagged[row_tagged != tag_id]
        np.testing.assert_array_equal(untagged, row_plain[: len(untagged)])  # the tag is the only change


def test_time_chunks_each_follow_their_tag(runs):
    timed, plain = first_batch(runs["time"]).batch, first_batch(runs[False]).batch
    tags = [runs["time"].tokenizer.token_to_id(chunk_tag(k)) for k in range(1, 17)]
    placeholder = runs["time"].kind.model.placeholder_id
    rows = 0
    for row_timed, row_plain, lengths in zip(timed.tokens, plain.tokens, timed.feature_lengths):
        if not lengths.any():
            continue
        rows += 1
        chunks = -(-int(lengths[0]) // 100)  # a tag every 100 log-mel frames
        found = [int(t) for t in row_timed if t in tags]
        assert found == tags[:chunks] and chunks > 1
        assert (row_timed == placeholder).sum() == (row_plain == placeholder).sum()  # the same audio, cut
        untagged = row_timed[~np.isin(row_timed, tags)]
        np.testing.assert_array_equal(untagged, row_plain[: len(untagged)])
    assert rows


def test_chunk_token_counts_split_each_clip_at_its_token_boundaries(tmp_path):
    tokenizer = write_chatml_dir(str(tmp_path))  # has <chunk_1> .. <chunk_3>
    inline = SpeechLLMTokens(tokenizer, (FrameStack(4),), chunk_tags=True, chunk_frames=100)
    assert inline.chunk_token_counts([250]) == [25, 25, 13]  # ceil(250 / 4) = 63 placeholders in all
    assert inline.chunk_token_counts([80, 120]) == [20, 25, 5]
    assert SpeechLLMTokens(tokenizer, (), chunk_tags=True, chunk_frames=100).chunk_token_counts([250]) == [0, 0, 0]
    example = inline({"text": "hello"}, (250,))
    ids = inline.chunk_tag_ids(3)
    starts = [int(np.flatnonzero(example.tokens == i)[0]) for i in ids]
    assert np.diff(starts).tolist() == [26, 26]  # each tag, then its chunk's placeholders
    with pytest.raises(ValueError, match=r"needs the control tokens \['<chunk_4>'\]"):
        inline({"text": "hello"}, (301,))


def test_off_is_the_untagged_prompt_bit_for_bit(runs):
    default, off = first_batch(runs[None]), first_batch(runs[False])
    for name in ("tokens", "loss_mask", "segment_ids", "positions", "features"):
        np.testing.assert_array_equal(getattr(default.batch, name), getattr(off.batch, name))
    kind = runs[False].kind
    prompts = kind.example_tokens(inference=True)
    for meta in off.metadata:
        frames = int(off.batch.feature_lengths[meta["row"], meta["clip"]])
        expected = encode_example(
            kind.tokenizer,
            instruction="asr",
            audio_token_counts=[prompts.audio_tokens(frames)],
            placeholder_id=prompts.placeholder_id,
            chat=False,
        )
        np.testing.assert_array_equal(prompts({"text": meta["text"]}, (frames,)).tokens, expected.tokens)


def test_tags_change_the_hybrid_models_output(runs):
    run = runs[True]
    tagged, plain = first_batch(run).batch, first_batch(runs[False]).batch
    params = jax.jit(run.task.init_params)(jax.random.key(0), tagged)
    tag_id = run.tokenizer.token_to_id(chunk_tag(1))
    logits = jax.jit(lambda p, b: run.task.apply(p, b)[0])
    logits_tagged, logits_plain = np.asarray(logits(params, tagged)), np.asarray(logits(params, plain))
    timed = first_batch(runs["time"]).batch
    logits_timed = np.asarray(logits(params, timed))
    row = int(np.argmax(tagged.feature_lengths[:, 0] > 0))
    last_tagged = int(tagged.segment_ids[row].nonzero()[0][-1])
    last_plain = int(plain.segment_ids[row].nonzero()[0][-1])
    assert last_tagged == last_plain + 1 and (tagged.tokens[row] == tag_id).any()
    # The prompt's last position (where the answer starts) sees the tag: its prediction changes.
    assert not np.allclose(logits_tagged[row, last_tagged], logits_plain[row, last_plain], atol=1e-6)
    last_timed = int(timed.segment_ids[row].nonzero()[0][-1])
    assert not np.allclose(logits_timed[row, last_timed], logits_tagged[row, last_tagged], atol=1e-6)


def test_a_tag_the_tokenizer_lacks_is_named(tmp_path):
    tokens = SpeechLLMTokens(write_chatml_dir(str(tmp_path)), (), chunk_tags=True)  # has <chunk_1> .. <chunk_3>
    assert len(tokens.chunk_tag_ids(3)) == 3
    with pytest.raises(ValueError, match=r"needs the control tokens \['<chunk_4>'\]"):
        tokens({"text": "hello"}, (100,) * 4)


def test_chunk_frames_without_tags_is_named():
    config = load_config_file(os.path.join(REPO, "configs/hybrid.py:debug"))
    config.task.prompt.chunk_frames = 100
    with pytest.raises(ConfigError, match="task.prompt.chunk_frames: needs chunk_tags"):
        read_sections(config, need_weights=False)


@pytest.mark.slow  # ~30 s here: a training gradient of the hybrid model
def test_a_tagged_hybrid_training_batch_trains_the_tags_embedding(runs):
    run = runs[True]
    with run.train_pipeline().iterator() as batches:
        batch = next(batches).batch
    first, second = (run.tokenizer.token_to_id(chunk_tag(k)) for k in (1, 2))
    tokens = np.asarray(batch.tokens)
    assert (tokens == first).any() and not (tokens == second).any()
    params = nn.unbox(jax.jit(run.task.init_params)(jax.random.key(0), batch))
    step = jax.jit(jax.value_and_grad(lambda p, b: run.task.loss(p, b, jax.random.key(1), train=True)[0]))

    def tag_gradient(b):
        loss, grads = step(params, b)
        flat = traverse_util.flatten_dict(grads, sep="/")
        (embedding,) = [g for path, g in flat.items() if path.startswith("llm/") and "embed" in path]
        return float(loss), np.asarray(embedding)[first]

    loss, tagged = tag_gradient(batch)
    swapped_loss, swapped = tag_gradient(dataclasses.replace(batch, tokens=np.where(tokens == first, second, tokens)))
    assert np.isfinite(loss) and np.isfinite(swapped_loss) and loss != swapped_loss
    # The tag's own input embedding learns from the batch: with <chunk_2> in its place, its row's gradient
    # keeps only what the (tied) output side gives every row.
    assert np.abs(tagged - swapped).max() > 1e-6
