"""The fusion study as a sweep grid: decoder-only vs cross-attention vs hybrid (time-chunk tags on
and off) at two audio token rates, two seeds, on the same data, encoder, LLM and time budget.

  jaxspeech sweep --grid-file experiments/fusion/grid.py --workdir runs/sweep_fusion          # 16 cells
  jaxspeech sweep --grid-file experiments/fusion/grid.py:debug --workdir /tmp/sweep_fusion    # same cells, debug scale
  jaxspeech sweep --grid-file experiments/fusion/grid.py:colab --workdir /tmp/fusion_colab    # 2 cells (the notebook)

Every cell is configs/cross_attention.py (sequential LLM positions, unrolled LLM layers, gated
cross-attention sized as the LLM) with ``model.fusion`` and the connector's frame stacking set by
the cell. Each arm's ``data.pipeline.max_tokens`` is configs/tiny_asr.py's text budget plus the
arm's own audio tokens (and chunk tags), so no arm rejects rows or pays for padding.
"""

from jaxspeech.sweep.study import NOTEBOOK_ASR_SETS, keep_text_budget

FUSIONS = {
    "decoder_only": {"model.fusion": "decoder_only"},
    "cross_attention": {"model.fusion": "cross_attention"},
    "hybrid": {"model.fusion": "hybrid", "model.hybrid_pool": 5},
    # NVLM-H's tile tags in time: <chunk_k> before the inline tokens of the k-th 1.6 s of audio
    # (160 log-mel frames: 2 pooled tokens at 6.25 tokens/s, 4 at 12.5).
    "hybrid_tags": {
        "model.fusion": "hybrid",
        "model.hybrid_pool": 5,
        "task.prompt.chunk_tags": True,
        "task.prompt.chunk_frames": 160,
    },
}
# The encoder gives 25 frames/s (log-mel at 100/s, stacked by 4); the connector stacks 2 or 4 more.
RATES = {"12.5": {"model.connector.stack": 2}, "6.25": {"model.connector.stack": 4}}
COLAB_ARMS = ("decoder_only 6.25/s", "cross_attention 6.25/s")


def get_grid(arg: str | None = None) -> dict:
    if arg not in (None, "debug", "colab"):
        raise ValueError(f"experiments/fusion/grid.py takes no argument, 'debug' or 'colab', got {arg!r}")
    scale = "" if arg is None else ":debug"
    arms = {
        f"{fusion} {rate}/s": {**fusion_keys, **rate_keys}
        for fusion, fusion_keys in FUSIONS.items()
        for rate, rate_keys in RATES.items()
    }
    if arg == "colab":
        arms = {label: arms[label] for label in COLAB_ARMS}
    config = f"configs/cross_attention.py{scale}"
    return {
        "CONFIG": config,
        "SETS": list(NOTEBOOK_ASR_SETS) if arg == "colab" else [],
        "GRID": {
            "arm": keep_text_budget(arms, config=config, reference=f"configs/tiny_asr.py{scale}"),
            "train.seed": [0] if arg == "colab" else [0, 1],
        },
    }
