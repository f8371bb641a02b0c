"""Architecture presets: the shape fields of released checkpoints' ``config.json``, as plain facts.

A config names a preset (``init.whisper="whisper-large-v3"``, ``init.llm="Llama-3.1-8B"``) so that
its model can be built, sharded and compiled from shapes alone (``jaxspeech plan``) with no download;
training still reads the weights from ``init.whisper_dir`` / ``init.llm_dir``, whose ``config.json``
must then agree with the preset (``check_matches``). Each entry holds the fields the converters read
(``convert/hf_whisper.py``, ``convert/hf_llm.py``) with the values of the Hugging Face repository named
in ``SOURCES``. ``TOKENIZER_TOKENS`` is the size of each LLM's tokenizer (its ``len()``, special
tokens included), which may be less than the embedding's ``vocab_size`` rows.
"""

from __future__ import annotations

from typing import Any, Mapping

from jaxspeech.errors import ConfigError, UsageError
from jaxspeech.models.whisper_seq2seq import WHISPER_SIZES

_WHISPER = {
    "model_type": "whisper",
    "activation_function": "gelu",
    "max_source_positions": 1500,
    "max_target_positions": 448,
    "scale_embedding": False,
}


def _whisper(size: str, mels: int = 80, vocab: int = 51865) -> dict[str, Any]:
    d_model, layers, heads = WHISPER_SIZES[size]
    return {
        **_WHISPER,
        "d_model": d_model,
        "encoder_layers": layers,
        "decoder_layers": layers,
        "encoder_attention_heads": heads,
        "decoder_attention_heads": heads,
        "encoder_ffn_dim": 4 * d_model,
        "decoder_ffn_dim": 4 * d_model,
        "num_mel_bins": mels,
        "vocab_size": vocab,
    }


WHISPER: dict[str, dict[str, Any]] = {
    "whisper-tiny": _whisper("tiny"),
    "whisper-base": _whisper("base"),
    "whisper-small": _whisper("small"),
    "whisper-medium": _whisper("medium"),
    "whisper-large-v3": _whisper("large", mels=128, vocab=51866),
}


def _qwen2(
    hidden: int, intermediate: int, layers: int, heads: int, kv_heads: int, vocab: int, tied: bool
) -> dict[str, Any]:
    return {
        "model_type": "qwen2",
        "hidden_act": "silu",
        "hidden_size": hidden,
        "intermediate_size": intermediate,
        "num_hidden_layers": layers,
        "num_attention_heads": heads,
        "num_key_value_heads": kv_heads,
        "vocab_size": vocab,
        "rope_theta": 1000000.0,
        "rms_norm_eps": 1e-6,
        "tie_word_embeddings": tied,
    }


def _llama(
    hidden: int,
    intermediate: int,
    layers: int,
    heads: int,
    kv_heads: int,
    vocab: int,
    tied: bool,
    rope_theta: float,
    rope_scaling: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    hf = {
        "model_type": "llama",
        "hidden_act": "silu",
        "hidden_size": hidden,
        "intermediate_size": intermediate,
        "num_hidden_layers": layers,
        "num_attention_heads": heads,
        "num_key_value_heads": kv_heads,
        "head_dim": hidden // heads,
        "vocab_size": vocab,
        "rope_theta": rope_theta,
        "rms_norm_eps": 1e-5,
        "tie_word_embeddings": tied,
        "attention_bias": False,
        "mlp_bias": False,
    }
    if rope_scaling is not None:
        hf["rope_scaling"] = dict(rope_scaling)
    return hf


def _llama3_scaling(factor: float) -> dict[str, Any]:
    return {
        "rope_type": "llama3",
        "factor": factor,
        "low_freq_factor": 1.0,
        "high_freq_factor": 4.0,
        "original_max_position_embeddings": 8192,
    }


LLM: dict[str, dict[str, Any]] = {
    "Qwen2-0.5B": _qwen2(896, 4864, 24, 14, 2, 151936, True),
    "Qwen2-1.5B": _qwen2(1536, 8960, 28, 12, 2, 151936, True),
    "Qwen2-7B": _qwen2(3584, 18944, 28, 28, 4, 152064, False),
    "Qwen2.5-0.5B": _qwen2(896, 4864, 24, 14, 2, 151936, True),
    "Qwen2.5-1.5B": _qwen2(1536, 8960, 28, 12, 2, 151936, True),
    "Qwen2.5-7B": _qwen2(3584, 18944, 28, 28, 4, 152064, False),
    "Llama-3.2-1B": _llama(2048, 8192, 16, 32, 8, 128256, True, 500000.0, _llama3_scaling(32.0)),
    "Llama-3.2-3B": _llama(3072, 8192, 28, 24, 8, 128256, True, 500000.0, _llama3_scaling(32.0)),
    "Llama-3.1-8B": _llama(4096, 14336, 32, 32, 8, 128256, False, 500000.0, _llama3_scaling(8.0)),
    "SmolLM2-135M": _llama(576, 1536, 30, 9, 3, 49152, True, 100000.0),
    "SmolLM2-360M": _llama(960, 2560, 32, 15, 5, 49152, True, 100000.0),
    "SmolLM2-1.7B": _llama(2048, 8192, 24, 32, 32, 49152, True, 130000.0),
}

TOKENIZER_TOKENS: dict[str, int] = {
    **{name: 151646 for name in ("Qwen2-0.5B", "Qwen2-1.5B", "Qwen2-7B")},
    **{name: 151665 for name in ("Qwen2.5-0.5B", "Qwen2.5-1.5B", "Qwen2.5-7B")},
    **{name: 128256 for name in ("Llama-3.2-1B", "Llama-3.2-3B", "Llama-3.1-8B")},
    **{name: 49152 for name in ("SmolLM2-135M", "SmolLM2-360M", "SmolLM2-1.7B")},
}

SOURCES: dict[str, str] = {
    **{name: f"openai/{name}" for name in WHISPER},
    **{name: f"Qwen/{name}" for name in LLM if name.startswith("Qwen")},
    **{name: f"meta-llama/{name}" for name in LLM if name.startswith("Llama")},
    **{name: f"HuggingFaceTB/{name}" for name in LLM if name.startswith("SmolLM2")},
}


def _lookup(table: Mapping[str, dict[str, Any]], kind: str, name: str, key: str) -> dict[str, Any]:
    if name not in table:
        raise ConfigError(key, f"unknown {kind} preset {name!r}; known: {', '.join(table)}")
    return dict(table[name])


def whisper_hf_config(name: str) -> dict[str, Any]:
    """The ``config.json`` shape fields of Whisper preset ``name`` (e.g. "whisper-large-v3")."""
    return _lookup(WHISPER, "Whisper", name, "init.whisper")


def llm_hf_config(name: str) -> dict[str, Any]:
    """The ``config.json`` shape fields of LLM preset ``name`` (e.g. "Qwen2.5-7B", "Llama-3.1-8B")."""
    return _lookup(LLM, "LLM", name, "init.llm")


def check_matches(preset: str, planned: Mapping[str, Any], checkpoint: Mapping[str, Any], where: str) -> None:
    """Raises naming every shape field where the model of a checkpoint's config.json
    (``checkpoint``) differs from the preset's (``planned``): a config that plans one model must
    not train another."""
    differ = {key: (value, checkpoint.get(key)) for key, value in planned.items() if checkpoint.get(key) != value}
    if differ:
        details = ", ".join(f"{key}: preset {a!r}, checkpoint {b!r}" for key, (a, b) in sorted(differ.items()))
        raise UsageError(where, f"is not the preset {preset!r} the config names ({details})")
