"""Random-init Hugging Face Llama / Qwen2 models (no download) saved as safetensors for tests."""

from __future__ import annotations

import torch
import transformers

CONFIGS = {
    "llama_gqa_untied": dict(
        model_type="llama",
        vocab_size=128,
        hidden_size=64,
        intermediate_size=96,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        tie_word_embeddings=False,
        rope_theta=10000.0,
    ),
    "llama_gqa_tied_llama3rope": dict(
        model_type="llama",
        vocab_size=128,
        hidden_size=64,
        intermediate_size=96,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=1,
        tie_word_embeddings=True,
        rope_theta=500000.0,
        rope_scaling={
            "rope_type": "llama3",
            "factor": 8.0,
            "low_freq_factor": 1.0,
            "high_freq_factor": 4.0,
            "original_max_position_embeddings": 64,
        },
    ),
    "qwen2_bias": dict(
        model_type="qwen2",
        vocab_size=128,
        hidden_size=64,
        intermediate_size=96,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        tie_word_embeddings=False,
        rope_theta=1000000.0,
    ),
}


def build(name: str, seed: int = 0, **changes) -> transformers.PreTrainedModel:
    """A float32 random-init causal LM for ``CONFIGS[name]`` (with ``changes``) with non-trivial biases."""
    kwargs = {**CONFIGS[name], **changes}
    model_type = kwargs.pop("model_type")
    config_cls = {"llama": transformers.LlamaConfig, "qwen2": transformers.Qwen2Config}[model_type]
    model_cls = {"llama": transformers.LlamaForCausalLM, "qwen2": transformers.Qwen2ForCausalLM}[model_type]
    torch.manual_seed(seed)
    model = model_cls(config_cls(**kwargs, bos_token_id=1, eos_token_id=2, pad_token_id=0))
    with torch.no_grad():
        for param_name, param in model.named_parameters():
            if param_name.endswith("bias") or "norm" in param_name:
                param.add_(0.1 * torch.randn_like(param))  # zero biases / unit norms would hide mapping bugs
    return model.eval()
