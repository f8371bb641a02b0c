"""Random-init transformers Parakeet models (no download) with non-trivial biases and batch-norm
statistics, saved as HF directories for the converter."""

from __future__ import annotations

import torch
import transformers

TINY = dict(
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=4,
    intermediate_size=64,
    subsampling_conv_channels=8,
    num_mel_bins=16,
    conv_kernel_size=5,
)


def _perturb(model: torch.nn.Module) -> None:
    with torch.no_grad():
        for _, param in model.named_parameters():
            param.add_(0.1 * torch.randn_like(param))  # zero biases / unit norms would hide mapping bugs
        for name, buffer in model.named_buffers():
            if name.endswith("running_mean"):
                buffer.copy_(0.5 * torch.randn_like(buffer))
            elif name.endswith("running_var"):
                buffer.copy_(0.5 + torch.rand_like(buffer))


def encoder(seed: int = 0, **overrides) -> transformers.ParakeetEncoder:
    """A float32 eval-mode ``ParakeetEncoder`` for ``TINY`` updated with ``overrides``."""
    torch.manual_seed(seed)
    model = transformers.ParakeetEncoder(transformers.ParakeetEncoderConfig(**{**TINY, **overrides}))
    _perturb(model)
    return model.eval()


def ctc(seed: int = 0, vocab_size: int = 11, **overrides) -> transformers.ParakeetForCTC:
    """A float32 eval-mode ``ParakeetForCTC`` (blank = vocab_size - 1)."""
    torch.manual_seed(seed)
    config = transformers.ParakeetCTCConfig(
        encoder_config={**TINY, **overrides}, vocab_size=vocab_size, pad_token_id=vocab_size - 1
    )
    model = transformers.ParakeetForCTC(config)
    _perturb(model)
    return model.eval()
