"""Greedy generation with the KV cache: identical to transformers' generate; batch == alone."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from jaxspeech.convert.hf_llm import load_hf_llm  # noqa: E402
from jaxspeech.decoding.generate import GenerationConfig, generate, pad_prompts  # noqa: E402
from jaxspeech.testing import hf_models  # noqa: E402

pytestmark = pytest.mark.parity
PROMPTS = [[5, 17, 99, 42, 8, 64, 3, 77, 21, 11, 90], [7, 7, 120], [33, 44, 55, 66, 12, 13]]
NEW = 32


def _hf_greedy(model, prompts, min_new_tokens):
    """transformers' batched greedy generate with left padding; pad (0) fills after EOS (2)."""
    tokens, segs = pad_prompts(prompts, pad_id=0, side="left")
    with torch.no_grad():
        out = model.generate(
            input_ids=torch.tensor(np.asarray(tokens), dtype=torch.long),
            attention_mask=torch.tensor(np.asarray(segs)),
            max_new_tokens=NEW,
            min_new_tokens=min_new_tokens,
            do_sample=False,
            num_beams=1,
            pad_token_id=0,
            eos_token_id=2,
        )
    new = out[:, tokens.shape[1] :].numpy()
    return np.pad(new, ((0, 0), (0, NEW - new.shape[1])))  # HF stops early once every row has ended


@pytest.fixture(scope="module", params=["llama_gqa_untied", "qwen2_bias"])
def model_and_params(request, tmp_path_factory):
    model = hf_models.build(request.param)
    path = tmp_path_factory.mktemp(request.param)
    model.save_pretrained(path, safe_serialization=True)
    return model, load_hf_llm(str(path))


@pytest.mark.parametrize("side", ["left", "right"])
@pytest.mark.parametrize("min_new_tokens", [NEW, 0])
def test_greedy_tokens_identical_to_transformers(model_and_params, side, min_new_tokens):
    model, (config, params) = model_and_params
    gen = GenerationConfig(max_new_tokens=NEW, min_new_tokens=min_new_tokens, eos_ids=(2,), pad_id=0)
    tokens, segs = pad_prompts(PROMPTS, side=side)
    ours = generate(config, params, tokens, segs, gen)
    theirs = _hf_greedy(model, PROMPTS, min_new_tokens)
    np.testing.assert_array_equal(np.asarray(ours.tokens), theirs)
    if min_new_tokens == NEW:
        assert (np.asarray(ours.lengths) == NEW).all()


def test_batched_equals_each_prompt_alone(model_and_params):
    _, (config, params) = model_and_params
    gen = GenerationConfig(max_new_tokens=12, eos_ids=(2,), pad_id=0)
    tokens, segs = pad_prompts(PROMPTS, side="right")
    batched = generate(config, params, tokens, segs, gen)
    for i, prompt in enumerate(PROMPTS):
        alone = generate(config, params, *pad_prompts([prompt]), gen)
        np.testing.assert_array_equal(np.asarray(batched.tokens[i]), np.asarray(alone.tokens[0]))
        assert int(batched.lengths[i]) == int(alone.lengths[0])


def test_beam_search_tokens_identical_to_transformers(model_and_params):
    """Beam 3 over a left-padded batch (the KV cache reordered with the beams) gives transformers'
    beam-search tokens, up to and including the end token."""
    model, (config, params) = model_and_params
    gen = GenerationConfig(max_new_tokens=10, method="beam", num_beams=3, eos_ids=(2,), pad_id=0)
    tokens, segs = pad_prompts(PROMPTS, side="left")
    ours = generate(config, params, tokens, segs, gen)
    with torch.no_grad():
        out = model.generate(
            input_ids=torch.tensor(np.asarray(tokens), dtype=torch.long),
            attention_mask=torch.tensor(np.asarray(segs)),
            max_new_tokens=10,
            num_beams=3,
            do_sample=False,
            pad_token_id=0,
            eos_token_id=2,
        )
    theirs = np.pad(out[:, tokens.shape[1] :].numpy(), ((0, 0), (0, 10 - (out.shape[1] - tokens.shape[1]))))
    lengths = np.asarray(ours.lengths)
    generated = np.arange(10)[None, :] < lengths[:, None]  # transformers pads a finished beam with the end token
    np.testing.assert_array_equal(np.where(generated, np.asarray(ours.tokens), -1), np.where(generated, theirs, -1))
    ended = lengths < 10
    assert (theirs[ended, lengths[ended] - 1] == 2).all()
