"""The Whisper fine-tuning recipe: data -> train -> evaluate -> report, for ``config.recipe == "whisper"``.

Config sections (``configs/whisper_finetune.py``):
  * ``init``:  ``whisper_dir`` (an HF Whisper directory: config.json, safetensors, generation_config.json,
    tokenizer.json) to fine-tune, with ``whisper`` naming its preset (``jaxspeech.convert.presets``:
    enough for ``jaxspeech plan``; the directory must match it), or ``random`` (``WhisperConfig`` shape fields ``{"encoder": {...},
    "decoder": {...}}``; the vocabulary comes from the tokenizer) to train from scratch;
  * ``data``:  ``dir``, ``build_corpus``, ``corpus`` (as the Speech-LLM recipe), ``tokenizer`` (a
    tokenizer directory; default ``init.whisper_dir``), ``build_tokenizer`` (write a byte-level
    Whisper-style tokenizer there when missing), ``train`` / ``eval_sets``, ``pipeline`` /
    ``eval_pipeline`` (``PipelineConfig`` fields), ``pad_to_30s`` (one bucket of the encoder's full
    window, every frame attended: the pre-training view, see ``jaxspeech.tasks.whisper_seq2seq``);
  * ``model``: options on both halves: ``dtype``, ``param_dtype``, ``scan_layers``, ``remat_policy``, ``attn_impl``;
  * ``task``:  ``language`` (None for English-only checkpoints), ``leading_space``, ``loss``
    (``WhisperLossConfig``), ``spec_augment`` (``SpecAugmentConfig`` or None), ``freeze_encoder``
    (prepends ``("encoder/.*", None)`` to ``train.optimizer.lr_rules``);
  * ``train``: ``TrainConfig``; ``eval``: ``EvalConfig`` of the Speech-LLM recipe.

Pretrained weights reach the trainer as its step-0 checkpoint (``jaxspeech.train.warm_start``), so
a restarted run resumes from its newest checkpoint instead. After training the model is exported
as an HF Whisper directory, ``<workdir>/whisper_hf``, before the eval sets are decoded.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import ml_collections
from jax.experimental import multihost_utils
from jax.sharding import Mesh

from jaxspeech.config_dict import check_keys, dataclass_from_dict, plain
from jaxspeech.convert import presets
from jaxspeech.convert.hf_whisper import config_from_hf as whisper_config_from_hf
from jaxspeech.convert.hf_whisper import export_hf_whisper, load_generation_config, load_hf_whisper
from jaxspeech.data.pipeline import DataPipeline
from jaxspeech.data.pipeline_config import PipelineConfig
from jaxspeech.data.sources import ManifestSource
from jaxspeech.data.tokenizers import TOKENIZER_JSON, Tokenizer, load_tokenizer
from jaxspeech.data.whisper_tokens import (
    END_OF_TEXT,
    NO_TIMESTAMPS,
    START_OF_TRANSCRIPT,
    TASKS,
    WhisperTokens,
    language_token,
    task_token,
    write_byte_level_whisper_tokenizer,
)
from jaxspeech.features.specaugment import SpecAugmentConfig
from jaxspeech.models.whisper_seq2seq import WhisperConfig, WhisperGenerationConfig
from jaxspeech.recipes.components import EvalConfig, ensure_data, manifest_file, set_names
from jaxspeech.recipes.report import write_report
from jaxspeech.recipes.workdir import save_config
from jaxspeech.recipes.whisper_eval import eval_during_training, evaluate_sets
from jaxspeech.sharding import multihost
from jaxspeech.sharding.mesh import make_mesh
from jaxspeech.tasks.whisper_seq2seq import WhisperLossConfig, WhisperTask
from jaxspeech.train.config import TrainConfig, train_config_from_dict
from jaxspeech.train.loop import train
from jaxspeech.train.plots import plot_learning_curves
from jaxspeech.train.state import State
from jaxspeech.train.warm_start import write_step0_checkpoint

log = logging.getLogger(__name__)

SECTIONS = {"recipe", "init", "data", "model", "task", "train", "eval"}
INIT_KEYS = {"whisper_dir", "random", "whisper"}
DATA_KEYS = {"dir", "build_corpus", "corpus", "tokenizer", "build_tokenizer", "train", "eval_sets", "pipeline",
             "eval_pipeline", "pad_to_30s"}
MODEL_KEYS = {"dtype", "param_dtype", "scan_layers", "remat_policy", "attn_impl"}
TASK_KEYS = {"language", "leading_space", "loss", "spec_augment", "freeze_encoder"}
FREEZE_ENCODER_RULE = ("encoder/.*", None)
WHISPER_TASK = "transcribe"
EXPORT_SUBDIR = "whisper_hf"
# Files of an HF Whisper directory besides weights and configs, copied into the export when present.
SIDE_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json", "vocab.json",
              "merges.txt", "normalizer.json", "preprocessor_config.json")


@dataclasses.dataclass
class WhisperRun:
    """Everything a Whisper fine-tuning run needs, built once from the config."""

    config: Any
    data_dir: str
    tokenizer: Tokenizer
    tokenizer_path: str
    model: WhisperConfig
    generation: WhisperGenerationConfig
    encoder: WhisperTokens
    task: WhisperTask
    train: TrainConfig
    eval: EvalConfig
    pipeline: PipelineConfig
    eval_pipeline: PipelineConfig
    pretrained: Mapping[str, Any] | None  # {"params": numpy tree} converted from init.whisper_dir
    init_source: str
    train_source: ManifestSource

    def manifest(self, name: str) -> str:
        """A manifest path: ``name`` as given if it is a file, else ``<data dir>/<name>.jsonl``."""
        return manifest_file(self.data_dir, name)

    def eval_set_names(self) -> tuple[str, ...]:
        return set_names(self.config.data.eval_sets)

    def train_pipeline(self) -> DataPipeline:
        return DataPipeline(self.train_source, self.pipeline, tokenize=self.encoder)


def _model_options(model: Mapping[str, Any]) -> dict[str, Any]:
    """Options for both halves of ``WhisperConfig``; dtype names become dtypes."""
    options = dict(model)
    for key in ("dtype", "param_dtype"):
        if key in options:
            options[key] = jnp.dtype(options[key])
    return options


def generation_for_tokenizer(tokenizer: Tokenizer, language: str | None) -> WhisperGenerationConfig:
    """Generation settings of a random-init Whisper whose special tokens are ``tokenizer``'s: the
    prompt of ``WhisperTokens``, every special token but the end suppressed, no empty output."""

    def token_id(token: str, required: bool = True) -> int | None:
        found = tokenizer.token_to_id(token)
        if found is None and required:
            raise ValueError(f"tokenizer {tokenizer.source} has no {token} token: not a Whisper-style tokenizer")
        return found

    end = token_id(END_OF_TEXT)
    languages = {language_token(language): token_id(language_token(language))} if language is not None else {}
    tasks = {task: token_id(task_token(task), required=False) for task in TASKS}
    return WhisperGenerationConfig(
        decoder_start_token_id=token_id(START_OF_TRANSCRIPT),
        eos_token_id=end,
        pad_token_id=end,
        no_timestamps_token_id=token_id(NO_TIMESTAMPS),
        is_multilingual=bool(languages),
        lang_to_id=languages,
        task_to_id={task: i for task, i in tasks.items() if i is not None},
        suppress_tokens=tuple(sorted(tokenizer.special_ids - {end})),
        begin_suppress_tokens=(end,),
    )


def _tokenizer_path(data: Mapping[str, Any], init: Mapping[str, Any], language: str | None) -> str:
    path = data.get("tokenizer") or init.get("whisper_dir")
    if not path:
        raise ValueError("no tokenizer: set data.tokenizer (a directory with tokenizer.json) or init.whisper_dir")
    if data.get("build_tokenizer") and not os.path.isfile(os.path.join(path, TOKENIZER_JSON)):
        write_byte_level_whisper_tokenizer(path, languages=(language or "en",))
        log.info("wrote a byte-level Whisper-style tokenizer to %s", path)
    return path


def preset_model(init: Mapping[str, Any], options: Mapping[str, Any]) -> WhisperConfig | None:
    """The WhisperConfig of the preset ``init.whisper`` names, with ``options`` (None without one)."""
    if not init.get("whisper"):
        return None
    if init.get("random"):
        raise ValueError("set init.whisper (a preset) or init.random (from scratch), not both")
    return whisper_config_from_hf(presets.whisper_hf_config(init["whisper"]), **options)


def _model(init: Mapping[str, Any], options: Mapping[str, Any], tokenizer: Tokenizer, language: str | None):
    """(WhisperConfig, pretrained {"params": ...} or None, generation settings, description)."""
    whisper_dir, random_shapes = init.get("whisper_dir"), init.get("random")
    if whisper_dir and random_shapes:
        raise ValueError("set init.whisper_dir (fine-tune a checkpoint) or init.random (train from scratch), not both")
    planned = preset_model(init, options)
    if whisper_dir:
        config, params = load_hf_whisper(whisper_dir, **options)
        if planned is not None:
            presets.check_matches(init["whisper"], dataclasses.asdict(planned), dataclasses.asdict(config),
                                  f"{whisper_dir}/config.json")
        return config, params, load_generation_config(whisper_dir), f"HF Whisper checkpoint {whisper_dir}"
    if planned is not None:
        raise ValueError(f"config.init names the architecture {init['whisper']} but no weights: pass "
                         "--set init.whisper_dir=<HF Whisper directory> (a preset is enough for jaxspeech plan, "
                         "not for training)")
    if random_shapes:
        shapes = dict(random_shapes)
        shapes["decoder"] = {**(shapes.get("decoder") or {}), "vocab_size": tokenizer.vocab_size}
        config = dataclass_from_dict(WhisperConfig, shapes, "init.random").with_options(**options)
        return config, None, generation_for_tokenizer(tokenizer, language), "random init"
    raise ValueError("set init.whisper_dir=<HF Whisper directory> (or init.random to train a random-init Whisper)")


def _check_prompt(encoder: WhisperTokens, generation: WhisperGenerationConfig) -> None:
    """Training targets and decoding must use the same prompt and end token."""
    prompt = generation.prompt(encoder.language, encoder.task)
    if encoder.prefix_ids != prompt or encoder.end_id != generation.eos_token_id:
        raise ValueError(
            f"tokenizer {encoder.tokenizer_path} gives the prompt {encoder.prefix_ids} and end token {encoder.end_id}, "
            f"the generation config {prompt} and {generation.eos_token_id}: tokenizer and checkpoint do not match"
        )


def _pipelines(data: Mapping[str, Any], model: WhisperConfig, pad_id: int,
               local_devices: int) -> tuple[PipelineConfig, PipelineConfig]:
    """(train, eval) pipeline configs; ``pad_to_30s`` replaces the buckets by the encoder's full window."""
    window = model.encoder.max_frames
    values = {**(data.get("pipeline") or {}), "n_mels": model.encoder.n_mels, "pad_token_id": pad_id}
    # Host batches must split evenly over the local devices of the data-parallel mesh axes.
    values.setdefault("batch_size_multiple", local_devices)
    if data.get("pad_to_30s"):
        max_tokens = values.get("max_tokens", PipelineConfig.max_tokens)
        values.update(bucket_frames=(window,), max_tokens=max_tokens if isinstance(max_tokens, int) else max(max_tokens))
    eval_values = {**values, "shuffle": False, "num_epochs": 1, "drop_remainder": False, "batch_size_multiple": 1,
                   **(data.get("eval_pipeline") or {})}
    if data.get("pad_to_30s"):
        eval_values["bucket_frames"] = (window,)
    pipeline = dataclass_from_dict(PipelineConfig, values, "data.pipeline")
    eval_pipeline = dataclass_from_dict(PipelineConfig, eval_values, "data.eval_pipeline")
    for where, config in (("data.pipeline", pipeline), ("data.eval_pipeline", eval_pipeline)):
        if max(config.bucket_frames) > window:
            raise ValueError(f"{where}.bucket_frames {config.bucket_frames} exceed the encoder's {window}-frame window")
        if any(c != 1 for c in config.clips_per_row):
            raise ValueError(f"{where}.clips_per_row must be 1: Whisper rows hold one clip, got {config.clips_per_row}")
    if max(pipeline.max_tokens) > model.decoder.max_target_positions:
        raise ValueError(f"data.pipeline.max_tokens {pipeline.max_tokens} exceed the decoder's "
                         f"{model.decoder.max_target_positions} positions")
    return pipeline, eval_pipeline


def build(config, progress: bool = True) -> WhisperRun:
    """All parts of a Whisper fine-tuning run (builds the corpus / debug tokenizer when asked)."""
    check_keys(config, SECTIONS, "config")
    init, data, model_section, task_cfg = (plain(config.get(key) or {}) for key in ("init", "data", "model", "task"))
    for values, allowed, where in ((init, INIT_KEYS, "config.init"), (data, DATA_KEYS, "config.data"),
                                   (model_section, MODEL_KEYS, "config.model"), (task_cfg, TASK_KEYS, "config.task")):
        check_keys(values, allowed, where)
    language = task_cfg.get("language", "en")

    tokenizer_path = _tokenizer_path(data, init, language)
    data_dir, _ = ensure_data({"dir": data["dir"], "build_corpus": data.get("build_corpus"), "corpus": data.get("corpus"),
                               "tokenizer": tokenizer_path}, progress)
    tokenizer = load_tokenizer(tokenizer_path)
    model, pretrained, generation, init_source = _model(init, _model_options(model_section), tokenizer, language)
    if tokenizer.vocab_size > model.decoder.vocab_size:
        raise ValueError(f"tokenizer {tokenizer_path} has {tokenizer.vocab_size} tokens, the decoder only "
                         f"{model.decoder.vocab_size} embeddings")
    encoder = WhisperTokens(tokenizer_path, language if generation.is_multilingual else None, WHISPER_TASK,
                                    leading_space=bool(task_cfg.get("leading_space", True)))
    _check_prompt(encoder, generation)
    train_source = ManifestSource([manifest_file(data_dir, name) for name in set_names(data["train"])])
    for index in range(len(train_source)):  # a blank transcript fails here, not at some later step
        encoder.transcript(train_source[index])
    parts = model_parts(config, model, generation.pad_token_id, jax.local_device_count())
    return WhisperRun(
        config=config, data_dir=data_dir, tokenizer=tokenizer, tokenizer_path=tokenizer_path, model=model,
        generation=generation, encoder=encoder, pretrained=pretrained, init_source=init_source,
        train_source=train_source, **parts,
    )


def model_options(config) -> dict[str, Any]:
    """``config.model``'s options for both halves (checked; dtype names become dtypes)."""
    values = plain(config.get("model") or {})
    check_keys(values, MODEL_KEYS, "config.model")
    return _model_options(values)


def model_parts(config, model: WhisperConfig, pad_id: int, local_devices: int) -> dict[str, Any]:
    """The parts of a run that follow from the config and the model's shapes alone (no data):
    ``task``, ``train``, ``eval``, ``pipeline`` and ``eval_pipeline``; host batches are rounded to
    multiples of ``local_devices``."""
    data, task_cfg = plain(config.get("data") or {}), plain(config.get("task") or {})
    pipeline, eval_pipeline = _pipelines(data, model, pad_id, local_devices)
    augment = task_cfg.get("spec_augment")
    task = WhisperTask(
        model,
        dataclass_from_dict(WhisperLossConfig, task_cfg.get("loss") or {}, "task.loss"),
        None if augment is None else dataclass_from_dict(SpecAugmentConfig, augment, "task.spec_augment"),
        full_window=bool(data.get("pad_to_30s")),
        encoder_trained=not task_cfg.get("freeze_encoder"),
    )
    train_config = train_config_from_dict(config.train)
    if task_cfg.get("freeze_encoder"):
        optimizer = train_config.optimizer
        optimizer = dataclasses.replace(optimizer, lr_rules=(FREEZE_ENCODER_RULE, *optimizer.lr_rules))
        train_config = dataclasses.replace(train_config, optimizer=optimizer)
    return dict(task=task, train=train_config, eval=dataclass_from_dict(EvalConfig, config.get("eval") or {}, "eval"),
                pipeline=pipeline, eval_pipeline=eval_pipeline)


def write_pretrained_checkpoint(run: WhisperRun, workdir: str, mesh: Mesh) -> State | None:
    """Saves the initial train state holding the weights of ``init.whisper_dir`` as step 0 of
    ``workdir`` (``jaxspeech.train.warm_start``) and returns it; None when the workdir already has a
    checkpoint to resume from or there are no pretrained weights."""
    if run.pretrained is None:
        return None
    return write_step0_checkpoint(run, workdir, mesh, lambda: run.pretrained["params"], run.init_source)


def export_whisper(run: WhisperRun, params: Mapping[str, Any], out_dir: str) -> str:
    """Writes ``params`` as an HF Whisper directory (safetensors, config.json, generation_config.json
    and the tokenizer's files) that ``jaxspeech transcribe --whisper-dir`` and ``transformers`` load.
    Collective: every process calls it, process 0 writes."""
    host_params = multihost_utils.process_allgather(params, tiled=True)  # tiled: no extra process axis
    if jax.process_index() == 0:
        os.makedirs(out_dir, exist_ok=True)
        side_files = {name: os.path.join(run.tokenizer_path, name) for name in SIDE_FILES
                      if os.path.isfile(os.path.join(run.tokenizer_path, name))}
        export_hf_whisper(run.model, {"params": host_params}, out_dir, run.generation, extra_files=side_files)
    return out_dir


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, *, progress: bool = True) -> dict[str, Any]:
    """Runs the whole job; returns {"scores": {name: rate}, "timings": {...}, "report": path, "step", "stop_reason"}."""
    start = time.monotonic()
    # Joining a multi-process job must precede anything that touches a device (build() counts them).
    multihost.initialize(train_config_from_dict(config.train).distributed)
    save_config(config, workdir)
    run = build(config, progress)
    data_ready = time.monotonic()
    mesh = make_mesh(run.train.mesh)
    write_pretrained_checkpoint(run, workdir, mesh)
    initialised = time.monotonic()
    iterator = run.train_pipeline().iterator()
    eval_fn = eval_during_training(run) if run.train.eval_every else None
    try:
        result = train(run.task, run.train, iterator, workdir, eval_fn=eval_fn, mesh=mesh)
    finally:
        iterator.close()
    trained = time.monotonic()
    exported = export_whisper(run, result.state["params"], os.path.join(workdir, EXPORT_SUBDIR))
    scores = evaluate_sets(run, result.state["params"], workdir, progress=progress)
    evaluated = time.monotonic()
    timings = {
        "data (corpus, tokenizer, checkpoint conversion)": data_ready - start,
        "pretrained weights -> step-0 checkpoint": initialised - data_ready,
        "compile": result.compile_seconds,
        "train (incl. compile, checkpoints)": trained - initialised,
        "export + evaluation": evaluated - trained,
        "total": evaluated - start,
    }
    notes = [f"Initialised from {run.init_source}.", f"Stopped at step {result.step} ({result.stop_reason})."]
    if run.task.full_window:
        notes.append(f"pad_to_30s: every example padded to the encoder's {run.model.encoder.max_frames}-frame window.")
    if FREEZE_ENCODER_RULE in run.train.optimizer.lr_rules:
        notes.append("The encoder was frozen.")
    notes.append(f"The fine-tuned model in Hugging Face format: {exported} "
                 f"(`jaxspeech transcribe --whisper-dir {exported}`).")
    report = write_report(workdir, title=f"jaxspeech Whisper fine-tuning: {os.path.basename(os.path.abspath(workdir))}",
                          config=plain(config), timings=timings, train_metrics=result.last_train_metrics,
                          scores=scores, plots=plot_learning_curves(workdir), notes=notes)
    return {"scores": {k: v.rate for k, v in scores.items()}, "timings": timings, "report": report,
            "step": result.step, "stop_reason": result.stop_reason}
