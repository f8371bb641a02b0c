"""SpeechLLM fusion modes: splicing, zero-gate identity, padding invariance, errors, one train step."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxspeech.llm.decoder import DecoderLM
from jaxspeech.losses import next_token_loss
from jaxspeech.models.speech_llm import AudioEmbeddings, SpeechLLM, splice_audio
from jaxspeech.testing.speech_llm import PLACEHOLDER, init_params, make_batch, row, tiny_config

ROWS = [([40], [1, 5, 6], [7, 8, 9, 10]), ([23], [1, 5], [11, 12])]
TWO_CLIPS = [([40, 17], [1, 5, 6], [7, 8, 9]), ([23], [1, 5], [11, 12, 13, 14, 15])]


def _apply(model, params, batch, **kwargs):
    return model.apply(
        params, batch["tokens"], batch["features"], batch["feature_lengths"], segment_ids=batch["segment_ids"], **kwargs
    )


def test_decoder_only_equals_llm_on_hand_built_embeddings():
    config = tiny_config("decoder_only")
    model = SpeechLLM(config)
    batch = make_batch(config, TWO_CLIPS, frames=48)
    params = init_params(model, batch)
    logits = _apply(model, params, batch)

    audio = model.apply(params, batch["features"], batch["feature_lengths"], method=SpeechLLM.encode_audio)
    text = model.apply(params, batch["tokens"], method=lambda m, t: m.llm.embed(t))
    hand = np.array(text)
    for b in range(2):
        pieces = [np.asarray(audio.embeds[b, c, : int(audio.lengths[b, c])]) for c in range(audio.lengths.shape[1])]
        flat = np.concatenate(pieces)
        positions = np.nonzero(np.asarray(batch["tokens"][b]) == PLACEHOLDER)[0]
        assert len(positions) == len(flat)
        hand[b, positions] = flat
    expected = model.apply(
        params, jnp.asarray(hand), batch["segment_ids"], method=lambda m, e, s: m.llm(inputs_embeds=e, segment_ids=s)[0]
    )
    np.testing.assert_allclose(np.asarray(logits), np.asarray(expected), atol=1e-6)


@pytest.mark.parametrize("fusion", ["cross_attention", pytest.param("hybrid", marks=pytest.mark.slow)])
def test_zero_gates_leave_the_text_llm_unchanged_and_get_gradients(fusion):
    config = tiny_config(fusion)
    model = SpeechLLM(config)
    rows = [([40], [1, 5, 6], [7, 8, 9, 10])]
    batch = make_batch(config, rows, frames=48)
    params = init_params(model, batch)
    if fusion == "cross_attention":
        logits = _apply(model, params, batch)
        llm_params = {"params": params["params"]["llm"]}
        text_only, _ = DecoderLM(config.llm).apply(llm_params, batch["tokens"], segment_ids=batch["segment_ids"])
        np.testing.assert_array_equal(np.asarray(logits), np.asarray(text_only))

    def loss(p):
        return next_token_loss(_apply(model, p, batch), batch["tokens"], batch["segment_ids"]).loss

    grads = jax.grad(loss)(params)["params"]["xattn"]
    gate_grads = [float(np.abs(grads[f"blocks_{i}"][g])) for i in range(2) for g in ("attn_gate", "mlp_gate")]
    assert all(g > 0 for g in gate_grads), gate_grads


def test_open_gates_start_at_gate_init_and_let_audio_in():
    config = tiny_config("cross_attention")
    config = config.replace(xattn=dataclasses.replace(config.xattn, gate_init=1.0))
    model = SpeechLLM(config)
    batch = make_batch(config, [([40], [1, 5, 6], [7, 8, 9, 10])], frames=48)
    params = init_params(model, batch)
    gates = [float(params["params"]["xattn"][f"blocks_{i}"][g]) for i in range(2) for g in ("attn_gate", "mlp_gate")]
    assert gates == [1.0] * 4
    louder = dict(batch, features=batch["features"] * 2.0)
    assert not np.allclose(np.asarray(_apply(model, params, batch)), np.asarray(_apply(model, params, louder)))


def test_ctc_from_features_equals_the_ctc_output_of_the_full_forward():
    config = tiny_config("decoder_only", ctc_vocab_size=11)
    model = SpeechLLM(config)
    batch = make_batch(config, TWO_CLIPS, frames=48)
    params = init_params(model, batch)
    _, (full_logits, full_lengths) = _apply(model, params, batch, with_ctc=True)
    logits, lengths = model.apply(
        params, batch["features"], batch["feature_lengths"], method=SpeechLLM.ctc_from_features
    )
    assert logits.shape == full_logits.shape and logits.shape[-1] == 11
    np.testing.assert_array_equal(np.asarray(lengths), np.asarray(full_lengths))
    np.testing.assert_array_equal(np.asarray(logits), np.asarray(full_logits))
    assert np.asarray(lengths).tolist() == [20, 9, 12, 0]  # clips of 40, 17, 23 frames halved; row 1 has one clip
    no_head = SpeechLLM(tiny_config("decoder_only"))
    with pytest.raises(ValueError, match="no CTC head"):
        no_head.apply(
            init_params(no_head, batch), batch["features"], batch["feature_lengths"], method=SpeechLLM.ctc_from_features
        )


# The Q-Former and hybrid cases take about a minute each to compile: run with -m slow.
@pytest.mark.parametrize(
    "fusion,connector",
    [
        ("decoder_only", "frame_stack"),
        pytest.param("decoder_only", "qformer", marks=pytest.mark.slow),
        ("decoder_only", "conv"),
        ("cross_attention", "linear"),
        pytest.param("hybrid", "frame_stack", marks=pytest.mark.slow),
    ],
)
def test_batched_equals_unbatched(fusion, connector):
    config = tiny_config(fusion, connector)
    model = SpeechLLM(config)
    batch = make_batch(config, TWO_CLIPS, frames=48)
    params = init_params(model, batch)
    if fusion != "decoder_only":  # open the gates so the audio memory matters
        params = jax.tree_util.tree_map_with_path(
            lambda path, x: jnp.full_like(x, 0.5) if "gate" in jax.tree_util.keystr(path) else x, params
        )
    logits = _apply(model, params, batch)
    for b, (clip_frames, _, _) in enumerate(TWO_CLIPS):
        length = int(batch["segment_ids"][b].sum())
        alone = row(batch, b, length, len(clip_frames), max(clip_frames))
        single = _apply(model, params, alone)
        np.testing.assert_allclose(np.asarray(logits[b, :length]), np.asarray(single[0]), atol=2e-5)


@pytest.mark.slow  # about 80 s of compiling; the hybrid config's debug step in tests/recipes/test_configs.py is the fast check
def test_hybrid_trains_one_step():
    config = tiny_config("hybrid")
    model = SpeechLLM(config)
    batch = make_batch(config, ROWS, frames=48)
    params = init_params(model, batch)
    optimizer = optax.adam(1e-2)
    opt_state = optimizer.init(params)

    def loss(p):
        return next_token_loss(_apply(model, p, batch), batch["tokens"], batch["segment_ids"]).loss

    before, grads = jax.jit(jax.value_and_grad(loss))(params)
    updates, _ = optimizer.update(grads, opt_state, params)
    after = jax.jit(loss)(optax.apply_updates(params, updates))
    assert np.isfinite(before) and after < before


def test_splice_handles_clip_boundaries():
    embeds = jnp.arange(2 * 3, dtype=jnp.float32).reshape(1, 2, 3, 1) + 100
    audio = AudioEmbeddings(embeds, jnp.array([[2, 3]]))
    tokens = jnp.array([[9, PLACEHOLDER, PLACEHOLDER, 9, PLACEHOLDER, PLACEHOLDER, PLACEHOLDER]])
    out = splice_audio(jnp.zeros((1, 7, 1)), tokens, PLACEHOLDER, audio)
    assert list(np.asarray(out[0, :, 0])) == [0, 100, 101, 0, 103, 104, 105]


def test_bad_inputs_raise_clear_errors():
    config = tiny_config("decoder_only")
    model = SpeechLLM(config)
    batch = make_batch(config, ROWS, frames=48)
    params = init_params(model, batch)
    short = dict(batch, tokens=batch["tokens"].at[0, 4].set(20))  # one placeholder too few in row 0
    with pytest.raises(ValueError, match="row 0 has .* audio placeholder tokens .* but its clips give"):
        _apply(model, params, short)
    too_long = make_batch(config, [([210], [1], [2])], frames=210)
    with pytest.raises(ValueError, match="210 frames, more than max_audio_frames=200"):
        _apply(model, params, too_long)
    with pytest.raises(ValueError, match="needs an xattn"):
        tiny_config("decoder_only").replace(fusion="hybrid", xattn=None)
