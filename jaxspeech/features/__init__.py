"""Whisper-compatible log-mel features (numpy and jnp) and SpecAugment."""

# A lazy import: ``import jaxspeech.features`` stays cheap; names load on first use.
from etils import epy

with epy.lazy_api_imports(globals()):
    from jaxspeech.features.mel import log_mel_spectrogram, log_mel_spectrogram_jnp, pad_or_trim
    from jaxspeech.features.specaugment import SpecAugmentConfig, spec_augment
