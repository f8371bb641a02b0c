"""``build(config) -> Run``: an experiment config checked whole, then its data, tokenizer and task.

Every section is read into its dataclasses first (``task`` / ``init`` / ``model`` by the task
kind, ``init.from_run`` by ``recipes/from_run.py`` for every kind, ``data`` and ``eval`` by
``recipes/config.py``, ``train`` by the trainer), so a wrong key
or value fails before any corpus is synthesised; then the data is built when asked, and the
task kind sets up its tokenizer, model and loss.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from typing import Any

import jax

from jaxspeech import paths
from jaxspeech.config_dict import check_keys, dataclass_from_dict, plain
from jaxspeech.corpus.build import build_corpus
from jaxspeech.corpus.instruction_manifests import WHERE as INSTRUCTION_TASKS, write_instruction_manifests
from jaxspeech.errors import ConfigError, MissingFileError
from jaxspeech.data.pipeline import DataPipeline
from jaxspeech.data.pipeline_config import PipelineConfig
from jaxspeech.data.sources import ConcatSource, LibriSpeechSource, ManifestSource, TfdsSource, write_manifest
from jaxspeech.decoding.lexicon import TokenAutomaton
from jaxspeech.models.speech_llm import SpeechLLMConfig
from jaxspeech.recipes.config import SECTIONS, DataConfig, EvalConfig, is_tfds, tfds_name_split
from jaxspeech.recipes.from_run import Take, parse_from_run
from jaxspeech.recipes.word_list import lexicon_automaton, read_words
from jaxspeech.tasks.ctc_decoder import CTCDecoder
from jaxspeech.tasks.ctc_encoder_kind import CTCEncoderKind
from jaxspeech.tasks.kinds import Decoder, OwnsItsData, TaskKind, task_kind
from jaxspeech.tasks.speech_llm_kind import SpeechLLMKind
from jaxspeech.train.config import TrainConfig, train_config_from_dict
from jaxspeech.types import Batch, BatchShape


# init keys that name Hugging Face checkpoint folders (read by libraries that need local files).
CHECKPOINT_DIRS = ("whisper_dir", "llm_dir")


class FirstN:
    """The first ``n`` records of a random-access source (for quick evaluations during training)."""

    def __init__(self, source, n: int):
        self.source, self.n = source, min(n, len(source))

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int):
        if not 0 <= index < self.n:
            raise IndexError(index)
        return self.source[index]

    def durations(self):
        return self.source.durations()[: self.n]


def manifest_file(data_dir: str, name: str) -> str:
    """A manifest path: ``name`` as given if it is a file; for a LibriSpeech-layout folder,
    ``<data_dir>/<folder name>-<8 hex digits of its absolute path's SHA-1>.jsonl`` (written from the folder
    when missing; the digest keeps two folders of the same name apart); else ``<data_dir>/<name>.jsonl``."""
    if os.path.isdir(name):
        folder = os.path.abspath(name)
        digest = hashlib.sha1(folder.encode()).hexdigest()[:8]
        path = os.path.join(data_dir, f"{os.path.basename(folder)}-{digest}.jsonl")
        if not os.path.isfile(path):
            write_manifest(LibriSpeechSource(name), path)
        return path
    return name if paths.is_file(name) else paths.join(data_dir, f"{name}.jsonl")


@dataclasses.dataclass(frozen=True)
class EvalDecoder:
    """One of a run's evaluation decoders and the ``eval.lexicon`` source it decodes with (None: no lexicon)."""

    decoder: Decoder
    lexicon: str | None


@dataclasses.dataclass
class Run:
    """A built run: its checked sections, the task kind set up, the pipelines' configs."""

    config: Any  # the experiment config as given
    kind: TaskKind
    data: DataConfig
    train: TrainConfig
    eval: EvalConfig
    pipeline: PipelineConfig
    eval_pipeline: PipelineConfig
    from_run: tuple[Take, ...] = ()  # init.from_run's entries (recipes/from_run.py)
    lexicons: dict[str, TokenAutomaton] = dataclasses.field(default_factory=dict, repr=False)  # built, by source

    @property
    def task(self):
        """The trainer's ``Task``: the model and its loss."""
        return self.kind.task

    @property
    def tokenizer(self):
        return self.kind.tokenizer

    @property
    def tokenizer_path(self) -> str:
        return self.kind.tokenizer_file

    def manifest(self, name: str) -> str:
        """The manifest of data set ``name`` (see ``manifest_file``)."""
        return manifest_file(self.data.dir, name)

    def source(self, name: str):
        """The records of data set ``name``: a TFDS dataset ``tfds:NAME/SPLIT`` (``data.tfds``), else
        a manifest (``manifest``)."""
        if not is_tfds(name):
            return ManifestSource([self.manifest(name)])
        options = self.data.tfds
        dataset, split = tfds_name_split(name)
        return TfdsSource(
            dataset,
            split,
            options.data_dir,
            audio_key=options.audio_key,
            text_key=options.text_key,
            id_key=options.id_key,
            sample_rate=options.sample_rate,
        )

    @staticmethod
    def set_label(name: str) -> str:
        """Data set ``name``'s label in scores and file names: a manifest's file name without its
        extension; ``NAME-SPLIT`` of a TFDS dataset (``/`` and ``:`` as ``-``)."""
        if is_tfds(name):
            return "-".join(tfds_name_split(name)).replace("/", "-").replace(":", "-")
        return os.path.splitext(os.path.basename(name))[0]

    @property
    def reads_audio(self) -> bool:
        """False for a task that owns its data (``OwnsItsData``: text alone)."""
        return not isinstance(self.kind, OwnsItsData)

    def train_source(self):
        """The records of ``data.train``, set after set."""
        if not any(is_tfds(name) for name in self.data.train):
            return ManifestSource([self.manifest(name) for name in self.data.train])
        sources = [self.source(name) for name in self.data.train]
        return sources[0] if len(sources) == 1 else ConcatSource(sources)

    def train_pipeline(self, process_index: int | None = None, process_count: int | None = None):
        """The training batches: the audio pipeline over ``data.train``, or the task's own."""
        if not self.reads_audio:
            return self.kind.train_pipeline(
                self.manifest,
                self.pipeline.batch_size_multiple,
                jax.process_index() if process_index is None else process_index,
                jax.process_count() if process_count is None else process_count,
            )
        return DataPipeline(
            self.train_source(),
            self.pipeline,
            tokenize=self.kind.example_tokens(),
            process_index=process_index,
            process_count=process_count,
        )

    def example_batch(self):
        """An all-padding batch shaped like a training batch (one row; the parameter shapes and the
        train state's layout depend on the shapes only)."""
        if not self.reads_audio:
            return self.kind.example_batch()
        pipeline = self.pipeline
        return Batch.padding(
            BatchShape(1, pipeline.clips_per_row[0], pipeline.bucket_frames[0], pipeline.max_tokens[0], pipeline.n_mels)
        )

    def eval_data(self, name: str, max_examples: int | None = None) -> DataPipeline:
        """The eval-bucket pipeline over data set ``name`` (a name of ``source``, or a manifest path;
        its first ``max_examples`` records), single host."""
        source = self.source(name)
        if max_examples is not None:
            source = FirstN(source, max_examples)
        return DataPipeline(
            source,
            self.eval_pipeline,
            tokenize=self.kind.example_tokens(inference=True),
            process_index=0,
            process_count=1,
        )

    def lexicon_words(self) -> list[str] | None:
        """The words of ``eval.lexicon`` (None without one)."""
        return None if self.eval.lexicon is None else read_words(self.eval.lexicon, self.manifest)

    def lexicon(self) -> TokenAutomaton | None:
        """The token automaton of ``eval.lexicon`` (None without one), built once per source."""
        source = self.eval.lexicon
        if source is not None and source not in self.lexicons:
            self.lexicons[source] = lexicon_automaton(self.lexicon_words(), self.tokenizer, self.kind.vocab_size)
        return None if source is None else self.lexicons[source]

    def decoder(self) -> Decoder:
        """The task's decoder with ``eval.generation`` (and the lexicon)."""
        return self.kind.decoder(self.eval.generation, self.lexicon())

    def decoders(self) -> dict[str, EvalDecoder]:
        """The decoders of ``eval.decoders`` by name (``recipes/config.py``) that the task has (a
        Speech LLM: all; a CTC encoder: ``ctc``; others: none); without any, the run's ``decoder()``
        under the name "" (so one ``eval`` section serves every stage of a staged config)."""
        lexicon = self.eval.lexicon
        names = [
            name
            for name in self.eval.decoders
            if isinstance(self.kind, SpeechLLMKind) or (name == "ctc" and isinstance(self.kind, CTCEncoderKind))
        ]
        if not names:
            return {"": EvalDecoder(self.decoder(), lexicon)}
        decoders = {}
        for name in names:
            if name == "joint":
                decoders[name] = EvalDecoder(self.decoder(), lexicon)
            elif name == "llm":
                decoders[name] = EvalDecoder(self.kind.decoder(self.eval.llm_generation, None), None)
            else:
                decoders[name] = EvalDecoder(self.ctc_decoder(), None)
        return decoders

    def ctc_decoder(self) -> CTCDecoder:
        """Greedy decoding with the model's CTC head alone."""
        model = getattr(self.kind, "model", None)
        if not isinstance(model, SpeechLLMConfig) or not model.ctc_vocab_size:
            raise ValueError(
                "eval.decoders 'ctc' decodes with the CTC head: it needs a Speech-LLM model with model.ctc = True"
            )
        return CTCDecoder(model, self.tokenizer, getattr(getattr(self.kind, "task_config", None), "lora", None))


def pipelines(kind: TaskKind, data: DataConfig, local_devices: int) -> tuple[PipelineConfig, PipelineConfig]:
    """(train, eval) pipeline configs of ``data`` with what the task's model decides; host batches
    are rounded to multiples of ``local_devices``."""
    values = dict(data.pipeline)
    # Host batches must split evenly over the local devices of the data-parallel mesh axes.
    values.setdefault("batch_size_multiple", local_devices)
    eval_values = {
        **values,
        "shuffle": False,
        "num_epochs": 1,
        "drop_remainder": False,
        "batch_size_multiple": 1,
        **data.eval_pipeline,
    }
    pipeline = dataclass_from_dict(PipelineConfig, kind.pipeline_values(values), "data.pipeline")
    eval_pipeline = dataclass_from_dict(PipelineConfig, kind.pipeline_values(eval_values), "data.eval_pipeline")
    kind.check_pipeline(pipeline, "data.pipeline")
    kind.check_pipeline(eval_pipeline, "data.eval_pipeline")
    return pipeline, eval_pipeline


def without_from_run(config) -> tuple[dict[str, Any], tuple[Take, ...]]:
    """(``config`` as a dict without ``init.from_run``, which the recipe handles for every task kind,
    and its entries); an ``init`` left empty is dropped."""
    config = dict(plain(config))
    init = dict(config.get("init") or {})
    takes = parse_from_run(init.pop("from_run")) if init.get("from_run") is not None else ()
    if "init" in config:
        init.pop("from_run", None)
        if init:
            config["init"] = init
        else:
            del config["init"]
    return config, takes


def with_local_checkpoints(config: dict[str, Any], weights: bool) -> dict[str, Any]:
    """``config`` with each bucket folder of ``CHECKPOINT_DIRS`` replaced by its local mirror
    (``paths.local_copy``; only configs and tokenizers unless ``weights``), which every reader of
    the checkpoint then sees; raises naming the folder when it holds no config.json."""
    init = dict(config.get("init") or {})
    for key in CHECKPOINT_DIRS:
        folder = init.get(key)
        if not folder or paths.is_local(folder):
            continue
        if not paths.is_file(paths.join(folder, "config.json")):
            raise MissingFileError(
                paths.join(folder, "config.json"), f"init.{key}: expected a Hugging Face checkpoint folder there"
            )
        init[key] = paths.local_copy(folder, weights=weights)
    return {**config, "init": init} if "init" in config else config


def read_sections(config, need_weights: bool = True) -> tuple[TaskKind, DataConfig, TrainConfig, EvalConfig]:
    """Every section of ``config`` read and checked, nothing built: (task kind, data, train, eval);
    checkpoints on a bucket are mirrored locally first (without weights unless ``need_weights``)."""
    check_keys(config, set(SECTIONS), "config")
    config, _ = without_from_run(config)
    config = with_local_checkpoints(config, weights=need_weights)
    kind = task_kind(config, need_weights)
    data = dataclass_from_dict(DataConfig, config.get("data") or {}, "data")
    train = kind.train_config(train_config_from_dict(config.get("train") or {}))
    return kind, data, train, dataclass_from_dict(EvalConfig, config.get("eval") or {}, "eval")


def check_instruction_prompts(kind: TaskKind, data: DataConfig) -> None:
    """Raises unless ``kind`` prompts with instructions (a Speech LLM) and has a prompt for every task
    of ``data.instruction_tasks``."""
    tasks = data.instruction_tasks
    if not isinstance(kind, SpeechLLMKind):
        raise ConfigError(INSTRUCTION_TASKS, "instruction tasks need a task that prompts: task.kind 'speech_llm'")
    missing = [task for task in (*tasks.train_mix, *tasks.eval_tasks) if task not in kind.instruction_prompts]
    if missing:
        raise ConfigError(
            "task.prompt.prompts",
            f"has no prompt for the instruction task(s) {sorted(set(missing))} of {INSTRUCTION_TASKS}: add "
            "jaxspeech.corpus.instructions.task_prompts() (as configs/instructions.py does)",
        )


def build(config, progress: bool = True, *, build_data: bool = True) -> Run:
    """The run of ``config``; ``build_data`` False never synthesises the corpus (reopening a run)."""
    kind, data, train, evaluation = read_sections(config)

    tokenizer = kind.tokenizer_path(data.dir, data.tokenizer, data.build_tokenizer)
    if build_data and data.build_corpus:
        build_corpus(data.dir, data.corpus, tokenizer_vocab=data.tokenizer_vocab, progress=progress)
    if data.instruction_tasks is not None:
        check_instruction_prompts(kind, data)
        if build_data:
            write_instruction_manifests(data.dir, data.instruction_tasks)
    if not paths.exists(tokenizer):
        raise MissingFileError(
            tokenizer, "tokenizer not found: set data.tokenizer, or data.tokenizer_vocab with data.build_corpus"
        )
    kind.setup(tokenizer)
    pipeline, eval_pipeline = pipelines(kind, data, jax.local_device_count())
    run = Run(
        config=config,
        kind=kind,
        data=data,
        train=train,
        eval=evaluation,
        pipeline=pipeline,
        eval_pipeline=eval_pipeline,
        from_run=without_from_run(config)[1],
    )
    if build_data and run.reads_audio:
        kind.check_train_source(run.train_source())
    return run
