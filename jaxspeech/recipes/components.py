"""Builds the parts of a Speech-LLM ASR run from an experiment config.

Config sections (``configs/*.py`` ``get_config()`` returns a ``ConfigDict`` with these keys):
  * ``init`` (optional): ``whisper_dir`` + ``llm_dir`` (HF checkpoints) or ``random`` (shapes): the
    encoder and LLM shapes, and weights for step 0 (``jaxspeech.recipes.pretrained``);
  * ``data``:  ``dir`` (corpus or manifest folder), ``build_corpus`` (synthesise the embedded corpus
    there when missing), ``corpus`` (``CorpusConfig`` fields), ``tokenizer`` (path; default
    ``init.llm_dir``, else ``<dir>/tokenizer.model``), ``tokenizer_vocab`` (train one of this size
    when missing), ``train`` / ``eval_sets`` (manifest names or paths, or LibriSpeech-layout
    folders), ``pipeline`` (``PipelineConfig`` fields), ``eval_pipeline`` (overrides for evaluation);
  * ``model``: ``SpeechLLMConfig`` fields; ``placeholder_id`` and (when ``model.ctc`` is set)
    ``ctc_vocab_size`` are taken from the tokenizer, ``llm.vocab_size`` too unless a checkpoint
    has more embedding rows;
  * ``task``:  ``loss`` (``SpeechLossConfig``), ``spec_augment`` (``SpecAugmentConfig`` or None),
    ``lora`` (``LoraConfig`` or None), ``prompt`` (``task``; ``chat``: True, False, or None for the
    tokenizer's chat template when it has one; ``system``);
  * ``train``: ``TrainConfig``; ``eval``: ``EvalConfig``.

The tokenizer is loaded with ``load_speech_tokenizer``: an LLM's tokenizer gains the audio placeholder.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from typing import Any, Mapping

import jax

from jaxspeech.config_dict import check_keys, dataclass_from_dict, plain
from jaxspeech.corpus.utterances import CorpusConfig
from jaxspeech.corpus.build import build_corpus
from jaxspeech.data.speech_llm_tokens import SpeechLLMTokens, load_speech_tokenizer
from jaxspeech.data.pipeline import DataPipeline
from jaxspeech.data.pipeline_config import PipelineConfig
from jaxspeech.data.sources import LibriSpeechSource, ManifestSource, write_manifest
from jaxspeech.data.special_tokens import AUDIO_PLACEHOLDER
from jaxspeech.data.tokenizers import Tokenizer
from jaxspeech.decoding.lexicon import TokenAutomaton
from jaxspeech.features.specaugment import SpecAugmentConfig
from jaxspeech.layers.lora import LoraConfig
from jaxspeech.models.speech_llm import SpeechLLMConfig
from jaxspeech.recipes import pretrained
from jaxspeech.recipes.word_list import lexicon_automaton, read_words
from jaxspeech.tasks.speech_llm import SpeechLLMTask, SpeechLossConfig
from jaxspeech.train.config import TrainConfig, train_config_from_dict

SECTIONS = {"init", "data", "model", "task", "train", "eval"}
DATA_KEYS = {"dir", "build_corpus", "corpus", "tokenizer", "tokenizer_vocab", "train", "eval_sets", "pipeline",
             "eval_pipeline"}
TASK_KEYS = {"loss", "spec_augment", "lora", "prompt"}
PROMPT_KEYS = {"task", "chat", "system"}


@dataclasses.dataclass(frozen=True)
class EvalConfig:
    """Decoding of the evaluation sets: ``method`` greedy | beam; ``ctc_weight`` > 0 adds the CTC
    head's prefix scores to the LLM's at every step (joint CTC/attention decoding), and each row
    offers the search its ``ctc_candidates`` best joint tokens;
    ``ctc_blank_penalty`` is subtracted from the CTC head's blank logit in that rescoring;
    ``length_penalty``: beam search ranks finished hypotheses by score / length**length_penalty;
    ``lexicon`` (a word-list file, or a data set whose transcripts give the words; ``recipes/word_list.py``)
    limits the output to those words; ``max_examples`` per set (None = all); ``during_training``
    decodes ``during_training_examples`` of the first set every ``train.eval_every``."""

    method: str = "greedy"
    num_beams: int = 4
    ctc_weight: float = 0.0
    ctc_candidates: int = 8
    ctc_blank_penalty: float = 0.0
    length_penalty: float = 1.0
    lexicon: str | None = None
    max_new_tokens: int = 96
    max_examples: int | None = None
    during_training_examples: int = 100


@dataclasses.dataclass
class Components:
    """Everything a run needs, built once from the config."""

    config: Any
    data_dir: str
    tokenizer: Tokenizer
    tokenizer_path: str
    model: SpeechLLMConfig
    task: SpeechLLMTask
    train: TrainConfig
    eval: EvalConfig
    pipeline: PipelineConfig
    eval_pipeline: PipelineConfig
    prompt: Mapping[str, Any]
    init: Mapping[str, Any]  # the config's init section ({} when it has none)
    lexicons: dict[str, TokenAutomaton] = dataclasses.field(default_factory=dict, repr=False)  # built ones, by source

    def manifest(self, name: str) -> str:
        """The manifest of data set ``name`` (see ``manifest_file``)."""
        return manifest_file(self.data_dir, name)

    def lexicon_words(self) -> list[str] | None:
        """The words of ``eval.lexicon`` (None without one)."""
        return None if self.eval.lexicon is None else read_words(self.eval.lexicon, self.manifest)

    def lexicon(self) -> TokenAutomaton | None:
        """The token automaton of ``eval.lexicon`` (None without one), built once per source."""
        source = self.eval.lexicon
        if source is not None and source not in self.lexicons:
            width = self.model.llm.padded_vocab_size  # the logits' width
            self.lexicons[source] = lexicon_automaton(self.lexicon_words(), self.tokenizer, width)
        return None if source is None else self.lexicons[source]

    def example_tokens(self, inference: bool = False) -> SpeechLLMTokens:
        steps = () if self.model.fusion == "cross_attention" else self.model.inline_steps
        return SpeechLLMTokens(self.tokenizer_path, steps, task=self.prompt.get("task", "asr"),
                              chat=bool(self.prompt.get("chat", False)), system=self.prompt.get("system"),
                              inference=inference)

    def train_pipeline(self, process_index: int | None = None, process_count: int | None = None) -> DataPipeline:
        source = ManifestSource([self.manifest(n) for n in set_names(self.config.data.train)])
        return DataPipeline(source, self.pipeline, tokenize=self.example_tokens(), process_index=process_index,
                            process_count=process_count)


def set_names(value) -> tuple[str, ...]:
    """A config's data set names (``data.train``, ``data.eval_sets``: one name or several) as a tuple."""
    return (value,) if isinstance(value, str) else tuple(value)


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
    return name if os.path.isfile(name) else os.path.join(data_dir, f"{name}.jsonl")


def ensure_data(data: Mapping[str, Any], progress: bool = True) -> tuple[str, str]:
    """(data dir, tokenizer path): builds the embedded corpus / tokenizer if configured and missing."""
    directory = data["dir"]
    tokenizer = data.get("tokenizer") or os.path.join(directory, "tokenizer.model")
    if data.get("build_corpus"):
        corpus = dataclass_from_dict(CorpusConfig, data.get("corpus") or {}, "data.corpus")
        build_corpus(directory, corpus, tokenizer_vocab=data.get("tokenizer_vocab"), progress=progress)
    if not os.path.exists(tokenizer):
        raise FileNotFoundError(
            f"tokenizer {tokenizer} not found: set data.tokenizer, or data.tokenizer_vocab with data.build_corpus"
        )
    return directory, tokenizer


@dataclasses.dataclass(frozen=True)
class Vocabulary:
    """What the model and the loss take from the tokenizer (``source`` names it in errors)."""

    size: int
    placeholder_id: int
    pad_id: int
    eos_ids: tuple[int, ...]
    source: str

    @classmethod
    def of(cls, tokenizer: Tokenizer) -> "Vocabulary":
        placeholder = tokenizer.token_to_id(AUDIO_PLACEHOLDER)
        if placeholder is None:
            raise ValueError(f"tokenizer {tokenizer.source} has no {AUDIO_PLACEHOLDER} token")
        return cls(tokenizer.vocab_size, placeholder, tokenizer.pad_id or 0, tuple(tokenizer.eos_ids), str(tokenizer.source))


def model_config(model: Mapping[str, Any], vocab: Vocabulary) -> SpeechLLMConfig:
    """SpeechLLMConfig with the placeholder and CTC head sized from the tokenizer's ``vocab``, and
    the LLM's vocabulary too unless ``model.llm.vocab_size`` (a checkpoint's padded embedding) is larger."""
    model = dict(plain(model))
    use_ctc = bool(model.pop("ctc", False))
    llm = dict(model.get("llm") or {})
    llm["vocab_size"] = max(vocab.size, llm.get("vocab_size", 0))
    model.update(llm=llm, placeholder_id=vocab.placeholder_id, ctc_vocab_size=vocab.size if use_ctc else 0,
                 ctc_blank_id=vocab.pad_id)
    model.setdefault("connector", {})
    model["connector"] = {**model["connector"], "output_size": llm.get("hidden_size", 512)}
    return dataclass_from_dict(SpeechLLMConfig, model, "model")


def check_sections(config) -> None:
    """Raises naming any unknown key of the config's top level, ``data``, ``task`` or ``task.prompt``."""
    check_keys(config, SECTIONS, "config")
    check_keys(plain(config.data), DATA_KEYS, "config.data")
    task_cfg = plain(config.task)
    check_keys(task_cfg, TASK_KEYS, "config.task")
    check_keys(dict(task_cfg.get("prompt") or {}), PROMPT_KEYS, "config.task.prompt")


def model_parts(config, vocab: Vocabulary, shapes: pretrained.InitShapes | None, local_devices: int) -> dict[str, Any]:
    """The parts of a run that follow from the config and the tokenizer's ``vocab`` alone (no data):
    ``model``, ``task``, ``train``, ``eval``, ``pipeline`` and ``eval_pipeline``; ``shapes`` are the
    encoder and LLM shapes of ``config.init`` (None without an init section); host batches are
    rounded to multiples of ``local_devices``."""
    data, task_cfg = plain(config.data), plain(config.task)
    model = model_config(config.model if shapes is None else pretrained.model_section(config.model, shapes, vocab),
                         vocab)
    loss = dataclass_from_dict(SpeechLossConfig, task_cfg.get("loss") or {}, "task.loss")
    loss = dataclasses.replace(loss, eos_ids=vocab.eos_ids)
    augment = task_cfg.get("spec_augment")
    augment = None if augment is None else dataclass_from_dict(SpecAugmentConfig, augment, "task.spec_augment")
    lora_cfg = task_cfg.get("lora")
    lora_cfg = None if lora_cfg is None else dataclass_from_dict(LoraConfig, lora_cfg, "task.lora")
    pipeline_values = {**(data.get("pipeline") or {}), "n_mels": model.encoder.n_mels, "pad_token_id": vocab.pad_id}
    # Host batches must split evenly over the local devices of the data-parallel mesh axes.
    pipeline_values.setdefault("batch_size_multiple", local_devices)
    pipeline = dataclass_from_dict(PipelineConfig, pipeline_values, "data.pipeline")
    if pipeline.bucket_frames[-1] > model.max_audio_frames:
        raise ValueError(f"data.pipeline.bucket_frames reach {pipeline.bucket_frames[-1]} frames but "
                         f"model.max_audio_frames is {model.max_audio_frames}: raise it or drop the bucket")
    eval_values = {**pipeline_values, "shuffle": False, "num_epochs": 1, "drop_remainder": False, "batch_size_multiple": 1,
                   **(data.get("eval_pipeline") or {})}
    return dict(
        model=model,
        task=SpeechLLMTask(model, loss, augment, lora_cfg),
        train=train_config_from_dict(config.train),
        eval=dataclass_from_dict(EvalConfig, config.get("eval") or {}, "eval"),
        pipeline=pipeline,
        eval_pipeline=dataclass_from_dict(PipelineConfig, eval_values, "data.eval_pipeline"),
    )


def build(config, progress: bool = True) -> Components:
    """All components of a run (builds the corpus first when the config asks for it)."""
    check_sections(config)
    data = plain(config.data)
    prompt = dict(plain(config.task).get("prompt") or {})
    init = plain(config.get("init") or {})
    shapes = pretrained.init_shapes(init) if "init" in config else None  # before any data is built

    data_dir, tokenizer_path = ensure_data({**data, "tokenizer": data.get("tokenizer") or init.get("llm_dir")}, progress)
    tokenizer = load_speech_tokenizer(tokenizer_path)
    if prompt.get("chat") is None:
        prompt["chat"] = tokenizer.chat_template is not None
    parts = model_parts(config, Vocabulary.of(tokenizer), shapes, jax.local_device_count())
    return Components(config=config, data_dir=data_dir, tokenizer=tokenizer, tokenizer_path=tokenizer_path,
                      prompt=prompt, init=init, **parts)
