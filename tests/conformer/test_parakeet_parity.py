"""Parity with transformers' Parakeet (FastConformer) on random weights copied by our converter.

Tolerance: max abs diff <= 1e-4 in float32 over the valid frames of a batch with different lengths
(measured ~1e-6). Parakeet choices covered here: depthwise-separable 8x (and 4x) subsampling,
xscaling on/off, biases on/off, batch norm with running statistics; plus the layer-norm and causal
depthwise-convolution options checked against a Parakeet model patched to use them.
"""

import jax
import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from jaxspeech.convert.parakeet import load_parakeet  # noqa: E402
from jaxspeech.encoders.conformer import ConformerCTC  # noqa: E402
from jaxspeech.testing import conformer as tiny  # noqa: E402
from jaxspeech.testing import hf_parakeet  # noqa: E402

pytestmark = pytest.mark.parity
TOL = 1e-4
LENGTHS = [64, 41, 20]


def _hf_forward(model, x, lengths, **kwargs):
    mask = torch.tensor(np.arange(x.shape[1])[None, :] < lengths[:, None]).long()
    with torch.no_grad():
        return model(torch.tensor(x), attention_mask=mask, **kwargs)


def _valid_max_diff(ours, theirs, lengths):
    valid = np.arange(ours.shape[1])[None, :] < np.asarray(lengths)[:, None]
    return float(np.abs(np.asarray(ours) - np.asarray(theirs))[valid].max())


def _save(model, tmp_path):
    model.save_pretrained(tmp_path)
    return str(tmp_path)


@pytest.mark.parametrize(
    "overrides",
    [
        {},  # Parakeet defaults: 8x dw-separable subsampling, xscaling, biases everywhere
        dict(subsampling_factor=4, scale_input=False, attention_bias=False, convolution_bias=False),
    ],
    ids=["parakeet_8x", "4x_no_xscale_no_bias"],
)
def test_encoder_matches_parakeet(overrides, tmp_path):
    hf = hf_parakeet.encoder(**overrides)
    checkpoint = load_parakeet(_save(hf, tmp_path))
    assert checkpoint.vocab_size is None
    x, lengths = tiny.features(LENGTHS)  # HF reads padded frames (it masks only after each conv): keep them 0
    ref = _hf_forward(hf, x, lengths, output_hidden_states=True)
    hidden, out_lengths, states = tiny.forward(checkpoint.config, "all")(checkpoint.variables, x, lengths)
    np.testing.assert_array_equal(out_lengths, ref.attention_mask.sum(-1).numpy())
    assert hidden.shape == ref.last_hidden_state.shape
    assert _valid_max_diff(hidden, ref.last_hidden_state.numpy(), out_lengths) <= TOL
    assert len(states) == len(ref.hidden_states) == checkpoint.config.num_layers + 1
    for ours, theirs in zip(states, ref.hidden_states):
        assert _valid_max_diff(ours, theirs.numpy(), out_lengths) <= TOL


def test_ctc_logits_match_parakeet_for_ctc(tmp_path):
    hf = hf_parakeet.ctc(vocab_size=11)
    checkpoint = load_parakeet(_save(hf, tmp_path), scan_layers=False)
    assert checkpoint.vocab_size == 11
    x, lengths = tiny.features(LENGTHS)
    ref = _hf_forward(hf, x, lengths).logits.numpy()
    model = ConformerCTC(checkpoint.config, checkpoint.vocab_size)
    logits, out_lengths = jax.jit(model.apply)(checkpoint.variables, x, lengths)
    assert logits.dtype == np.float32 and logits.shape == ref.shape
    assert _valid_max_diff(logits, ref, out_lengths) <= TOL


class _ChannelLayerNorm(torch.nn.Module):
    """LayerNorm over channels for the [B, C, T] tensors of Parakeet's convolution module."""

    def __init__(self, batch_norm):
        super().__init__()
        self.norm = torch.nn.LayerNorm(batch_norm.num_features)
        with torch.no_grad():
            self.norm.weight.copy_(batch_norm.weight)
            self.norm.bias.copy_(batch_norm.bias)

    def forward(self, x):
        return self.norm(x.transpose(1, 2)).transpose(1, 2)


def _causal_depthwise(conv):
    """The same depthwise Conv1d, fed K-1 zero frames on the left and none on the right."""
    causal = torch.nn.Conv1d(conv.in_channels, conv.out_channels, conv.kernel_size[0], groups=conv.groups)
    with torch.no_grad():
        causal.weight.copy_(conv.weight)
        causal.bias.copy_(conv.bias)
    return torch.nn.Sequential(torch.nn.ConstantPad1d((conv.kernel_size[0] - 1, 0), 0.0), causal)


@pytest.mark.parametrize("variant", ["conv_norm=layer_norm", "conv_causal"])
def test_conv_module_variants_match_patched_parakeet(variant, tmp_path):
    hf = hf_parakeet.encoder()
    checkpoint = load_parakeet(_save(hf, tmp_path))
    variables = checkpoint.variables
    for layer in hf.layers:
        if variant == "conv_causal":
            layer.conv.depthwise_conv = _causal_depthwise(layer.conv.depthwise_conv)
        else:
            layer.conv.norm = _ChannelLayerNorm(layer.conv.norm)
    if variant == "conv_causal":
        config = checkpoint.config.replace(conv_causal=True)
    else:
        config = checkpoint.config.replace(conv_norm="layer_norm")
        variables = {"params": variables["params"]}  # a layer norm has no running statistics
    x, lengths = tiny.features(LENGTHS)
    ref = _hf_forward(hf, x, lengths).last_hidden_state.numpy()
    hidden, out_lengths = tiny.forward(config)(variables, x, lengths)
    assert _valid_max_diff(hidden, ref, out_lengths) <= TOL
