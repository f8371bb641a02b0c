"""Architecture presets are the released checkpoints' facts: transformers builds each preset's model
(on the meta device: no memory, no download) with the published parameter count, and jaxspeech's
model of the same preset has the same parameters."""

import math

import jax
import pytest

from jaxspeech.convert import presets
from jaxspeech.convert.hf_llm import config_from_hf
from jaxspeech.convert.hf_whisper import config_from_hf as whisper_config_from_hf

# Parameter counts of the released checkpoints (Hugging Face model pages; tied output heads counted once).
PUBLISHED = {
    "Qwen2-0.5B": 494_032_768,
    "Qwen2.5-0.5B": 494_032_768,
    "Qwen2-1.5B": 1_543_714_304,
    "Qwen2.5-1.5B": 1_543_714_304,
    "Qwen2-7B": 7_615_616_512,
    "Qwen2.5-7B": 7_615_616_512,
    "Llama-3.2-1B": 1_235_814_400,
    "Llama-3.2-3B": 3_212_749_824,
    "Llama-3.1-8B": 8_030_261_248,
    "SmolLM2-135M": 134_515_008,
    "SmolLM2-360M": 361_821_120,
    "SmolLM2-1.7B": 1_711_376_384,
    "whisper-tiny": 37_760_640,
    "whisper-base": 72_593_920,
    "whisper-small": 241_734_912,
    "whisper-medium": 763_857_920,
    "whisper-large-v3": 1_543_490_560,
}


def _transformers_count(hf: dict) -> int:
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    config = transformers.AutoConfig.for_model(**hf)
    cls = (
        transformers.WhisperForConditionalGeneration
        if hf["model_type"] == "whisper"
        else transformers.AutoModelForCausalLM
    )
    with torch.device("meta"):
        model = cls(config) if cls is transformers.WhisperForConditionalGeneration else cls.from_config(config)
    return sum(p.numel() for p in model.parameters())


def _jax_count(module, *inputs) -> int:
    shapes = jax.eval_shape(lambda: module.init(jax.random.key(0), *inputs))
    return sum(math.prod(x.shape) for x in jax.tree.leaves(shapes))


def test_every_preset_has_a_published_count():
    assert set(PUBLISHED) == set(presets.LLM) | set(presets.WHISPER)
    assert set(presets.TOKENIZER_TOKENS) == set(presets.LLM)


@pytest.mark.parametrize("name", sorted(presets.LLM))
def test_llm_preset(name):
    import jax.numpy as jnp

    from jaxspeech.llm.decoder import DecoderLM

    hf = presets.llm_hf_config(name)
    assert _transformers_count(hf) == PUBLISHED[name]
    ours = _jax_count(DecoderLM(config_from_hf(hf)), jnp.zeros((1, 8), jnp.int32))
    assert ours == PUBLISHED[name]
    assert presets.TOKENIZER_TOKENS[name] <= hf["vocab_size"]


@pytest.mark.parametrize("name", sorted(presets.WHISPER))
def test_whisper_preset(name):
    import jax.numpy as jnp

    from jaxspeech.models.whisper_seq2seq import WhisperSeq2Seq

    hf = presets.whisper_hf_config(name)
    assert _transformers_count(hf) == PUBLISHED[name]
    config = whisper_config_from_hf(hf)
    frames = 2 * config.encoder.max_source_positions
    ours = _jax_count(
        WhisperSeq2Seq(config), jnp.zeros((1, frames, config.encoder.n_mels)), None, jnp.zeros((1, 4), jnp.int32)
    )
    # jaxspeech computes the encoder's sinusoidal positions; transformers stores them as a weight.
    assert ours + config.encoder.max_source_positions * config.encoder.d_model == PUBLISHED[name]


def test_a_checkpoint_that_differs_from_its_preset_is_refused():
    planned = {"hidden_size": 4096, "num_layers": 32}
    with pytest.raises(ValueError, match="num_layers: preset 32, checkpoint 28"):
        presets.check_matches("Llama-3.1-8B", planned, {"hidden_size": 4096, "num_layers": 28}, "dir/config.json")
