"""Instruction following on the embedded corpus: the tiny Speech LLM trained on a mix of tasks whose
answers the corpus knows exactly, each task then evaluated as its own set.

  jaxspeech train --config configs/instructions.py --workdir runs/instructions_balanced       # every task alike
  jaxspeech train --config configs/instructions.py:asr_heavy --workdir runs/instructions_asr_heavy  # 90 % ASR
  jaxspeech train --config configs/instructions.py:debug --workdir /tmp/instructions_debug   # seconds, for tests

The tasks (``jaxspeech/corpus/instructions.py``) reuse the corpus's utterances: transcribe (``asr``);
which number / colour / first name was mentioned; is the speech slow, normal or fast (``rate``); is
the voice pitched low, mid or high (``pitch``); say only the last word (``last_word``). Their
manifests are written beside the corpus on first use (``data.instruction_tasks``): the training
mix ``train_<variant>`` and one test set per task, ``test_<task>``. ASR is scored by WER; the
other tasks by exact match and by transcript echo, the share of answers that are (close to) the
transcript although the instruction asked for something else: a model that has learnt to
transcribe whatever it is asked scores high there.

The model is configs/tiny_asr.py's without its CTC head: CTC targets are a row's answer tokens,
which for most tasks here are not what the audio says; so the LLM's positions are sequential and
decoding is the LLM's beam search alone, without the training transcripts' lexicon.
The study: experiments/instructions/README.md.
"""

import ml_collections

import tiny_asr
from jaxspeech.corpus.instructions import TASKS, task_prompts

OTHER_TASKS = tuple(task for task in TASKS if task != "asr")
MIXES = {
    "balanced": {task: 1.0 for task in TASKS},
    "asr_heavy": {"asr": 0.9, **{task: 0.1 / len(OTHER_TASKS) for task in OTHER_TASKS}},
    # What the debug corpus (a dozen utterances per split) holds for every record.
    "debug": {"asr": 1.0, "rate": 1.0, "pitch": 1.0, "last_word": 1.0},
}


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    variant = arg or "balanced"
    if variant not in MIXES:
        raise ValueError(f"configs/instructions.py takes no argument or one of {sorted(MIXES)}, got {arg!r}")
    c = tiny_asr.get_config("debug" if variant == "debug" else None)
    mix = MIXES[variant]
    eval_tasks = tuple(mix) if variant == "debug" else tuple(TASKS)
    c.data.instruction_tasks = dict(
        train_mix=mix, train_set=f"train_{variant}", eval_tasks=eval_tasks, eval_split="test", seed=0
    )
    c.data.train = f"train_{variant}"
    c.data.eval_sets = tuple(f"test_{task}" for task in eval_tasks)  # test_asr first: the dormancy probes read it
    c.model.ctc = False
    c.model.audio_positions = "sequential"
    c.model.ctc_embed = False  # no CTC head to read hints from
    c.task.loss.ctc_weight = 0.0
    c.task.prompt.prompts = task_prompts()
    c.eval.decoders = ()
    c.eval.lexicon = None
    c.eval.generation = dict(method="beam", num_beams=4, max_new_tokens=8 if variant == "debug" else 80)
    c.eval.metrics = ("exact_match", "transcript_echo")
    c.eval.set_metrics = {"test_asr": ("wer",)}
    return c
