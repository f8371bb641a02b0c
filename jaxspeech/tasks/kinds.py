"""What the one recipe (``jaxspeech.recipes``) needs of a task, and the task kinds it knows.

A config's ``task.kind`` names one of ``KINDS``. Building a kind is two-phase, so that every key
of the config is checked before any data is built:

1. ``Kind(config)`` reads the ``init``, ``model`` and ``task`` sections into typed dataclasses and
   raises, naming the key, on anything unknown or misplaced. It may read small files that describe
   checkpoints (``config.json``), never data or weights.
2. ``kind.setup(tokenizer_path)``, once the data and the tokenizer exist, builds the tokenizer, the
   model config and the trainer's ``Task`` (``task``: the model and its loss).

After setup a kind supplies the rest of the run: the pipeline's ``tokenize`` callable
(``example_tokens``), the pipeline fields the model decides (``pipeline_values``), a ``decoder``
(a batch -> one hypothesis per row) for evaluation, the pretrained weights of step 0, and what to
do with the trained parameters (``after_training``).

A kind that reads no audio (``text_lm``) also follows ``OwnsItsData``: it builds its own training
batches and scores its held-out data itself, and the recipe leaves the audio pipeline unused.

A new task is one module with a class following ``TaskKind`` and one entry in ``KINDS``
(``ctc_encoder_kind.py`` and ``text_lm_kind.py`` are small examples).
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, Protocol, Sequence, runtime_checkable

from jaxspeech.data.pipeline_config import PipelineConfig
from jaxspeech.data.tokenizers import Tokenizer
from jaxspeech.decoding.generate import GenerationConfig
from jaxspeech.decoding.lexicon import TokenAutomaton
from jaxspeech.errors import ConfigError
from jaxspeech.tasks.ctc_encoder_kind import CTCEncoderKind
from jaxspeech.tasks.speech_llm_kind import SpeechLLMKind
from jaxspeech.tasks.text_lm_kind import TextLMKind
from jaxspeech.tasks.whisper_seq2seq_kind import WhisperSeq2SeqKind
from jaxspeech.train.config import TrainConfig
from jaxspeech.types import Batch

KINDS = {
    "speech_llm": SpeechLLMKind,
    "whisper_seq2seq": WhisperSeq2SeqKind,
    "ctc_encoder": CTCEncoderKind,
    "text_lm": TextLMKind,
}
DEFAULT_KIND = "speech_llm"


class Decoder(Protocol):
    """Decoding of evaluation batches with one set of parameters."""

    def prepare(self, params: Mapping[str, Any]) -> Any:
        """What ``__call__`` needs from the trained parameter tree (without the "params" level),
        e.g. LoRA adapters merged into their kernels; done once per parameter set."""
        ...

    def __call__(self, prepared: Any, batch: Batch) -> list[str]:
        """One hypothesis per row of ``batch`` (padding rows included)."""
        ...


class Pretrained(Protocol):
    """Weights for step 0: ``load()`` gives the nested host arrays of the subtrees it covers;
    parameters matching a ``fresh`` regex keep their random init; ``source`` names the weights."""

    source: str
    fresh: Sequence[str]

    def load(self) -> Mapping[str, Any]: ...


class TaskKind(Protocol):
    """One kind of task (see the module docstring); attributes exist after ``setup``."""

    task: Any  # the trainer's Task (jaxspeech.train.task): the model and its loss
    tokenizer: Tokenizer
    init_source: str  # where the initial weights come from, for the report
    vocab_size: int  # logits per decoding step (a lexicon's automaton covers them)

    def tokenizer_path(self, data_dir: str, tokenizer: str | None, build: bool) -> str:
        """The tokenizer to use: ``data.tokenizer`` when set, else the kind's default (a
        checkpoint's, or ``<data_dir>/tokenizer.model``); ``build`` writes a missing one."""
        ...

    def setup(self, tokenizer_path: str) -> None: ...

    def train_config(self, train: TrainConfig) -> TrainConfig:
        """``train`` with what the task section adds (e.g. a frozen encoder's learning-rate rule)."""
        ...

    def check_train_source(self, source: Any) -> None:
        """Raises naming the first training record the task cannot learn from."""
        ...

    def pipeline_values(self, values: dict[str, Any]) -> dict[str, Any]:
        """``PipelineConfig`` fields of a pipeline section with what the model decides added
        (``n_mels``, ``pad_token_id``, Whisper's full window)."""
        ...

    def check_pipeline(self, pipeline: PipelineConfig, where: str) -> None:
        """Raises naming ``where`` if the model cannot take ``pipeline``'s batches."""
        ...

    def example_tokens(self, inference: bool = False) -> Callable:
        """The pipeline's ``tokenize(record, frames_per_clip) -> EncodedExample``; ``inference``
        leaves out the target."""
        ...

    def decoder(self, generation: GenerationConfig, lexicon: TokenAutomaton | None) -> Decoder: ...

    def pretrained(self) -> Pretrained | None: ...

    def after_training(self, params: Mapping[str, Any], workdir: str) -> list[str]:
        """Writes what the trained parameters give besides checkpoints; returns report notes."""
        ...

    def notes(self) -> list[str]:
        """Report lines on how the task was set up."""
        ...


@runtime_checkable
class OwnsItsData(Protocol):
    """A task kind that reads no audio (see the module docstring). ``manifest(name)`` is the path of
    data set ``name`` (as ``data.train`` names it)."""

    def train_pipeline(
        self, manifest: Callable[[str], str], row_multiple: int, process_index: int, process_count: int
    ) -> Any:
        """This host's training batches, their rows a multiple of ``row_multiple``: ``.iterator()``
        gives a checkpointable iterator (``get_state`` / ``set_state``, a context manager)."""
        ...

    def example_batch(self) -> Any:
        """An all-padding batch shaped like the training batches (parameter shapes come from it)."""
        ...

    def held_out_scores(self, params: Mapping[str, Any], manifest: Callable[[str], str]) -> Mapping[str, Any]:
        """``{"<set> <METRIC>": result}`` on the held-out data; ``params`` without the "params" level."""
        ...


def kind_name(config: Mapping[str, Any]) -> str:
    """``config.task.kind`` (default ``speech_llm``), checked."""
    name = (config.get("task") or {}).get("kind", DEFAULT_KIND)
    if name not in KINDS:
        raise ConfigError("task.kind", f"expected one of {sorted(KINDS)}, got {name!r}")
    return name


def task_kind(config: Mapping[str, Any], need_weights: bool = True) -> TaskKind:
    """The task kind of ``config.task.kind``, its sections checked; ``need_weights`` False accepts an
    ``init`` that names architectures (presets) without checkpoints, which is all a plan needs."""
    return KINDS[kind_name(config)](config, need_weights)
