"""NVLM-H analogue: a few pooled audio tokens inline plus the full-resolution audio through
gated cross-attention.

  jaxspeech train --config configs/hybrid.py --workdir runs/hybrid
  jaxspeech train --config configs/hybrid.py:debug --workdir /tmp/hybrid_debug
  jaxspeech train --config configs/hybrid.py --workdir runs/hybrid_tags --set task.prompt.chunk_tags=True \
      --set task.prompt.chunk_frames=100

Every ``hybrid_pool`` connector outputs are averaged into one inline token (a coarse summary in the
prompt); the cross-attention memory keeps every output. ``task.prompt.chunk_tags`` puts the tag
``<chunk_k>`` before the k-th time chunk's inline tokens (a clip, or ``chunk_frames`` log-mel frames of
it), as NVLM-H's tile tags.
"""

import ml_collections

import cross_attention


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    c = cross_attention.get_config(arg)
    c.model.fusion = "hybrid"
    c.model.hybrid_pool = 5
    return c
