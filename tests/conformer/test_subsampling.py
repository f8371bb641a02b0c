"""Subsampling: output-length arithmetic written out, torch Conv2d references for every front end
and padding mode, and padding that never leaks into valid frames."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxspeech.encoders.conformer import encoder_lengths
from jaxspeech.encoders.subsampling import ConvSubsampling, SubsamplingConfig, subsampled_features, subsampled_lengths
from jaxspeech.testing import conformer as tiny


def test_length_arithmetic_written_out():
    # A 10 ms hop gives 100 frames/s, so 10 s of audio is 1000 log-mel frames. Each stride-2 stage
    # with kernel 3 maps L -> floor((L + pad_left + pad_right - 3) / 2) + 1.
    # FastConformer 8x, "same" (1 + 1 padding): L -> (L - 1) // 2 + 1, three times:
    #   1000 -> 500 -> 250 -> 125 frames (12.5 frames/s, 80 ms each); 1001 -> 501 -> 251 -> 126.
    same8 = SubsamplingConfig(factor=8, padding="same")
    assert subsampled_lengths(1000, same8) == 125
    assert subsampled_lengths(1001, same8) == 126
    # Conformer 4x, "same": 1000 -> 500 -> 250 (25 frames/s, 40 ms each).
    assert subsampled_lengths(1000, SubsamplingConfig(kind="conv2d", factor=4)) == 250
    # ESPnet 4x, "valid" (no padding): L -> (L - 3) // 2 + 1 = (L - 1) // 2: 1000 -> 499 -> 249.
    valid4 = SubsamplingConfig(kind="conv2d", factor=4, padding="valid")
    assert subsampled_lengths(1000, valid4) == 249
    # "causal" pads k - 1 = 2 frames on the left only: the same count as "same" for k = 3.
    assert subsampled_lengths(1001, SubsamplingConfig(factor=8, padding="causal")) == 126
    # Short inputs: one frame survives "same" subsampling, none survive "valid" below 7 frames.
    assert [int(subsampled_lengths(n, same8)) for n in (0, 1, 2, 8, 9)] == [0, 1, 1, 1, 2]
    assert [int(subsampled_lengths(n, valid4)) for n in (0, 1, 2, 6, 7)] == [0, 0, 0, 0, 1]
    # The mel axis: 80 bins -> 40 -> 20 -> 10 ("same", 8x); 128 -> 16; 80 -> 39 -> 19 ("valid", 4x).
    assert subsampled_features(80, same8) == 10
    assert subsampled_features(128, same8) == 16
    assert subsampled_features(80, valid4) == 19
    # Vectorised over numpy and jax arrays alike, and what the encoder reports.
    lengths = np.arange(0, 300)
    expected = np.array([subsampled_lengths(int(n), same8) for n in lengths])
    np.testing.assert_array_equal(subsampled_lengths(lengths, same8), expected)
    np.testing.assert_array_equal(subsampled_lengths(jnp.asarray(lengths), same8), expected)
    np.testing.assert_array_equal(encoder_lengths(lengths, tiny.TINY), expected)


def test_module_output_matches_length_arithmetic():
    config = SubsamplingConfig(kind="conv2d", factor=4, channels=4, padding="valid")
    x, lengths = tiny.features([37, 30, 7, 6])
    module = ConvSubsampling(config, features=8)
    variables = tiny.random_variables(module, x, lengths)
    out, out_lengths = jax.jit(module.apply)(variables, x, lengths)
    assert out.shape == (4, subsampled_lengths(37, config), 8)
    np.testing.assert_array_equal(out_lengths, subsampled_lengths(lengths, config))


def _torch_subsampling(params, config, x):
    """The same front end in torch: explicit zero padding, Conv2d stages + ReLU, channel-major flatten, Linear."""
    import torch

    t = lambda a: torch.tensor(np.asarray(a))
    (pt, pb), (pf, pf2) = config.time_padding(), config.freq_padding()
    h = t(x)[:, None]  # [B, 1, T, F]
    for stage in range(config.num_stages):
        h = torch.nn.functional.pad(h, (pf, pf2, pt, pb))
        if stage == 0 or config.kind == "conv2d":
            conv = params[f"conv_{stage}"]
            h = torch.nn.functional.conv2d(h, t(conv["kernel"]).permute(3, 2, 0, 1), t(conv["bias"]), stride=2)
        else:
            dw, pw = params[f"depthwise_{stage}"], params[f"pointwise_{stage}"]
            h = torch.nn.functional.conv2d(
                h, t(dw["kernel"]).permute(3, 2, 0, 1), t(dw["bias"]), stride=2, groups=h.shape[1]
            )
            h = torch.nn.functional.conv2d(h, t(pw["kernel"]).T[:, :, None, None], t(pw["bias"]))
        h = torch.relu(h)
    batch, channels, frames, mels = h.shape
    h = h.transpose(1, 2).reshape(batch, frames, channels * mels)
    proj = params["proj"]
    kernel = t(proj["kernel"]).reshape(mels, channels, -1).permute(1, 0, 2).reshape(channels * mels, -1)
    return (h @ kernel + t(proj["bias"])).numpy()


@pytest.mark.parity
@pytest.mark.parametrize(
    "kind,factor,padding",
    [("conv2d", 4, "same"), ("conv2d", 8, "valid"), ("conv2d", 4, "causal"), ("dw_conv2d", 4, "causal")],
)
def test_matches_torch_conv2d(kind, factor, padding):
    pytest.importorskip("torch")
    config = SubsamplingConfig(kind=kind, factor=factor, channels=4, padding=padding)
    x, lengths = tiny.features([45])
    module = ConvSubsampling(config, features=8)
    variables = tiny.random_variables(module, x, lengths)
    out, _ = jax.jit(module.apply)(variables, x, lengths)
    ref = _torch_subsampling(variables["params"], config, x)
    assert out.shape == ref.shape
    np.testing.assert_allclose(out, ref, atol=1e-5, rtol=0)


@pytest.mark.parametrize("kind,padding", [("conv2d", "same"), ("dw_conv2d", "valid"), ("dw_conv2d", "causal")])
def test_padding_never_reaches_valid_frames(kind, padding):
    config = SubsamplingConfig(kind=kind, factor=4, channels=4, padding=padding)
    module = ConvSubsampling(config, features=8)
    x, lengths = tiny.features([40, 27, 13], padding_value=None)  # garbage (|x| ~ 100) in padded frames
    variables = tiny.random_variables(module, x, lengths)
    apply = jax.jit(module.apply)
    batched, out_lengths = apply(variables, x, lengths)
    for b, n in enumerate(lengths):
        alone, alone_length = apply(variables, x[b : b + 1, :n], lengths[b : b + 1])
        assert int(alone_length[0]) == int(out_lengths[b])
        np.testing.assert_allclose(batched[b, : out_lengths[b]], alone[0], atol=1e-5, rtol=0)
