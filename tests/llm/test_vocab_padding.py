"""A vocabulary padded for sharding (``LLMConfig.vocab_multiple``) changes nothing a user sees: the
real tokens' logits equal transformers', the padding ids are never generated (even when their
weights would win), the loss is the unpadded model's, and export writes the checkpoint's rows."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from jaxspeech.convert.hf_llm import export_hf_llm, load_hf_llm  # noqa: E402
from jaxspeech.decoding.generate import GenerationConfig, generate, pad_prompts  # noqa: E402
from jaxspeech.llm.decoder import DecoderLM  # noqa: E402
from jaxspeech.losses import next_token_loss  # noqa: E402
from jaxspeech.testing import hf_models  # noqa: E402

pytestmark = pytest.mark.parity
VOCAB, MULTIPLE, ROWS = 130, 64, 192  # like Llama-3 + the audio placeholder: 130 tokens split over nothing


UNTIED, TIED = "llama_gqa_untied", "llama_gqa_tied_llama3rope"
_saved: dict = {}


def _checkpoint(name, tmp_path_factory):
    """(transformers model, its directory) of ``hf_models.CONFIGS[name]`` with ``VOCAB`` tokens, saved once."""
    if name not in _saved:
        path = tmp_path_factory.mktemp(name)
        model = hf_models.build(name, vocab_size=VOCAB)
        model.save_pretrained(path, safe_serialization=True)
        _saved[name] = model, str(path)
    return _saved[name]


@pytest.fixture(scope="module", params=[UNTIED, TIED])
def checkpoint(request, tmp_path_factory):
    return _checkpoint(request.param, tmp_path_factory)


def _logits(config, params, tokens, segment_ids):
    return np.asarray(
        jax.jit(lambda p, t, s: DecoderLM(config).apply(p, t, segment_ids=s)[0])(params, tokens, segment_ids)
    )


def test_real_tokens_keep_their_logits_and_padding_ids_get_minus_infinity(checkpoint):
    model, path = checkpoint
    config, params = load_hf_llm(path, vocab_multiple=MULTIPLE)
    assert config.vocab_size == VOCAB and config.padded_vocab_size == ROWS
    assert params["params"]["embed_tokens"]["embedding"].shape == (ROWS, 64)
    tokens, segment_ids = pad_prompts([[5, 17, 99, 129, 3], [7, 8]], side="right")  # transformers' positions
    padded = _logits(config, params, tokens, segment_ids)
    unpadded = _logits(*load_hf_llm(path), tokens, segment_ids)
    with torch.no_grad():
        theirs = model(
            input_ids=torch.tensor(np.asarray(tokens), dtype=torch.long),
            attention_mask=torch.tensor(np.asarray(segment_ids)),
        ).logits.numpy()
    real = np.asarray(segment_ids).astype(bool)
    np.testing.assert_allclose(padded[..., :VOCAB], unpadded, rtol=0, atol=1e-6)  # a wider matmul, same values
    assert np.abs(padded[..., :VOCAB][real] - theirs[real]).max() <= 1e-4
    assert np.all(padded[..., VOCAB:] == -np.inf)

    # The loss over the padded logits is the unpadded model's, label smoothing and z-loss included.
    mask = jnp.asarray(segment_ids, jnp.float32)
    for smoothing in (0.0, 0.1):
        a = next_token_loss(jnp.asarray(padded), tokens, mask, z_loss=1e-4, label_smoothing=smoothing)
        b = next_token_loss(jnp.asarray(unpadded), tokens, mask, z_loss=1e-4, label_smoothing=smoothing)
        np.testing.assert_allclose(np.asarray(a.loss), np.asarray(b.loss), rtol=1e-6)


# Each search method once, on both ways the output layer holds the padding (an untied lm_head's
# columns, a tied embedding's rows): six generate compiles would add a minute to the default run.
@pytest.mark.parametrize("name, method", [(UNTIED, "greedy"), (TIED, "sample"), (UNTIED, "beam"), (TIED, "greedy")])
def test_padding_ids_are_never_generated_even_when_their_weights_would_win(name, method, tmp_path_factory):
    _, path = _checkpoint(name, tmp_path_factory)
    config, params = load_hf_llm(path, vocab_multiple=MULTIPLE)
    # Padding rows far larger than any real row: unmasked, their logits would lead at every step.
    llm = params["params"]
    table = "embed_tokens" if config.tie_word_embeddings else "lm_head"
    key = "embedding" if config.tie_word_embeddings else "kernel"
    weights = np.array(llm[table][key])
    if config.tie_word_embeddings:
        weights[VOCAB:] = 100.0 * weights[:1]
    else:
        weights[:, VOCAB:] = 100.0 * weights[:, :1]
    llm[table][key] = weights
    tokens, segment_ids = pad_prompts([[5, 17, 99], [7, 8]])
    assert np.all(_logits(config, params, tokens, segment_ids)[..., VOCAB:] == -np.inf)
    gen = GenerationConfig(max_new_tokens=6, method=method, num_beams=3, eos_ids=(2,))
    out = generate(config, params, tokens, segment_ids, gen, rng=jax.random.key(0) if method == "sample" else None)
    generated = np.asarray(out.tokens)
    assert generated.shape == (2, 6) and generated.max() < VOCAB, generated


def test_export_drops_the_padding(checkpoint, tmp_path):
    model, path = checkpoint
    config, params = load_hf_llm(path, vocab_multiple=MULTIPLE)
    export_hf_llm(config, params, str(tmp_path), model.config.model_type)
    reloaded = transformers.AutoModelForCausalLM.from_pretrained(tmp_path, dtype=torch.float32).eval()
    assert reloaded.config.vocab_size == VOCAB
    original = dict(model.state_dict())
    for name, tensor in reloaded.state_dict().items():
        np.testing.assert_array_equal(tensor.numpy(), original[name].numpy(), err_msg=name)
