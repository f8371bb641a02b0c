"""The run a plan compiles, built from the experiment config alone: no data, weights or download.

The recipe builds the same model, task, trainer settings and pipelines (``recipes.build``: the task
kind's ``setup_model`` and ``pipelines``) once it has read the tokenizer; a plan needs only
the tokenizer's size, which comes from (first that applies) the tokenizer file the run would read
when it exists, the LLM preset's tokenizer plus the audio placeholder, or ``data.tokenizer_vocab``
(the size of the tokenizer the run would train).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from jaxspeech import paths
from jaxspeech.config_dict import plain
from jaxspeech.convert import presets
from jaxspeech.data.pipeline_config import PipelineConfig
from jaxspeech.recipes.build import pipelines, read_sections
from jaxspeech.recipes.config import EvalConfig
from jaxspeech.tasks.kinds import kind_name
from jaxspeech.tasks.speech_llm_kind import Vocabulary
from jaxspeech.tasks.speech_llm import SpeechLLMTask
from jaxspeech.tasks.whisper_seq2seq import WhisperTask
from jaxspeech.train.config import TrainConfig
from jaxspeech.train.task import Task

SPEECH_LLM, WHISPER = "speech_llm", "whisper"


@dataclasses.dataclass(frozen=True)
class PlannedRun:
    """The parts of a run that decide its memory and compute, and where the vocabulary came from."""

    recipe: str  # SPEECH_LLM | WHISPER
    model: Any  # SpeechLLMConfig | WhisperConfig
    task: Task
    train: TrainConfig
    eval: EvalConfig
    pipeline: PipelineConfig
    eval_pipeline: PipelineConfig
    vocabulary: str  # how the vocabulary size was found, for the plan's notes

    def with_model(self, model) -> "PlannedRun":
        """This run with another model config (same loss, augmentation, adapters)."""
        task = self.task
        if self.recipe == WHISPER:
            task = WhisperTask(model, task.loss_config, task.spec_augment, task.full_window, task.encoder_trained)
        else:
            task = SpeechLLMTask(model, task.loss_config, task.spec_augment, task.lora)
        return dataclasses.replace(self, model=model, task=task)

    @property
    def layer_stacks(self) -> dict[str, int]:
        """Layers of each stack: {"encoder": E, "decoder": L} (the decoder is the LLM or Whisper's)."""
        if self.recipe == WHISPER:
            return {"encoder": self.model.encoder.num_layers, "decoder": self.model.decoder.num_layers}
        encoder = self.model.encoder
        stack = encoder.whisper if encoder.kind == "whisper" else encoder.conformer
        return {"encoder": stack.num_layers, "decoder": self.model.llm.num_layers}

    @property
    def attention_heads(self) -> tuple[int, ...]:
        """Query and key/value head counts of every attention in the model (a tensor-parallel axis
        splits heads, so its size must divide them all)."""
        model = self.model
        if self.recipe == WHISPER:
            return model.encoder.num_heads, model.decoder.num_heads
        encoder = getattr(model.encoder, model.encoder.kind)
        heads = [encoder.num_heads, model.llm.num_heads, model.llm.num_kv_heads]
        if model.xattn is not None:
            heads += [model.xattn.num_heads, model.xattn.num_kv_heads]
        if model.connector.kind == "qformer":
            heads.append(model.connector.num_heads)
        return tuple(heads)

    @property
    def decoder_period(self) -> int:
        """Decoder layers that repeat as a unit (``every`` with cross-attention blocks, else 1)."""
        xattn = getattr(self.model, "xattn", None)
        return 1 if self.recipe == WHISPER or xattn is None else xattn.every

    def with_layers(self, encoder: int, decoder: int) -> "PlannedRun":
        """This run with ``encoder`` and ``decoder`` layers (cross-attention follows the LLM)."""
        model = self.model
        if self.recipe == WHISPER:
            return self.with_model(
                dataclasses.replace(
                    model,
                    encoder=model.encoder.replace(num_layers=encoder),
                    decoder=dataclasses.replace(model.decoder, num_layers=decoder),
                )
            )
        kind = model.encoder.kind
        stack = getattr(model.encoder, kind)
        changes = dict(
            encoder=dataclasses.replace(model.encoder, **{kind: dataclasses.replace(stack, num_layers=encoder)}),
            llm=model.llm.replace(num_layers=decoder),
        )
        if model.xattn is not None:
            changes["xattn"] = dataclasses.replace(model.xattn, num_layers=decoder)
        return self.with_model(model.replace(**changes))

    def with_remat(self, policy: str) -> "PlannedRun":
        """This run with every layer stack rematerialised by ``policy`` (``layers.remat.POLICIES``)."""
        model = self.model
        if self.recipe == WHISPER:
            return self.with_model(model.with_options(remat_policy=policy))
        kind = model.encoder.kind
        stack = getattr(model.encoder, kind)
        return self.with_model(
            model.replace(
                encoder=dataclasses.replace(model.encoder, **{kind: dataclasses.replace(stack, remat_policy=policy)}),
                llm=model.llm.replace(remat_policy=policy),
            )
        )


def _tokenizer_file(path: str | None) -> str | None:
    """``path`` if it names a tokenizer that exists (a file, or a directory with tokenizer.json)."""
    if not path:
        return None
    if paths.is_file(path) or paths.is_file(paths.join(path, "tokenizer.json")):
        return path
    return None


def speech_vocabulary(config, kind, data) -> tuple[Vocabulary, str]:
    """(the vocabulary the Speech-LLM run of ``config`` would have, how it was found), ``kind`` and
    ``data`` its task kind and data section (``read_sections``)."""
    from jaxspeech.data.speech_llm_tokens import load_speech_tokenizer

    init = plain(config.get("init") or {})
    path = _tokenizer_file(kind.tokenizer_path(data.dir, data.tokenizer, build=False))
    if path is not None:
        return Vocabulary.of(load_speech_tokenizer(path)), f"the tokenizer {path}"
    if init.get("llm"):
        size = presets.TOKENIZER_TOKENS[init["llm"]]
        # load_speech_tokenizer appends the audio placeholder to an LLM's own tokenizer.
        return (
            Vocabulary(size + 1, size, 0, (), f"preset {init['llm']}"),
            f"preset {init['llm']}'s tokenizer ({size} tokens) + the audio placeholder",
        )
    if data.tokenizer_vocab:
        size = int(data.tokenizer_vocab)
        return Vocabulary(size, size - 1, 0, (), "data.tokenizer_vocab"), f"data.tokenizer_vocab ({size})"
    raise ValueError(
        "cannot tell the vocabulary size without a tokenizer: set data.tokenizer to an existing one, "
        "init.llm to a preset, or data.tokenizer_vocab"
    )


def planned_run(config, local_devices: int) -> PlannedRun:
    """The ``PlannedRun`` of ``config`` (a ConfigDict from ``configs/*.py``) whose host batches are
    multiples of ``local_devices``."""
    whisper = kind_name(config) == "whisper_seq2seq"
    kind, data, train, evaluation = read_sections(config, need_weights=False)
    if whisper:
        model = kind.planned_model()
        if model is None:
            raise ValueError(
                "a Whisper plan needs the architecture: set init.whisper to a preset "
                f"({', '.join(presets.WHISPER)}) or init.whisper_dir"
            )
        kind.setup_model(model, 0)  # the padding id changes no shape
        source = f"{kind.init.whisper_dir}/config.json" if kind.init.whisper_dir else f"preset {kind.init.whisper}"
        vocabulary = f"{source} ({model.decoder.vocab_size} tokens)"
    else:
        vocab, vocabulary = speech_vocabulary(config, kind, data)
        kind.setup_model(vocab)
    pipeline, eval_pipeline = pipelines(kind, data, local_devices)
    return PlannedRun(
        WHISPER if whisper else SPEECH_LLM,
        kind.model,
        kind.task,
        train,
        evaluation,
        pipeline,
        eval_pipeline,
        vocabulary,
    )
