"""The text-LM task kind (``task.kind = "text_lm"``): the Speech LLM's LLM trained on text alone, e.g.
as a stage before the LLM meets audio.

Config sections are the Speech LLM's (``tasks/speech_llm_kind.py``): ``init`` and ``model`` as
there (only ``model.llm`` runs; the tokenizer, with its audio placeholder, is the Speech LLM's, so
the embedding has the same rows); ``task`` (``TextLMTaskConfig``) says what text to read and how
to batch it. The parameters are exactly the Speech LLM's ``llm/``.

Training text: the train-split sentences of the embedded corpus's grammar (``sentences``, drawn
on the fly with ``data.corpus``'s seed and sentence lengths: endless and never a dev or test
sentence) and/or the ``text`` of JSONL manifests (``manifests``, named as ``data.train``), taken in
turn, packed into ``rows`` x ``length`` token batches (``data/text_batches.py``). Each text is
the tokenizer's prefix for plain text + the text + the end token, as a Speech-LLM target ends.
Evaluation: perplexity on held-out text (``eval_sentences`` dev sentences of the grammar, or the
texts of ``eval_manifest``), reported as ``<set> PPL``; nothing is decoded.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping

from jaxspeech.config_dict import dataclass_from_dict
from jaxspeech.corpus.sentences import SentenceStream
from jaxspeech.corpus.utterances import CorpusConfig
from jaxspeech.data.pipeline_config import PipelineConfig
from jaxspeech.data.text_batches import Interleaved, ManifestTexts, ShuffledPasses, Strided, TextPipeline
from jaxspeech.decoding.generate import GenerationConfig
from jaxspeech.decoding.lexicon import TokenAutomaton
from jaxspeech.evals.metrics import PerplexityResult
from jaxspeech.tasks.ctc_encoder_kind import speech_llm_sections
from jaxspeech.tasks.speech_llm_init import PretrainedSpeechLLM
from jaxspeech.tasks.speech_llm_kind import SpeechLLMKind
from jaxspeech.tasks.text_lm import TextLMTask, TextLossConfig, perplexity
from jaxspeech.train.config import TrainConfig
from jaxspeech.types import TextBatch

HELD_OUT_SPLIT = "dev"


@dataclasses.dataclass(frozen=True)
class TextLMTaskConfig:
    """The ``task`` section of a text-LM config (see the module docstring)."""

    kind: str = "text_lm"
    loss: TextLossConfig = TextLossConfig()
    sentences: bool = True
    manifests: tuple[str, ...] = ()
    rows: int = 32
    length: int = 128
    eval_sentences: int = 300
    eval_manifest: str | None = None

    def __post_init__(self):
        object.__setattr__(
            self, "manifests", (self.manifests,) if isinstance(self.manifests, str) else tuple(self.manifests)
        )
        if not (self.sentences or self.manifests):
            raise ValueError("task: a text LM needs text: set task.sentences=True and/or task.manifests")
        if self.rows < 1 or self.length < 2 or self.eval_sentences < 1:
            raise ValueError(
                f"task: rows ({self.rows}), length ({self.length}) and eval_sentences "
                f"({self.eval_sentences}) must be >= 1, >= 2 and >= 1"
            )


class TextLMKind:
    """``TaskKind`` of text-only LM training (see the module docstring). It owns its data: the recipe
    calls ``train_pipeline`` / ``example_batch`` / ``held_out_scores`` instead of reading audio."""

    def __init__(self, config: Mapping[str, Any], need_weights: bool = True):
        self.task_config = dataclass_from_dict(TextLMTaskConfig, config.get("task") or {}, "task")
        self.speech = SpeechLLMKind(speech_llm_sections(config), need_weights)
        self.corpus = dataclass_from_dict(CorpusConfig, (config.get("data") or {}).get("corpus") or {}, "data.corpus")
        self.init_source = self.speech.init_source

    def tokenizer_path(self, data_dir: str, tokenizer: str | None, build: bool) -> str:
        return self.speech.tokenizer_path(data_dir, tokenizer, build)

    def setup(self, tokenizer_path: str) -> None:
        speech = self.speech
        speech.setup(tokenizer_path)
        self.tokenizer_file, self.tokenizer, self.model = speech.tokenizer_file, speech.tokenizer, speech.model
        self.task = TextLMTask(self.model.llm, self.task_config.loss)

    @property
    def vocab_size(self) -> int:
        return self.speech.vocab_size

    def encode(self, text: str) -> list[int]:
        """The ids of one training text: the plain-text prefix, the text, the first end token."""
        return [*self.tokenizer.text_prefix, *self.tokenizer.encode(text), self.tokenizer.eos_ids[0]]

    def _pipeline(self, texts, limit: int | None = None, row_multiple: int = 1) -> TextPipeline:
        cfg = self.task_config
        rows = -(-cfg.rows // row_multiple) * row_multiple
        return TextPipeline(texts, self.encode, rows=rows, length=cfg.length, limit=limit)

    def _sentences(self, split: str) -> SentenceStream:
        return SentenceStream(self.corpus.seed, split, self.corpus.min_words, self.corpus.max_words)

    def train_pipeline(
        self, manifest: Callable[[str], str], row_multiple: int = 1, process_index: int = 0, process_count: int = 1
    ) -> TextPipeline:
        """This host's training batches (``task.rows`` rounded up to a multiple of ``row_multiple``);
        ``manifest(name)`` is the path of data set ``name``."""
        streams = [self._sentences("train")] if self.task_config.sentences else []
        if self.task_config.manifests:
            texts = ManifestTexts([manifest(name) for name in self.task_config.manifests])
            streams.append(ShuffledPasses(texts, self.corpus.seed))
        stream = streams[0] if len(streams) == 1 else Interleaved(*streams)
        if process_count > 1:
            stream = Strided(stream, process_index, process_count)
        return self._pipeline(stream, row_multiple=row_multiple)

    def example_batch(self) -> TextBatch:
        cfg = self.task_config
        return TextBatch.padding(cfg.rows, cfg.length)

    def held_out_scores(self, params: Mapping[str, Any], manifest: Callable[[str], str]) -> dict[str, PerplexityResult]:
        """``{"<set> PPL": perplexity}`` on the held-out text; ``params`` without the "params" level."""
        cfg = self.task_config
        if cfg.eval_manifest is not None:
            name, texts = cfg.eval_manifest, ManifestTexts([manifest(cfg.eval_manifest)]).texts
        else:
            sentences = self._sentences(HELD_OUT_SPLIT)
            name, texts = f"{HELD_OUT_SPLIT} sentences", [sentences[n] for n in range(cfg.eval_sentences)]
        return {f"{name} PPL": perplexity(self.task, params, self._pipeline(texts, limit=len(texts)))}

    def train_config(self, train: TrainConfig) -> TrainConfig:
        return train

    def check_train_source(self, source) -> None:
        del source  # never called: the kind reads its own texts

    def pipeline_values(self, values: dict[str, Any]) -> dict[str, Any]:
        return self.speech.pipeline_values(values)

    def check_pipeline(self, pipeline: PipelineConfig, where: str) -> None:
        del pipeline, where  # no audio is read

    def example_tokens(self, inference: bool = False):
        raise ValueError("a text LM reads no audio: it has no audio-pipeline tokenizer (see train_pipeline)")

    def decoder(self, generation: GenerationConfig, lexicon: TokenAutomaton | None):
        raise ValueError("a text LM is evaluated by its perplexity on held-out text, not by decoding audio")

    def pretrained(self) -> PretrainedSpeechLLM | None:
        pretrained = self.speech.pretrained()
        return None if pretrained is None else dataclasses.replace(pretrained, parts=("llm",))

    def after_training(self, params: Mapping[str, Any], workdir: str) -> list[str]:
        return []

    def notes(self) -> list[str]:
        cfg = self.task_config
        sources = (["the corpus grammar's train sentences"] if cfg.sentences else []) + list(cfg.manifests)
        return [f"Trained on text alone ({' and '.join(sources)}), {cfg.rows} x {cfg.length} tokens a batch."]
