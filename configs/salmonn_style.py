"""SALMONN-style: a frozen Whisper encoder -> a window-level Q-Former -> an LLM adapted by LoRA.

  jaxspeech train --config configs/salmonn_style.py --workdir runs/salmonn \\
      --set init.whisper_dir=./whisper-small --set init.llm_dir=./Qwen2-0.5B-Instruct
  jaxspeech train --config configs/salmonn_style.py:debug --workdir /tmp/salmonn_debug    # seconds, no download

After Tang et al., "SALMONN: Towards Generic Hearing Abilities for Large Language Models" (2024),
with the Whisper encoder only (no BEATs): one learned query reads each window of 17 encoder frames
(0.34 s) through a 2-layer Q-Former; LoRA (rank 8, alpha 16) on the LLM's attention projections.
The Q-Former and the LoRA adapters train, the encoder and the LLM stay frozen. Checkpoints, data
and the debug variant as in configs/slam_asr.py.
"""

import ml_collections

import slam_asr

# Prompt + audio placeholders (frames / 2 / 17) + transcript + end, per bucket of slam_asr.BUCKETS.
MAX_TOKENS = (96, 128, 160, 256)
LEARNING_RATE = 1e-4
# LoRA adapters train (their rate stated here), every other LLM and encoder parameter is frozen.
TRAINED_AND_FROZEN = ((r"llm/.*/lora_[ab]", LEARNING_RATE), ("llm/.*", None), ("encoder/.*", None))


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    c = slam_asr.get_config(arg)
    c.model.connector = dict(
        kind="qformer", window=17, window_stride=17, num_queries=1, num_layers=2, size=768, num_heads=12, ffn_size=3072
    )
    c.task.lora = dict(rank=8, alpha=16.0, dropout=0.1, targets=r"llm/.*(q_proj|k_proj|v_proj|o_proj)")
    c.train.optimizer.update(learning_rate=LEARNING_RATE, lr_rules=TRAINED_AND_FROZEN)
    if arg == "debug":
        c.model.connector.update(num_layers=1, size=32, num_heads=2, ffn_size=64)
        c.train.optimizer.update(learning_rate=1e-3, lr_rules=((r"llm/.*/lora_[ab]", 1e-3), *TRAINED_AND_FROZEN[1:]))
    else:
        c.data.pipeline.max_tokens = MAX_TOKENS
    return c
