"""NVLM-X analogue: the tiny ASR setup with the audio read through gated cross-attention.

  jaxspeech train --config configs/cross_attention.py --workdir runs/xattn
  jaxspeech train --config configs/cross_attention.py:debug --workdir /tmp/xattn_debug

The prompt carries no audio placeholders; gated cross-attention blocks (tanh gates at 0) before
every second LLM layer read the connector's outputs. Compare with configs/tiny_asr.py (decoder-only)
and configs/hybrid.py under the same data, budget and LLM.
"""

import ml_collections

import tiny_asr


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    c = tiny_asr.get_config(arg)
    llm = c.model.llm
    c.model.fusion = "cross_attention"
    # No audio tokens in the sequence to lay the transcript out against: plain sequential positions.
    c.model.audio_positions = "sequential"
    c.model.ctc_embed = False  # its hints ride on inline audio tokens, which cross-attention has none of
    c.model.llm.scan_layers = False  # the cross-attention hook runs between unrolled layers
    c.model.xattn = dict(
        hidden_size=llm.hidden_size,
        num_layers=llm.num_layers,
        every=2,
        num_heads=llm.num_heads,
        num_kv_heads=llm.num_kv_heads,
        intermediate_size=llm.intermediate_size,
    )
    return c
