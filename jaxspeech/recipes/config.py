"""The sections of an experiment config that every task shares: ``data`` and ``eval``.

``configs/*.py`` ``get_config()`` returns a ``ConfigDict`` with the sections ``SECTIONS``:
``init``, ``model`` and ``task`` belong to the task kind (``task.kind``, ``jaxspeech.tasks.kinds``);
``train`` is the trainer's ``TrainConfig``; ``data`` and ``eval`` are below. Every section is read
into frozen dataclasses that reject unknown keys, naming them and listing the valid ones.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

from jaxspeech.config_dict import dataclass_from_dict, plain
from jaxspeech.corpus.instruction_manifests import InstructionTasksConfig
from jaxspeech.corpus.utterances import CorpusConfig
from jaxspeech.data.pipeline_config import PipelineConfig
from jaxspeech.decoding.generate import GenerationConfig
from jaxspeech.errors import ConfigError
from jaxspeech.evals.metrics import PER_SET_METRICS

SECTIONS = ("init", "data", "model", "task", "train", "eval")
# The decoders ``eval.decoders`` can name (see ``EvalConfig``).
DECODERS = ("llm", "ctc", "joint")


def set_names(value: str | tuple[str, ...]) -> tuple[str, ...]:
    """A config's data set names (one name or several) as a tuple."""
    return (value,) if isinstance(value, str) else tuple(value)


TFDS_PREFIX = "tfds:"


def is_tfds(name: str) -> bool:
    """Whether a data set name names a TFDS dataset (``tfds:NAME/SPLIT``)."""
    return name.startswith(TFDS_PREFIX)


def tfds_name_split(name: str, where: str = "data") -> tuple[str, str]:
    """``tfds:NAME/SPLIT`` -> (NAME, SPLIT); NAME may hold a config and version
    (``librispeech/clean100:2.1.0``), SPLIT TFDS's slicing (``train[:10%]``)."""
    dataset, _, split = name.removeprefix(TFDS_PREFIX).rpartition("/")
    if not dataset or not split:
        raise ConfigError(where, f"{name!r}: expected 'tfds:NAME/SPLIT', e.g. 'tfds:librispeech/test_clean'")
    return dataset, split


@dataclasses.dataclass(frozen=True)
class TfdsOptions:
    """How the TFDS data sets of ``data.train`` / ``data.eval_sets`` are read (``data.sources.TfdsSource``):
    ``data_dir`` holds the prepared datasets (None: TFDS's default, ``~/tensorflow_datasets``);
    ``audio_key`` (None: ``speech`` or ``audio``), ``text_key`` and ``id_key`` name the features;
    ``sample_rate`` of a plain-tensor audio feature (a ``tfds.features.Audio`` knows its own)."""

    data_dir: str | None = None
    audio_key: str | None = None
    text_key: str = "text"
    id_key: str | None = "id"
    sample_rate: int | None = None


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """Where the data comes from.

    ``dir``: corpus or manifest folder; ``build_corpus``: synthesise the embedded corpus there
    (``corpus``: its ``CorpusConfig``) when missing; ``tokenizer``: a path (default: the task's,
    see its kind); ``tokenizer_vocab``: train a sentencepiece model of this size with the corpus;
    ``build_tokenizer``: write a byte-level Whisper-style tokenizer when missing (Whisper debug
    runs); ``train`` / ``eval_sets``: manifest names or paths, LibriSpeech-layout folders, or prepared
    TFDS datasets ``tfds:NAME/SPLIT`` (read as ``tfds`` says; needs the ``[tfds]`` extra);
    ``pipeline``: ``PipelineConfig`` fields; ``eval_pipeline``: overrides for evaluation;
    ``instruction_tasks``: instruction-task manifests to write from the corpus in ``dir`` (its
    ``InstructionTasksConfig``: a training mix and one eval set per task, ``corpus/instructions.py``),
    written after the corpus is built and named like any other set in ``train`` / ``eval_sets``."""

    dir: str = "data/tiny"
    build_corpus: bool = False
    corpus: CorpusConfig = CorpusConfig()
    tokenizer: str | None = None
    tokenizer_vocab: int | None = None
    build_tokenizer: bool = False
    train: str | tuple[str, ...] = "train"
    eval_sets: str | tuple[str, ...] = ("test",)
    pipeline: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    eval_pipeline: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    tfds: TfdsOptions = TfdsOptions()
    instruction_tasks: InstructionTasksConfig | None = None

    def __post_init__(self):
        object.__setattr__(self, "train", set_names(self.train))
        object.__setattr__(self, "eval_sets", set_names(self.eval_sets))
        for key in ("train", "eval_sets"):
            for name in getattr(self, key):
                if is_tfds(name):
                    tfds_name_split(name, f"data.{key}")
        object.__setattr__(self, "pipeline", dict(plain(self.pipeline)))
        object.__setattr__(self, "eval_pipeline", dict(plain(self.eval_pipeline)))
        # The pipeline keys are checked now, before any data is built (the model adds its fields later).
        dataclass_from_dict(PipelineConfig, self.pipeline, "data.pipeline")
        dataclass_from_dict(PipelineConfig, {**self.pipeline, **self.eval_pipeline}, "data.eval_pipeline")


@dataclasses.dataclass(frozen=True)
class EvalConfig:
    """Decoding and scoring of the evaluation sets.

    ``generation``: the decoding settings (``GenerationConfig``: method greedy | beam | sample,
    beams, ``ctc_weight`` for joint CTC/attention decoding, ...; its end and padding ids come from
    the tokenizer); ``lexicon`` (a word-list file, or a data set whose transcripts give the words;
    ``recipes/word_list.py``) limits the output to those words; ``max_examples`` per set (None =
    all); ``during_training_examples`` of the first set are decoded every ``train.eval_every``
    steps; ``metrics``: the scores of every set, names of ``jaxspeech.evals.metrics.PER_SET_METRICS``
    (``wer``, ``cer``, ``bleu``, ``exact_match``, ``transcript_echo``); ``set_metrics``: other scores for some sets, by
    their name in ``data.eval_sets`` (e.g. ``{"ast_test": ("bleu",)}``). An example's reference is
    its ``target`` when it has one (the answer a prompted task trains on), else its ``text``.

    ``decoders``: several decoders per set, scored side by side (``<set>/<decoder>``), each set's
    batches read once for all of them: ``joint`` (``generation`` with ``lexicon``: joint
    CTC/attention when ``generation.ctc_weight`` > 0), ``llm`` (the task's decoder alone:
    ``llm_generation``, no CTC scores, no lexicon) and ``ctc`` (the CTC head alone, greedy; needs
    ``model.ctc``). Empty: the ``joint`` decoder alone, unnamed (``<set>``).

    ``dormancy_every``: every that many training steps, log the audio/text embedding RMS ratio and
    the LLM's attention mass on the audio tokens (``evals/dormancy.py``) on the first
    ``dormancy_examples`` of the first eval set, teacher-forced on their transcripts (0: never)."""

    generation: GenerationConfig = GenerationConfig(max_new_tokens=96)
    lexicon: str | None = None
    max_examples: int | None = None
    during_training_examples: int = 100
    metrics: tuple[str, ...] = ("wer", "cer")
    set_metrics: Mapping[str, tuple[str, ...]] = dataclasses.field(default_factory=dict)
    decoders: tuple[str, ...] = ()
    llm_generation: GenerationConfig = GenerationConfig(method="beam", num_beams=4, max_new_tokens=96)
    dormancy_every: int = 0
    dormancy_examples: int = 8

    def __post_init__(self):
        object.__setattr__(self, "decoders", set_names(self.decoders))
        for name in ("generation", "llm_generation"):
            generation = getattr(self, name)
            if generation.eos_ids or generation.pad_id:
                raise ValueError(
                    f"eval.{name}.eos_ids and pad_id come from the tokenizer: leave them out of the config"
                )
        unknown_decoders = [name for name in self.decoders if name not in DECODERS]
        if unknown_decoders or len(set(self.decoders)) != len(self.decoders):
            raise ValueError(f"eval.decoders: expected distinct names of {DECODERS}, got {list(self.decoders)}")
        if self.llm_generation.ctc_weight:
            raise ValueError(
                f"eval.llm_generation decodes with the LLM alone: ctc_weight must be 0, got "
                f"{self.llm_generation.ctc_weight}"
            )
        if self.dormancy_every < 0 or self.dormancy_examples < 1:
            raise ValueError(
                f"eval.dormancy_every must be >= 0 and eval.dormancy_examples >= 1, got "
                f"{self.dormancy_every}, {self.dormancy_examples}"
            )
        object.__setattr__(self, "metrics", metric_names(self.metrics, "eval.metrics"))
        object.__setattr__(
            self,
            "set_metrics",
            {
                str(name): metric_names(metrics, f"eval.set_metrics.{name}")
                for name, metrics in plain(self.set_metrics).items()
            },
        )

    def metrics_of(self, name: str) -> tuple[str, ...]:
        """The metrics data set ``name`` is scored with: its ``set_metrics``, else ``metrics``."""
        return self.set_metrics.get(name, self.metrics)


def metric_names(value: str | tuple[str, ...], where: str) -> tuple[str, ...]:
    """``value`` (one metric name or several) as a tuple of known names, else a ``ConfigError`` at ``where``."""
    names = set_names(value)
    unknown = [name for name in names if name not in PER_SET_METRICS]
    if unknown or not names:
        raise ConfigError(
            where, f"unknown metric(s) {unknown} in {list(names)}; expected names of {list(PER_SET_METRICS)}"
        )
    return names
