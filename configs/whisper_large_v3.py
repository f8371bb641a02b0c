"""Whisper-large-v3 fine-tuning at full size: every parameter trains (1.55B, encoder and decoder).

  jaxspeech plan --config configs/whisper_large_v3.py --topology v5p:4x4x4    # no download, no TPU
  jaxspeech train --config configs/whisper_large_v3.py --plan plan.json --set init.whisper_dir=./whisper-large-v3

configs/whisper_finetune.py with the architecture named as a preset (``init.whisper``: a plan needs
no download; training reads the weights from ``init.whisper_dir``, which must match it), bf16
compute with float32 master weights and Adam state, scanned layers, Pallas flash attention;
batches, mesh and rematerialisation from ``jaxspeech plan``.
"""

import ml_collections

import whisper_finetune


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    if arg not in (None, ""):
        raise ValueError(f"configs/whisper_large_v3.py takes no argument, got {arg!r}")
    c = whisper_finetune.get_config()
    c.init.whisper = "whisper-large-v3"
    c.model.update(dtype="bfloat16", param_dtype="float32", scan_layers=True, remat_policy="full", attn_impl="pallas")
    c.data.pipeline.update(frame_budget=96_000, num_workers=8)
    c.data.eval_pipeline = dict(frame_budget=96_000)
    c.train.mesh = dict(fsdp=-1)
    return c
