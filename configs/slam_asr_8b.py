"""SLAM-ASR at full size: frozen Whisper-large-v3 -> frame stacking by 5 + a 2-layer MLP -> frozen Llama-3.1-8B.

  jaxspeech plan --config configs/slam_asr_8b.py --topology v5p:4x4x4          # no download, no TPU
  jaxspeech plan --config configs/slam_asr_8b.py:lora --topology v5e:4x4       # LoRA on the LLM
  jaxspeech train --config configs/slam_asr_8b.py --plan plan.json \\
      --set init.whisper_dir=./whisper-large-v3 --set init.llm_dir=./Llama-3.1-8B

configs/slam_asr.py (after Ma et al., 2024) with the model sizes of the paper's best system's class:
the architectures are named as presets (``init.whisper``, ``init.llm``), so a plan needs no
download; training reads the weights from ``init.whisper_dir`` / ``init.llm_dir``, which must match
the presets. Compute in bfloat16 (float32 master weights and optimizer state), layers scanned,
Pallas flash attention, the LLM's vocabulary padded to a multiple of 128 rows (so that it splits
over a tensor-parallel axis; the padding ids are never predicted). The ``lora`` variant adds
rank-16 LoRA adapters on the LLM's attention projections (trained with the projector; everything
else stays frozen). Batch sizes, mesh and rematerialisation come from ``jaxspeech plan`` (``--plan
plan.json``); without a plan the pipeline's ``frame_budget`` and a pure-FSDP mesh apply.
"""

import ml_collections

import slam_asr

LORA_RULES = ((r"llm/.*/lora_[ab]", 1e-4), ("llm/.*", None), ("encoder/.*", None))


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    if arg not in (None, "", "lora"):
        raise ValueError(f"configs/slam_asr_8b.py takes no argument or 'lora', got {arg!r}")
    c = slam_asr.get_config()
    c.init.update(whisper="whisper-large-v3", llm="Llama-3.1-8B")
    options = dict(dtype="bfloat16", param_dtype="float32", scan_layers=True, remat_policy="full", attn_impl="pallas")
    c.model.encoder.whisper = dict(options)
    c.model.llm = dict(options, vocab_multiple=128)  # 128,257 tokens with the placeholder: 128,384 rows split evenly
    c.model.connector.update(hidden_size=4096, dtype="bfloat16")
    c.data.pipeline.update(frame_budget=96_000, num_workers=8)
    c.data.eval_pipeline = dict(frame_budget=96_000)
    c.train.mesh = dict(fsdp=-1)
    if arg == "lora":
        c.task.lora = dict(rank=16, alpha=32.0, dropout=0.0, targets=r"llm/.*(q_proj|k_proj|v_proj|o_proj)")
        c.train.optimizer.lr_rules = LORA_RULES
    return c
