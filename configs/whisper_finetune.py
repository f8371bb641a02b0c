"""Fine-tune a Hugging Face Whisper checkpoint for ASR on JSONL manifests (the encoder-decoder baseline).

  jaxspeech train --config configs/whisper_finetune.py --workdir runs/whisper --set init.whisper_dir=./whisper-base
  jaxspeech train --config configs/whisper_finetune.py --workdir runs/whisper_mine --set init.whisper_dir=./whisper-small \\
      --set data.dir=/data/my_corpus --set data.build_corpus=False --set data.train=train --set "data.eval_sets=('dev',)"
  jaxspeech train --config configs/whisper_finetune.py:debug --workdir /tmp/whisper_debug    # seconds, no download

``init.whisper_dir`` is an HF Whisper directory (config.json, model.safetensors, generation_config.json,
tokenizer.json). The default data is the embedded eSpeak NG corpus of configs/tiny_asr.py (built in
data/tiny on first use); any manifests work (``data.dir``, ``data.train``, ``data.eval_sets``).

Inputs: duration buckets keep short clips cheap, but the checkpoint was pre-trained on 30-s windows
with every frame attended; ``--set task.full_window=True`` trains and evaluates on that view instead
(one 3000-frame bucket, about 6x the encoder compute for 5-s clips). ``--set task.freeze_encoder=True``
trains the decoder only. The debug variant trains a tiny random-init Whisper with a byte-level
Whisper-style tokenizer on data/tiny_debug for 3 steps.
"""

import ml_collections

BUCKETS = (500, 1000, 1500, 3000)  # log-mel frames (100 per second); 3000 = Whisper's 30-s window


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    debug = arg == "debug"
    if arg not in (None, "", "debug"):
        raise ValueError(f"configs/whisper_finetune.py takes no argument or 'debug', got {arg!r}")
    c = ml_collections.ConfigDict()

    c.init = dict(whisper_dir=None, random=None)
    c.data = dict(
        dir="data/tiny",
        build_corpus=True,
        corpus=dict(),  # the embedded corpus at its defaults, as in configs/tiny_asr.py: they share data/tiny
        tokenizer=None,  # default: init.whisper_dir
        build_tokenizer=False,
        train="train",
        eval_sets=("dev", "test"),
        pipeline=dict(
            bucket_frames=BUCKETS,
            frame_budget=48_000,
            max_tokens=(96, 160, 224, 448),
            num_workers=1,
            prefetch=4,
            seed=0,
        ),
        eval_pipeline=dict(frame_budget=48_000),
    )
    c.model = dict(dtype="float32", param_dtype="float32", scan_layers=True, remat_policy="none", attn_impl="xla")
    c.task = dict(
        kind="whisper_seq2seq",
        language="en",  # None for English-only checkpoints (*.en)
        leading_space=True,
        loss=dict(label_smoothing=0.0),
        spec_augment=None,  # e.g. dict(num_freq_masks=2, max_freq_width=27, num_time_masks=2, max_time_width=50)
        freeze_encoder=False,
        full_window=False,
    )
    c.train = dict(
        seed=0,
        total_steps=4000,
        time_budget_s=None,
        eval_every=1000,
        optimizer=dict(
            learning_rate=1e-5, warmup_steps=500, weight_decay=0.01, end_lr_fraction=0.0, grad_clip_norm=1.0
        ),
        checkpoint=dict(every_steps=1000, max_to_keep=2),
        metrics=dict(log_every=50),
    )
    c.eval = dict(generation=dict(method="greedy", max_new_tokens=224), during_training_examples=100)

    if debug:
        c.init.random = dict(
            encoder=dict(n_mels=80, d_model=64, num_layers=1, num_heads=4, ffn_dim=128, max_source_positions=300),
            decoder=dict(d_model=64, num_layers=1, num_heads=4, ffn_dim=128, max_target_positions=128),
        )
        c.data.update(dir="data/tiny_debug", tokenizer="data/whisper_debug_tokenizer", build_tokenizer=True)
        # The corpus of configs/tiny_asr.py:debug (same settings, so the two share the folder).
        c.data.corpus = dict(
            train_hours=0.01,
            dev_utterances=8,
            test_utterances=8,
            held_out_utterances=4,
            open_vocab_utterances=4,
            open_vocab_held_out_utterances=2,
        )
        c.data.pipeline.update(bucket_frames=(600,), frame_budget=4_800, max_tokens=(112,), num_workers=0)
        c.data.eval_pipeline = dict(frame_budget=4_800)
        c.model.scan_layers = False
        c.task.update(
            loss=dict(label_smoothing=0.1),
            spec_augment=dict(num_freq_masks=1, max_freq_width=8, num_time_masks=1, max_time_width=10),
        )
        c.train.update(
            total_steps=3,
            eval_every=0,
            optimizer=dict(learning_rate=1e-3, warmup_steps=1, decay_steps=3),
            checkpoint=dict(every_steps=2, max_to_keep=2),
            metrics=dict(log_every=1, measure_peak_flops=False),
            progress_bar=False,
        )
        c.eval.generation.max_new_tokens = 8
        c.eval.max_examples = 4
    return c
