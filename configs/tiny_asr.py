"""The embedded default: a small Speech LLM trained from scratch for ASR on synthesized speech.

  jaxspeech train --config configs/tiny_asr.py --workdir runs/tiny
  jaxspeech train --config configs/tiny_asr.py:debug --workdir /tmp/tiny_debug    # seconds, for tests
  jaxspeech train --config configs/tiny_asr.py:staged --workdir runs/tiny_staged  # four stages, same 22 min
  jaxspeech train --config configs/tiny_asr.py:staged_debug --workdir /tmp/tiny_staged_debug

A Conformer encoder (4x frame stacking: 25 frames/s) -> frame stacking by 4 + MLP, plus the LLM's
embedding of the CTC head's posteriors (``model.ctc_embed``) -> a 3-layer decoder LLM whose rotary
positions follow the CTC head's greedy alignment (``model.audio_positions``), all from scratch, on the eSpeak NG corpus that ``jaxspeech prepare-data tiny`` builds (built here on
first use). An auxiliary CTC loss on the encoder and SpecAugment make the most of 2 CPU cores:
the run trains for a fixed time budget (its cosine decay fitted to the steps the budget gives on
this machine), then decodes the test and open-vocabulary sets three ways (the LLM alone; the CTC head
alone; beam search on the LLM's and the CTC head's scores of every token, limited to the words of the
training transcripts) and writes report.md.

The ``staged`` variants train the same model in four stages (``recipes/stages.py``), each in its own
folder of the workdir: the encoder and CTC head alone on CTC (``ctc``), the LLM alone on the
corpus grammar's sentences (``text``), the connector alone between the two, both frozen
(``connector``, as SLAM-ASR trains its projector), then everything (``finetune``). The time
budgets add up to the main job's 22 minutes. From scratch on 2 CPU cores the single-stage job reads
far better (LLM alone 18 % WER against the staged run's 65 %: the encoder, which limits both, loses
most from the split; experiments/tiny_asr/README.md, fifteenth stop).
"""

import ml_collections

BUCKETS = (320, 400, 512, 768)  # log-mel frames (100 per second)
MAX_TOKENS = (72, 88, 104, 128)  # prompt + audio placeholders + transcript + end, per bucket
# Stage budgets (seconds) of the staged variant: ctc, text, connector, finetune (22 minutes in all).
STAGE_BUDGETS = (6 * 60, 2 * 60, 2 * 60, 12 * 60)
FROZEN_ENCODER_AND_LLM = ((r"encoder/.*", None), (r"ctc_head/.*", None), (r"llm/.*", None))


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    if arg not in (None, "", "debug", "staged", "staged_debug"):
        raise ValueError(f"configs/tiny_asr.py takes no argument, 'debug', 'staged' or 'staged_debug', got {arg!r}")
    debug = arg in ("debug", "staged_debug")
    c = ml_collections.ConfigDict()

    c.data = dict(
        dir="data/tiny",
        build_corpus=True,
        corpus=dict(),  # the embedded corpus at its defaults (12 h): what `jaxspeech prepare-data tiny` builds
        tokenizer_vocab=512,
        train="train",
        # open_vocab: sentences with words no training transcript has (nor, so, the lexicon); dev, for
        # choosing decoding settings: jaxspeech eval --workdir RUN --sets dev
        eval_sets=("test", "open_vocab"),
        pipeline=dict(
            bucket_frames=BUCKETS,
            frame_budget=8_000,
            max_tokens=MAX_TOKENS,
            num_workers=1,
            prefetch=4,
            seed=0,
        ),
        eval_pipeline=dict(frame_budget=24_000),
    )
    c.model = dict(
        encoder=dict(
            kind="conformer",
            conformer=dict(
                input_dim=80,
                d_model=144,
                num_layers=4,
                num_heads=4,
                ffn_factor=4.0,
                conv_kernel_size=9,
                conv_norm="layer_norm",
                subsampling="stack",
                subsampling_factor=4,
                dropout_rate=0.0,
                ffn_dropout_rate=0.0,
                scan_layers=True,  # underfit in 22 min: no dropout
                # Keeping only the matmul outputs for the backward pass (recomputing the cheap
                # elementwise work) made one batch's step 8-15 % faster on a 2-core CPU: fewer
                # per-layer buffers for the scan to write and read (experiments/tiny_asr/README.md).
                remat_policy="dots",
            ),
        ),
        # norm_match: the audio tokens enter at the text embeddings' RMS, the scale of the hints below.
        connector=dict(kind="frame_stack", stack=4, hidden_size=384, norm_match=True),
        llm=dict(
            hidden_size=192,
            intermediate_size=512,
            num_layers=3,
            num_heads=4,
            num_kv_heads=4,
            tie_word_embeddings=True,
            scan_layers=True,
            remat_policy="dots",
        ),
        fusion="decoder_only",
        max_audio_frames=BUCKETS[-1],
        ctc=True,
        # Rotary positions from the CTC head's greedy path: transcript token k sits a fixed distance
        # from the audio where label k+1 starts, whatever the clip's length. Step for step this took
        # the LLM alone from 72 % to 47 % WER (experiments/tiny_asr/README.md).
        audio_positions="ctc",
        # Each audio token also carries the LLM's embedding of the (gradient-stopped) CTC posteriors
        # of its frames: a text-space hint of what it says. Step for step this took the LLM alone
        # from 47 % to 25 % WER, joint decoding unchanged (experiments/tiny_asr/README.md, fourteenth stop).
        ctc_embed=True,
    )
    c.task = dict(
        kind="speech_llm",
        loss=dict(label_smoothing=0.1, ctc_weight=0.3),
        spec_augment=dict(num_freq_masks=2, max_freq_width=15, num_time_masks=2, max_time_width=20),
        lora=None,
        prompt=dict(instruction="asr", chat=False),
    )
    c.train = dict(
        seed=0,
        total_steps=100_000,
        time_budget_s=22 * 60,
        # The cosine ends where the budget does, on a slow machine as on a fast one; decay_steps
        # below is only the first guess (~0.62 s a step on a quiet 2-core CPU).
        fit_decay_to_budget=True,
        eval_every=0,
        optimizer=dict(
            learning_rate=1.5e-3,
            warmup_steps=200,
            weight_decay=0.01,
            decay_steps=2100,
            end_lr_fraction=0.05,
            grad_clip_norm=1.0,
        ),
        checkpoint=dict(every_steps=300, max_to_keep=2),
        metrics=dict(log_every=25),
    )
    # Joint CTC/attention beam search over the words of the training transcripts: the CTC head keeps
    # the small LLM on the audio, the lexicon keeps it to real words (experiments/tiny_asr/README.md).
    # Each set is also decoded by the LLM alone (beam 4, no CTC, no lexicon) and by the CTC head alone (greedy),
    # to show what each part reads on its own.
    c.eval = dict(
        generation=dict(method="beam", num_beams=8, ctc_weight=0.7, ctc_candidates=32, max_new_tokens=80),
        lexicon="train",
        max_examples=None,
        decoders=("llm", "ctc", "joint"),
        llm_generation=dict(method="beam", num_beams=4, max_new_tokens=80),
        dormancy_every=100,
        dormancy_examples=8,
    )  # does the LLM attend to the audio tokens?

    if debug:
        c.data.dir = "data/tiny_debug"
        c.data.corpus = dict(
            train_hours=0.01,
            dev_utterances=8,
            test_utterances=8,
            held_out_utterances=4,
            open_vocab_utterances=4,
            open_vocab_held_out_utterances=2,
        )
        c.data.tokenizer_vocab = 128
        c.data.pipeline.update(bucket_frames=(768,), max_tokens=(180,), frame_budget=1_536, num_workers=0)
        c.data.eval_pipeline = dict(frame_budget=3_200)
        c.model.encoder.conformer.update(d_model=32, num_layers=1, num_heads=2, subsampling_channels=8)
        c.model.connector.hidden_size = 32
        c.model.llm.update(hidden_size=32, intermediate_size=48, num_layers=1, num_heads=2, num_kv_heads=2)
        c.train.update(
            total_steps=3,
            time_budget_s=None,
            fit_decay_to_budget=False,
            optimizer=dict(learning_rate=1e-3, warmup_steps=1, decay_steps=3),
            checkpoint=dict(every_steps=2, max_to_keep=2),
            metrics=dict(log_every=1, measure_peak_flops=False),
            progress_bar=False,
        )
        c.eval.generation.max_new_tokens = 8
        c.eval.llm_generation.max_new_tokens = 8
        c.eval.dormancy_every = 2
        c.eval.max_examples = 4
    if arg in ("staged", "staged_debug"):
        c.stages = stages(c, debug)
    return c


def stages(c: ml_collections.ConfigDict, debug: bool) -> tuple[dict, ...]:
    """ctc -> text -> connector (encoder and LLM frozen) -> finetune, over the sections of ``c``."""
    if debug:  # three steps each
        budgets = [dict(total_steps=3) for _ in STAGE_BUDGETS]
        text_task = dict(kind="text_lm", rows=2, length=48, eval_sentences=4)
    else:
        budgets = [dict(time_budget_s=seconds) for seconds in STAGE_BUDGETS]
        text_task = dict(kind="text_lm", rows=32, length=128, eval_sentences=300)
    ctc, text, connector, finetune = budgets
    connector_optimizer = dict(lr_rules=FROZEN_ENCODER_AND_LLM, warmup_steps=1 if debug else 50)
    finetune_optimizer = dict(learning_rate=c.train.optimizer.learning_rate / 3)
    return (
        dict(name="ctc", task=dict(kind="ctc_encoder", spec_augment=dict(c.task.spec_augment)), train=ctc),
        dict(name="text", task=text_task, train=text),
        dict(
            name="connector",
            init=dict(from_run=dict(encoder="ctc", ctc_head="ctc", llm="text")),
            train=dict(**connector, optimizer=connector_optimizer),
        ),
        dict(name="finetune", init=dict(from_run="connector"), train=dict(**finetune, optimizer=finetune_optimizer)),
    )
