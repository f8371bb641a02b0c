"""Audio encoders: Whisper and Conformer (f32[B, T, n_mels] -> f32[B, T', D])."""

# A lazy import: ``import jaxspeech.encoders`` stays cheap; names load on first use.
from etils import epy

with epy.lazy_api_imports(globals()):
    from jaxspeech.encoders.conformer import ConformerCTC, ConformerConfig, ConformerEncoder
    from jaxspeech.encoders.subsampling import SubsamplingConfig
    from jaxspeech.encoders.whisper import WhisperEncoder, WhisperEncoderConfig, WhisperEncoderOutput
