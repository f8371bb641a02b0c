"""Placeholder-span arithmetic, written out by hand and checked against PyTorch's layers."""

import pytest

from jaxspeech.audio_tokens import (
    WHISPER_ENCODER,
    FrameStack,
    Identity,
    Pooling,
    QFormerWindows,
    StridedConv,
    audio_token_count,
    conv_output_length,
    downsampled_length,
)


def test_whisper_30s_clip_through_connectors():
    # 30 s at a 10 ms hop -> 3000 log-mel frames; Whisper's stride-2 stem -> 1500 encoder frames.
    assert downsampled_length(3000, WHISPER_ENCODER) == 1500
    assert downsampled_length(3001, WHISPER_ENCODER) == 1501  # ceil(n / 2)
    assert audio_token_count(3000, encoder_downsample=WHISPER_ENCODER, connector=FrameStack(5)) == 300
    assert audio_token_count(3000, encoder_downsample=2, connector=FrameStack(4)) == 375
    assert audio_token_count(3000, encoder_downsample=2, connector=Identity()) == 1500
    # SALMONN: windows of 17 encoder frames, 1 query each -> ceil(1500 / 17) = 89.
    assert audio_token_count(3000, encoder_downsample=2, connector=QFormerWindows(stride=17, queries=1)) == 89
    assert audio_token_count(3000, encoder_downsample=2, connector=QFormerWindows(stride=17, queries=2)) == 178


def test_hand_computed_steps():
    assert FrameStack(4).output_length(10) == 3  # 4 + 4 + 2 (padded)
    assert StridedConv(kernel=3, stride=2).output_length(10) == 4  # (10 - 3) // 2 + 1
    assert StridedConv(kernel=3, stride=2, padding=1).output_length(10) == 5
    assert StridedConv(kernel=3, stride=1, dilation=2).output_length(10) == 6  # span 5
    assert Pooling(size=2).output_length(7) == 3
    assert Pooling(size=2, ceil_mode=True).output_length(7) == 4
    # ceil((6 + 2 - 3) / 2) + 1 = 4; the last window starts at 6 - 1 = 5 < 6 + 1, so it stays.
    assert Pooling(size=3, stride=2, padding=1, ceil_mode=True).output_length(6) == 4
    assert Pooling(size=2, stride=3, ceil_mode=True).output_length(7) == 3  # ceil(5/3)+1 = 3, starts 0,3,6
    # A Conformer's two stride-2 convs (k3, no padding): 100 -> 49 -> 24.
    assert downsampled_length(100, (StridedConv(3, 2), StridedConv(3, 2))) == 24
    assert conv_output_length(100, kernel=3, stride=2) == 49


def test_errors():
    with pytest.raises(ValueError, match="shorter than the kernel span 3"):
        StridedConv(3, 2).output_length(2)
    with pytest.raises(ValueError, match="positive int"):
        downsampled_length(0, 2)
    with pytest.raises(ValueError, match="factor must be >= 1"):
        downsampled_length(10, 0)
    with pytest.raises(TypeError, match="not a downsampling step"):
        downsampled_length(10, ["x"])


@pytest.mark.parity
def test_matches_torch_layers():
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    for n in (1, 2, 5, 16, 17, 31, 100, 257):
        x = torch.zeros(1, 1, n)
        for k, s, p, d in [(3, 1, 1, 1), (3, 2, 1, 1), (3, 2, 0, 1), (5, 3, 2, 1), (3, 2, 0, 2), (1, 4, 0, 1)]:
            if n + 2 * p >= d * (k - 1) + 1:
                expected = F.conv1d(x, torch.zeros(1, 1, k), stride=s, padding=p, dilation=d).shape[-1]
                assert StridedConv(k, s, p, d).output_length(n) == expected, (n, k, s, p, d)
        for size, stride, pad in [(2, 2, 0), (3, 2, 1), (4, 4, 0), (5, 3, 2), (2, 1, 0)]:
            for ceil_mode in (False, True):
                if n + 2 * pad >= size:
                    expected = F.avg_pool1d(x, size, stride, pad, ceil_mode=ceil_mode).shape[-1]
                    got = Pooling(size, stride, pad, ceil_mode).output_length(n)
                    assert got == expected, (n, size, stride, pad, ceil_mode)
