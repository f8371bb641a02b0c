"""SLAM-ASR: a frozen Whisper encoder -> frame stacking by 5 + a 2-layer MLP (the only trained part) -> a frozen LLM.

  jaxspeech train --config configs/slam_asr.py --workdir runs/slam \\
      --set init.whisper_dir=./whisper-small --set init.llm_dir=./Qwen2-0.5B-Instruct
  jaxspeech train --config configs/slam_asr.py --workdir runs/slam_ls \\
      --set init.whisper_dir=./whisper-small --set init.llm_dir=./Qwen2-0.5B-Instruct \\
      --set data.dir=data/librispeech --set data.build_corpus=False --set data.train=/data/LibriSpeech/train-clean-100 \\
      --set "data.eval_sets=('/data/LibriSpeech/dev-clean','/data/LibriSpeech/test-clean')"
  jaxspeech train --config configs/slam_asr.py:debug --workdir /tmp/slam_debug    # seconds, no download
  jaxspeech train --config configs/slam_asr.py:lora --workdir runs/slam_lora \
      --set init.whisper_dir=./whisper-small --set init.llm_dir=./Qwen2-0.5B-Instruct
  jaxspeech train --config configs/slam_asr.py:lora_debug --workdir /tmp/slam_lora_debug

After Ma et al., "An Embarrassingly Simple Approach for LLM with Strong ASR Capacity" (2024).
``init.whisper_dir`` is an HF Whisper directory and ``init.llm_dir`` an HF Llama/Qwen2 directory
(config.json + safetensors; the LLM's also tokenizer.json): their config.json give the encoder and
LLM shapes, their weights step 0 of the run (``jaxspeech.tasks.speech_llm_init``); this file states
only the connector, the fusion and the training. The LLM's tokenizer gains the ``<|audio|>``
placeholder; the prompt follows its chat template when it has one.

Data: the embedded eSpeak NG corpus of configs/tiny_asr.py by default (built in data/tiny on first
use), JSONL manifests (``data.dir``, ``data.train``, ``data.eval_sets``), or LibriSpeech-layout
folders given as set names (their manifests are written to ``data.dir`` on first use). The debug
variant trains a tiny random-init encoder and LLM with the debug corpus's tokenizer for 3 steps.

The recipe in stages (``recipes/stages.py``): the default trains the projector alone between the
frozen encoder and LLM (SLAM-ASR's recipe); ``lora`` (``lora_debug``) runs that as stage
``projector`` and continues from its final parameters in stage ``lora``, which adds LoRA adapters
to the LLM's attention and trains them with the projector (encoder and LLM weights still frozen),
each stage in its own folder of the workdir.
"""

import ml_collections

BUCKETS = (500, 1000, 1500, 3000)  # log-mel frames (100 per second); 3000 = Whisper's 30-s window
# Prompt + audio placeholders (frames / 2 / 5) + transcript + end, per bucket.
MAX_TOKENS = (128, 192, 256, 480)
FROZEN = (("encoder/.*", None), ("llm/.*", None))  # every other parameter trains at the base rate


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    if arg not in (None, "", "debug", "lora", "lora_debug"):
        raise ValueError(f"configs/slam_asr.py takes no argument, 'debug', 'lora' or 'lora_debug', got {arg!r}")
    debug = arg in ("debug", "lora_debug")
    c = ml_collections.ConfigDict()

    c.init = dict(whisper_dir=None, llm_dir=None, random=None)
    c.data = dict(
        dir="data/tiny",
        build_corpus=True,
        corpus=dict(),  # the embedded corpus at its defaults, as in configs/tiny_asr.py: they share data/tiny
        tokenizer=None,  # default: init.llm_dir
        train="train",
        eval_sets=("dev", "test"),
        pipeline=dict(
            bucket_frames=BUCKETS, frame_budget=48_000, max_tokens=MAX_TOKENS, num_workers=1, prefetch=4, seed=0
        ),
        eval_pipeline=dict(frame_budget=48_000),
    )
    c.model = dict(
        encoder=dict(kind="whisper", whisper=dict(scan_layers=True)),  # shapes: init.whisper_dir
        connector=dict(kind="frame_stack", stack=5, hidden_size=2048, act="relu"),
        llm=dict(scan_layers=True),  # shapes: init.llm_dir
        fusion="decoder_only",
        max_audio_frames=BUCKETS[-1],
    )
    c.task = dict(
        kind="speech_llm",
        loss=dict(label_smoothing=0.0),
        spec_augment=None,
        lora=None,
        prompt=dict(instruction="asr", chat=None),
    )
    c.train = dict(
        seed=0,
        total_steps=5000,
        time_budget_s=None,
        eval_every=1000,
        optimizer=dict(
            learning_rate=1e-4,
            warmup_steps=500,
            weight_decay=0.0,
            end_lr_fraction=0.0,
            grad_clip_norm=1.0,
            lr_rules=FROZEN,
        ),
        checkpoint=dict(every_steps=1000, max_to_keep=2),
        metrics=dict(log_every=50),
    )
    c.eval = dict(generation=dict(method="greedy", max_new_tokens=200), during_training_examples=100)

    if debug:
        c.init.random = dict(
            encoder=dict(n_mels=80, d_model=64, num_layers=1, num_heads=4, ffn_dim=128, max_source_positions=300),
            llm=dict(
                hidden_size=32,
                intermediate_size=48,
                num_layers=1,
                num_heads=2,
                num_kv_heads=1,
                qkv_bias=True,
                tie_word_embeddings=True,
            ),
        )
        # The corpus and tokenizer of configs/tiny_asr.py:debug (same settings, so the two share the folder).
        c.data.update(dir="data/tiny_debug", tokenizer_vocab=128)
        c.data.corpus = dict(
            train_hours=0.01,
            dev_utterances=8,
            test_utterances=8,
            held_out_utterances=4,
            open_vocab_utterances=4,
            open_vocab_held_out_utterances=2,
        )
        c.data.pipeline.update(bucket_frames=(600,), frame_budget=4_800, max_tokens=(180,), num_workers=0)
        c.data.eval_pipeline = dict(frame_budget=4_800)
        c.model.connector.hidden_size = 64
        c.model.max_audio_frames = 600
        c.train.update(
            total_steps=3,
            eval_every=0,
            optimizer=dict(learning_rate=1e-3, warmup_steps=1, decay_steps=3, lr_rules=FROZEN),
            checkpoint=dict(every_steps=2, max_to_keep=2),
            metrics=dict(log_every=1, measure_peak_flops=False),
            progress_bar=False,
        )
        c.eval.generation.max_new_tokens = 8
        c.eval.max_examples = 4
    if arg in ("lora", "lora_debug"):
        c.stages = stages(c)
    return c


def stages(c: ml_collections.ConfigDict) -> tuple[dict, ...]:
    """projector (the sections of ``c``) -> lora (adapters on the LLM's attention + the projector)."""
    rate = c.train.optimizer.learning_rate
    lora_rules = ((r"llm/.*/lora_[ab]", rate), *FROZEN)
    return (
        dict(name="projector"),
        dict(
            name="lora",
            init=dict(from_run="projector"),
            task=dict(lora=dict(rank=8, alpha=16.0, dropout=0.0, targets=r"llm/.*(q_proj|k_proj|v_proj|o_proj)")),
            train=dict(optimizer=dict(lr_rules=lora_rules)),
        ),
    )
