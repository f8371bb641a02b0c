"""NVLM-style time-chunk tags (``task.prompt.chunk_tags``) from the config through the data pipeline's
batches into the hybrid fusion's model; off, the batches are those of the prompt without tags."""

import os

import jax
import numpy as np
import pytest

from jaxspeech.config_dict import load_config_file
from jaxspeech.data.prompts import encode_example
from jaxspeech.data.special_tokens import chunk_tag
from jaxspeech.data.speech_llm_tokens import SpeechLLMTokens
from jaxspeech.recipes.build import build
from jaxspeech.testing.tokenizer_dirs import write_chatml_dir

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
pytestmark = pytest.mark.xdist_group("repo_data")  # builds / reads data/tiny_debug in the checkout


def hybrid_run(chunk_tags: bool | None):
    os.chdir(REPO)
    config = load_config_file("configs/hybrid.py:debug")
    if chunk_tags is not None:
        config.task.prompt.chunk_tags = chunk_tags
    return build(config, progress=False)


def first_batch(run):
    iterator = run.eval_data(run.manifest("test"), max_examples=2).iterator()
    try:
        return next(iterator)
    finally:
        iterator.close()


@pytest.fixture(scope="module")
def runs():
    return {tags: hybrid_run(tags) for tags in (None, False, True)}


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


def test_off_is_the_untagged_prompt_bit_for_bit(runs):
    default, off = first_batch(runs[None]), first_batch(runs[False])
    for name in ("tokens", "loss_mask", "segment_ids", "positions", "features"):
        np.testing.assert_array_equal(getattr(default.batch, name), getattr(off.batch, name))
    kind = runs[False].kind
    prompts = kind.example_tokens(inference=True)
    for meta in off.metadata:
        frames = int(off.batch.feature_lengths[meta["row"], meta["clip"]])
        expected = encode_example(kind.tokenizer, task="asr", audio_token_counts=[prompts.audio_tokens(frames)],
                                  placeholder_id=prompts.placeholder_id, chat=False)
        np.testing.assert_array_equal(prompts({"text": meta["text"]}, (frames,)).tokens, expected.tokens)


def test_tags_change_the_hybrid_models_output(runs):
    run = runs[True]
    tagged, plain = first_batch(run).batch, first_batch(runs[False]).batch
    params = jax.jit(run.task.init_params)(jax.random.key(0), tagged)
    tag_id = run.tokenizer.token_to_id(chunk_tag(1))
    logits = jax.jit(lambda p, b: run.task.apply(p, b)[0])
    logits_tagged, logits_plain = np.asarray(logits(params, tagged)), np.asarray(logits(params, plain))
    row = int(np.argmax(tagged.feature_lengths[:, 0] > 0))
    last_tagged = int(tagged.segment_ids[row].nonzero()[0][-1])
    last_plain = int(plain.segment_ids[row].nonzero()[0][-1])
    assert last_tagged == last_plain + 1 and (tagged.tokens[row] == tag_id).any()
    # The prompt's last position (where the answer starts) sees the tag: its prediction changes.
    assert not np.allclose(logits_tagged[row, last_tagged], logits_plain[row, last_plain], atol=1e-6)


def test_a_tag_the_tokenizer_lacks_is_named(tmp_path):
    tokens = SpeechLLMTokens(write_chatml_dir(str(tmp_path)), (), chunk_tags=True)  # has <chunk_1> .. <chunk_3>
    assert len(tokens.chunk_tag_ids(3)) == 3
    with pytest.raises(ValueError, match=r"needs the control tokens \['<chunk_4>'\]"):
        tokens({"text": "hello"}, (100,) * 4)
