"""The NVLM trio for speech at 7B: Whisper-large-v3 -> connector -> Qwen2.5-7B, in the three fusions.

  jaxspeech plan --config configs/nvlm_7b.py:d --topology v5p:4x4x4    # NVLM-D: decoder-only
  jaxspeech plan --config configs/nvlm_7b.py:x --topology v5p:4x4x4    # NVLM-X: gated cross-attention
  jaxspeech plan --config configs/nvlm_7b.py:h --topology v5p:4x4x4    # NVLM-H: hybrid
  jaxspeech train --config configs/nvlm_7b.py:x --plan plan.json \\
      --set init.whisper_dir=./whisper-large-v3 --set init.llm_dir=./Qwen2.5-7B

After Dai et al., "NVLM: Open Frontier-Class Multimodal LLMs" (2024), with speech for images:
  * ``d``: frame stacking by 5 + a 2-layer MLP, audio embeddings spliced at the placeholders;
  * ``x``: no inline audio; gated cross-attention blocks (tanh gates at 0) before every 4th LLM
    layer read the projected audio (the LLM's layers run unrolled: the hook sits between them);
  * ``h``: x plus one inline token per 5 connector outputs (averaged), as a coarse summary.
The supervised fine-tuning stage: everything but the audio encoder trains (connector,
cross-attention blocks and the LLM). Architectures are presets (no download to plan); bf16 compute,
float32 master weights and Adam state, Pallas flash attention; batches, mesh and rematerialisation
from ``jaxspeech plan``.
"""

import ml_collections

import slam_asr_8b

VARIANTS = {"d": "decoder_only", "x": "cross_attention", "h": "hybrid"}
# Tokens per bucket of slam_asr.BUCKETS: prompt + transcript + end (slam_asr.MAX_TOKENS less its
# placeholders), plus for ``h`` one pooled token per 5 connector outputs (frames / 2 / 5 / 5).
MAX_TOKENS = {"x": (80, 96, 112, 192), "h": (96, 112, 144, 256)}
ENCODER_FROZEN = (("encoder/.*", None),)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    if arg not in VARIANTS:
        raise ValueError(f"configs/nvlm_7b.py takes one of {sorted(VARIANTS)} (NVLM-D, -X, -H), got {arg!r}")
    c = slam_asr_8b.get_config()
    c.init.llm = "Qwen2.5-7B"
    c.model.fusion = VARIANTS[arg]
    c.train.optimizer.update(learning_rate=2e-5, lr_rules=ENCODER_FROZEN)
    if arg != "d":
        c.model.llm.scan_layers = False  # the cross-attention hook runs between unrolled layers
        # Qwen2.5-7B's width and heads; the MLP as wide as the LLM's.
        c.model.xattn = dict(
            hidden_size=3584,
            num_layers=28,
            every=4,
            num_heads=28,
            num_kv_heads=4,
            intermediate_size=18944,
            attn_impl="pallas",
            dtype="bfloat16",
        )
        c.data.pipeline.max_tokens = MAX_TOKENS[arg]
    if arg == "h":
        c.model.hybrid_pool = 5
    return c
