"""CTC compression: run boundaries against a hand-worked CTC path, run means, and the model wiring;
the CTC posteriors behind each inline audio token (``ctc_embed`` without compression)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxspeech.connectors.config import FrameStackConnectorConfig
from jaxspeech.connectors.ctc_compress import average_runs, ctc_compress, ctc_runs, posteriors_per_token
from jaxspeech.models.speech_llm import SpeechLLM
from jaxspeech.testing.speech_llm import init_params, make_batch, tiny_config

BLANK = 0


def test_runs_follow_the_collapsed_ctc_path():
    #                 a  a  _  a  b  b  _  _  c  | padding
    labels = jnp.array([[3, 3, 0, 3, 4, 4, 0, 0, 5, 5, 5], [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]])
    run, counts = ctc_runs(labels, jnp.array([9, 11]), BLANK)
    assert run.tolist() == [[0, 0, -1, 1, 2, 2, -1, -1, 3, -1, -1], [-1] * 11]
    assert counts.tolist() == [4, 0]


def test_average_runs_puts_run_means_first_and_zeros_after():
    values = jnp.arange(6, dtype=jnp.float32).reshape(1, 6, 1) * 10
    run = jnp.array([[0, 0, -1, 1, 1, 1]])
    out = average_runs(values, run)
    assert out[0, :, 0].tolist() == [5.0, 40.0, 0.0, 0.0, 0.0, 0.0]


def test_compress_keeps_gradients_of_the_values():
    logits = jax.nn.one_hot(jnp.array([[2, 2, 0, 1]]), 3) * 5.0
    hidden = jnp.ones((1, 4, 2))

    def total(h, z):
        states, posteriors, _ = ctc_compress(h, z, jnp.array([4]), BLANK)
        return states.sum() + posteriors[:, :, 2].sum()

    grad_h, grad_z = jax.grad(total, argnums=(0, 1))(hidden, logits)
    assert grad_h[0, :, 0].tolist() == [0.5, 0.5, 0.0, 1.0]  # run means: blank frames get nothing
    assert float(jnp.abs(grad_z).sum()) > 0


def _compressed_config(**changes):
    base = tiny_config("cross_attention", ctc_vocab_size=11)
    connector = FrameStackConnectorConfig(stack=1, output_size=32, hidden_size=40)
    return base.replace(connector=connector, ctc_compress=True, **changes)


@pytest.mark.parametrize("embed", [False, True])
def test_memory_has_one_vector_per_ctc_label(embed):
    config = _compressed_config(ctc_embed=embed)
    model = SpeechLLM(config)
    batch = make_batch(config, [([40], [1, 5, 6], [7, 8, 9, 10]), ([23], [1, 5], [11, 12])], frames=48)
    params = init_params(model, batch)
    _, (ctc_logits, ctc_lengths) = model.apply(
        params,
        batch["tokens"],
        batch["features"],
        batch["feature_lengths"],
        segment_ids=batch["segment_ids"],
        with_ctc=True,
    )
    audio = model.apply(params, batch["features"], batch["feature_lengths"], method=SpeechLLM.encode_audio)
    runs = []
    for row in range(2):
        path = np.asarray(ctc_logits[row, : int(ctc_lengths[row])]).argmax(-1)
        collapsed = [label for i, label in enumerate(path) if label != BLANK and (i == 0 or label != path[i - 1])]
        assert int(audio.lengths[row, 0]) == len(collapsed)
        assert not np.any(np.asarray(audio.embeds[row, 0, len(collapsed) :]))
        runs.append(len(collapsed))
    assert min(runs) > 0, runs  # the random CTC head emits labels, so the check above compares real runs


def test_posteriors_per_token_sum_each_tokens_frames_without_blank_or_padding():
    #          token 0: a _ | token 1: b b | token 2: _ c | token 3: c (length 7) + padding
    path = jnp.array([[1, 0, 2, 2, 0, 3, 3, 0]])
    logits = jax.nn.one_hot(path, 4) * 50.0
    out = posteriors_per_token(logits, jnp.array([7]), BLANK, frames_per_token=2, num_tokens=4)
    np.testing.assert_allclose(out[0], [[0, 1, 0, 0], [0, 0, 2, 0], [0, 0, 0, 1], [0, 0, 0, 1]], atol=1e-6)
    padded = posteriors_per_token(logits[:, :7], jnp.array([7]), BLANK, frames_per_token=2, num_tokens=4)
    np.testing.assert_allclose(padded, out, atol=1e-6)  # a last token short of frames is padded
    with pytest.raises(ValueError, match="3 audio tokens of 2 CTC frames cannot cover 8 frames"):
        posteriors_per_token(logits, jnp.array([7]), BLANK, frames_per_token=2, num_tokens=3)


def test_inline_audio_tokens_gain_the_embedding_of_their_ctc_posteriors():
    """decoder_only, frame stacking by 2: each audio token = the connector's output + (the summed
    non-blank posteriors of its 2 CTC frames) @ the LLM's embedding table; the parameters are the
    same with and without it."""
    plain = tiny_config("decoder_only", ctc_vocab_size=11)
    hinted = plain.replace(ctc_embed=True)
    batch = make_batch(plain, [([40], [1, 5, 6], [7, 8, 9]), ([23], [1, 5], [11, 12])], frames=48)
    params = init_params(SpeechLLM(hinted), batch)
    assert jax.tree.structure(params) == jax.tree.structure(init_params(SpeechLLM(plain), batch))
    encode = lambda config: SpeechLLM(config).apply(
        params, batch["features"], batch["feature_lengths"], method=SpeechLLM.encode_audio
    )
    base, with_hints = encode(plain), encode(hinted)
    ctc_logits, ctc_lengths = SpeechLLM(plain).apply(
        params, batch["features"], batch["feature_lengths"], method=SpeechLLM.ctc_from_features
    )
    tokens = base.embeds.shape[2]
    posteriors = posteriors_per_token(ctc_logits, ctc_lengths, BLANK, 2, tokens)
    table = params["params"]["llm"]["embed_tokens"]["embedding"][:11]
    hints = np.asarray(posteriors @ table).reshape(base.embeds.shape)
    valid = np.arange(tokens)[None, None, :] < np.asarray(base.lengths)[..., None]
    expected = np.where(valid[..., None], np.asarray(base.embeds) + hints, 0.0)
    np.testing.assert_allclose(with_hints.embeds, expected, atol=1e-5)
    assert np.abs(hints[valid]).max() > 1e-3  # the hints are not nothing


def test_the_hints_pass_no_gradient_to_the_ctc_head():
    """With sequential positions and no CTC loss, the CTC head reaches the LLM's logits only through
    the hints, which are gradient-stopped: its gradient is zero while the connector's is not."""
    config = tiny_config("decoder_only", ctc_vocab_size=11, ctc_embed=True)
    model = SpeechLLM(config)
    batch = make_batch(config, [([40], [1, 5, 6], [7, 8, 9, 10]), ([23], [1, 5], [11, 12])], frames=48)
    params = init_params(model, batch)

    def total(p):
        logits = model.apply(
            p, batch["tokens"], batch["features"], batch["feature_lengths"], segment_ids=batch["segment_ids"]
        )
        return jnp.sum(logits**2)

    grads = jax.grad(total)(params)["params"]
    assert all(float(jnp.abs(g).max()) == 0.0 for g in jax.tree.leaves(grads["ctc_head"]))
    assert max(float(jnp.abs(g).max()) for g in jax.tree.leaves(grads["connector"])) > 0.0


def test_bad_combinations_raise_clear_errors():
    with pytest.raises(ValueError, match="ctc_compress needs fusion 'cross_attention'"):
        tiny_config("decoder_only", ctc_vocab_size=11, ctc_compress=True)
    with pytest.raises(ValueError, match="ctc_compress needs a CTC head"):
        tiny_config("cross_attention", ctc_compress=True)
    with pytest.raises(ValueError, match="ctc_embed needs a CTC head whose vocabulary lies inside the LLM's"):
        tiny_config("decoder_only", ctc_embed=True)
    with pytest.raises(ValueError, match="ctc_embed without ctc_compress needs inline audio tokens"):
        tiny_config("cross_attention", ctc_vocab_size=11, ctc_embed=True)
    with pytest.raises(ValueError, match="connector 'qformer'"):
        tiny_config("decoder_only", "qformer", ctc_vocab_size=11, ctc_embed=True)
    with pytest.raises(ValueError, match="ctc_embed with ctc_compress needs a connector that keeps the length"):
        tiny_config("cross_attention", ctc_vocab_size=11, ctc_compress=True, ctc_embed=True)  # stack 2
