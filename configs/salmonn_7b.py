"""SALMONN-style at full size: frozen Whisper-large-v3 -> window-level Q-Former -> Qwen2.5-7B with LoRA.

  jaxspeech plan --config configs/salmonn_7b.py --topology v5p:4x4x4          # no download, no TPU
  jaxspeech train --config configs/salmonn_7b.py --plan plan.json \\
      --set init.whisper_dir=./whisper-large-v3 --set init.llm_dir=./Qwen2.5-7B

configs/salmonn_style.py (after Tang et al., 2024; Whisper encoder only) at the sizes of a real
system: one query per window of 17 encoder frames (0.34 s) through a 2-layer Q-Former of width 768,
LoRA rank 8 on the LLM's attention projections. The Q-Former and the adapters train; the encoder
and the LLM stay frozen. Architectures are presets (``init.whisper``, ``init.llm``): a plan needs
no download; training reads the weights from ``init.whisper_dir`` / ``init.llm_dir``. bf16
compute, float32 master weights, scanned layers, Pallas flash attention; batches, mesh and
rematerialisation from ``jaxspeech plan``.
"""

import ml_collections

import salmonn_style
import slam_asr_8b


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    if arg not in (None, ""):
        raise ValueError(f"configs/salmonn_7b.py takes no argument, got {arg!r}")
    c = salmonn_style.get_config()
    full = slam_asr_8b.get_config()
    c.init.update(whisper="whisper-large-v3", llm="Qwen2.5-7B")
    c.model.encoder.whisper = full.model.encoder.whisper
    c.model.llm = full.model.llm
    c.model.connector.update(dtype="bfloat16", attn_impl="pallas")
    c.data.pipeline.update(frame_budget=full.data.pipeline.frame_budget, num_workers=full.data.pipeline.num_workers)
    c.data.eval_pipeline = full.data.eval_pipeline
    c.train.mesh = full.train.mesh
    return c
