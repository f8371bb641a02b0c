"""The instruction-following and dormancy study as a sweep grid: the balanced and the ASR-heavy task
mix, audio embeddings norm-matched to the text's or not, two seeds, on configs/instructions.py.

  jaxspeech sweep --grid-file experiments/instructions/grid.py --workdir runs/sweep_instructions          # 8 cells
  jaxspeech sweep --grid-file experiments/instructions/grid.py:debug --workdir /tmp/sweep_instructions    # debug scale
  jaxspeech sweep --grid-file experiments/instructions/grid.py:colab --workdir /tmp/instructions_colab    # 2 cells

A mix sets the training manifest's task weights and its name (``data.instruction_tasks``,
``data.train``): configs/instructions.py's ``balanced`` and ``asr_heavy`` variants; at debug scale,
the tasks the debug corpus holds for every record, alike or with 90 % ASR.
"""

from jaxspeech.config_dict import load_config_file
from jaxspeech.sweep.study import NOTEBOOK_SETS

ASR_SHARE = 0.9  # of the ASR-heavy mix, as configs/instructions.py's asr_heavy


def mix_choice(train_set: str, mix: dict) -> dict:
    return {
        "data.instruction_tasks.train_mix": mix,
        "data.instruction_tasks.train_set": train_set,
        "data.train": train_set,
    }


def mixes(debug: bool) -> dict[str, dict]:
    """{label: the keys that set the training mix}."""
    if not debug:
        choices = {}
        for variant in ("balanced", "asr_heavy"):
            tasks = load_config_file(f"configs/instructions.py:{variant}").data.instruction_tasks
            choices[variant] = mix_choice(f"train_{variant}", dict(tasks.train_mix))
        return choices
    others = [
        task
        for task in load_config_file("configs/instructions.py:debug").data.instruction_tasks.train_mix
        if task != "asr"
    ]
    return {
        "balanced": mix_choice("train_debug_balanced", {"asr": 1.0, **{task: 1.0 for task in others}}),
        "asr_heavy": mix_choice(
            "train_debug_asr_heavy", {"asr": ASR_SHARE, **{task: (1 - ASR_SHARE) / len(others) for task in others}}
        ),
    }


def get_grid(arg: str | None = None) -> dict:
    if arg not in (None, "debug", "colab"):
        raise ValueError(f"experiments/instructions/grid.py takes no argument, 'debug' or 'colab', got {arg!r}")
    colab = arg == "colab"
    return {
        "CONFIG": "configs/instructions.py" + ("" if arg is None else ":debug"),
        "SETS": [*NOTEBOOK_SETS, "eval.generation={'method': 'greedy', 'max_new_tokens': 8}"] if colab else [],
        "GRID": {
            "mix": mixes(debug=arg is not None),
            "model.connector.norm_match": [False] if colab else [False, True],
            "train.seed": [0] if colab else [0, 1],
        },
    }
