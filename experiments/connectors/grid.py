"""The connector and token-rate study as a sweep grid: linear, frame-stack MLP, strided conv and
window Q-Former at 50 / 25 / 12.5 / 6.25 audio tokens per second, as far as each reaches them, two
seeds, on configs/tiny_asr.py's data, encoder, decoder-only LLM and time budget.

  jaxspeech sweep --grid-file experiments/connectors/grid.py --workdir runs/sweep_connectors        # 22 cells
  jaxspeech sweep --grid-file experiments/connectors/grid.py:debug --workdir /tmp/sweep_connectors  # debug scale
  jaxspeech sweep --grid-file experiments/connectors/grid.py:colab --workdir /tmp/connectors_colab  # 2 cells

The encoder gives 25 frames per second (log-mel at 100/s, stacked by 4). A linear projector keeps
that rate; frame stacking and a strided conv divide it (stack / stride 1, 2, 4); only the Q-Former,
with several queries per window, gives more tokens than frames: windows of 4 frames (160 ms) with
8, 4, 2 or 1 queries. LLM positions are sequential in every cell (configs/tiny_asr.py's CTC-aligned
positions need a linear or frame-stack connector). Each arm's ``data.pipeline.max_tokens`` is
tiny_asr's text budget plus the arm's own audio tokens.
"""

from jaxspeech.config_dict import load_config_file
from jaxspeech.sweep.study import NOTEBOOK_ASR_SETS, keep_text_budget

ENCODER_FRAMES_PER_S = 25
QFORMER_WINDOW = 4  # encoder frames per window
COLAB_ARMS = ("linear 25/s", "frame_stack 6.25/s")


def rate(tokens_per_frame: float) -> str:
    return f"{ENCODER_FRAMES_PER_S * tokens_per_frame:g}/s"


def connectors(width: int, small: bool) -> dict[str, dict]:
    """{arm label: {"model.connector": its section}}; ``width``: the MLP / conv hidden width of
    configs/tiny_asr.py's frame-stack connector, which every kind shares."""
    arms = {f"linear {rate(1)}": dict(kind="linear")}
    for stack in (1, 2, 4):
        arms[f"frame_stack {rate(1 / stack)}"] = dict(kind="frame_stack", stack=stack, hidden_size=width)
    for stride in (1, 2, 4):  # kernels wider than the stride: every frame is read
        kernel = max(3, stride + 1)
        arms[f"conv {rate(1 / stride)}"] = dict(kind="conv", kernel=kernel, stride=stride, hidden_size=width)
    qformer = dict(size=width // 2, num_heads=2 if small else 4, ffn_size=width, num_layers=1 if small else 2)
    for queries in (8, 4, 2, 1):
        arms[f"qformer {rate(queries / QFORMER_WINDOW)}"] = dict(
            kind="qformer", window=QFORMER_WINDOW, window_stride=QFORMER_WINDOW, num_queries=queries, **qformer
        )
    return {
        label: {"model.connector": section, "model.audio_positions": "sequential", "model.ctc_embed": False}
        for label, section in arms.items()
    }


def get_grid(arg: str | None = None) -> dict:
    if arg not in (None, "debug", "colab"):
        raise ValueError(f"experiments/connectors/grid.py takes no argument, 'debug' or 'colab', got {arg!r}")
    config = "configs/tiny_asr.py" + ("" if arg is None else ":debug")
    arms = connectors(load_config_file(config).model.connector.hidden_size, small=arg is not None)
    if arg == "colab":
        arms = {label: arms[label] for label in COLAB_ARMS}
    return {
        "CONFIG": config,
        "SETS": list(NOTEBOOK_ASR_SETS) if arg == "colab" else [],
        "GRID": {
            "connector": keep_text_budget(arms, config=config, reference=config),
            "train.seed": [0] if arg == "colab" else [0, 1],
        },
    }
