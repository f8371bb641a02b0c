"""Attention kernels: the XLA reference and Pallas flash attention, and the mask language they share."""

# A lazy import: ``import jaxspeech.kernels`` stays cheap; names load on first use.
from etils import epy

with epy.lazy_api_imports(globals()):
    from jaxspeech.kernels.flash_attention import BlockSizes, flash_attention
    from jaxspeech.kernels.masks import MaskSpec, dense_mask
    from jaxspeech.kernels.reference import reference_attention
