"""Building blocks of a study's grid file (``experiments/<study>/grid.py``).

``keep_text_budget``: token budgets for choices that change how many audio tokens a clip takes (the
connector's rate, the fusion): each bucket's ``data.pipeline.max_tokens`` must move by as many
tokens, or the pipeline rejects the longer rows (and a shorter sequence would carry padding that
costs FLOPs)::

  GRID = {"connector": keep_text_budget(CHOICES, config="configs/tiny_asr.py", reference="configs/tiny_asr.py")}

``NOTEBOOK_SETS`` (any config), ``NOTEBOOK_ASR_SETS`` (configs/tiny_asr.py's family): overrides that
make a debug-scale cell as cheap as it gets, for a study's notebook form.
"""

from __future__ import annotations

from typing import Any, Mapping

from jaxspeech.config_dict import load_config_file, override

# A debug-scale cell as cheap as it gets: 2 utterances per eval set, no dormancy probes, no checkpoints.
NOTEBOOK_SETS = ("eval.max_examples=2", "eval.dormancy_every=0", "train.checkpoint.every_steps=1000")
# With configs/tiny_asr.py and its fusion variants: the test set alone, decoded by the LLM alone, greedily.
NOTEBOOK_ASR_SETS = NOTEBOOK_SETS + (
    "data.eval_sets=('test',)",
    "eval.decoders=('llm',)",
    "eval.llm_generation={'method': 'greedy', 'max_new_tokens': 8}",
)


def audio_tokens_per_bucket(config) -> tuple[int, ...]:
    """The tokens a clip as long as each bucket of ``config.data.pipeline.bucket_frames`` puts in the
    sequence: its inline audio tokens under ``config.model`` (none for cross-attention) and, with
    ``task.prompt.chunk_tags``, one tag per time chunk."""
    from jaxspeech.tasks.speech_llm_kind import Vocabulary, model_config

    vocab = Vocabulary(size=2, placeholder_id=1, pad_id=0, eos_ids=(0,), source="a token budget")  # sizes only
    model = model_config(config.model, vocab)
    prompt = config.task.get("prompt", {})
    tokens = []
    for frames in (int(f) for f in config.data.pipeline.bucket_frames):
        tags = -(-frames // (prompt.get("chunk_frames") or frames)) if prompt.get("chunk_tags") else 0
        tokens.append(model.audio_token_count(frames) + tags)
    return tuple(tokens)


def max_tokens_per_bucket(config) -> tuple[int, ...]:
    """``config.data.pipeline.max_tokens`` as one int per bucket (an int stands for every bucket)."""
    buckets = config.data.pipeline.bucket_frames
    tokens = config.data.pipeline.max_tokens
    return (int(tokens),) * len(buckets) if isinstance(tokens, int) else tuple(int(t) for t in tokens)


def keep_text_budget(
    choices: Mapping[str, Mapping[str, Any]], *, config: str, reference: str
) -> dict[str, dict[str, Any]]:
    """``choices`` (a grid file's joint axis {label: {key: value}}) with ``data.pipeline.max_tokens``
    added to each: per bucket, the text budget of ``reference`` (a config file ``path.py[:arg]``: its
    max_tokens less its audio tokens) plus the audio tokens of ``config`` with the choice's overrides.
    Both configs must have the same buckets."""
    base = load_config_file(reference)
    text = [t - a for t, a in zip(max_tokens_per_bucket(base), audio_tokens_per_bucket(base))]
    budgeted = {}
    for label, values in choices.items():
        cell = load_config_file(config)
        for key, value in values.items():
            override(cell, key, value)
        if tuple(cell.data.pipeline.bucket_frames) != tuple(base.data.pipeline.bucket_frames):
            raise ValueError(
                f"choice {label!r}: buckets {tuple(cell.data.pipeline.bucket_frames)} of {config} differ from "
                f"{tuple(base.data.pipeline.bucket_frames)} of {reference}"
            )
        audio = audio_tokens_per_bucket(cell)
        budgeted[label] = {**values, "data.pipeline.max_tokens": tuple(t + a for t, a in zip(text, audio))}
    return budgeted
