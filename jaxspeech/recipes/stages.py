"""Staged runs: ``config.stages``, runs that ``jaxspeech train`` trains one after the other.

    c.stages = (
        dict(name="ctc", task=dict(kind="ctc_encoder"), train=dict(time_budget_s=300)),
        dict(name="text", task=dict(kind="text_lm"), train=dict(time_budget_s=120)),
        dict(name="connector", init=dict(from_run=dict(encoder="ctc", ctc_head="ctc", llm="text")),
             train=dict(optimizer=dict(lr_rules=((r"encoder/.*", None), (r"llm/.*", None))))),
        dict(name="finetune", init=dict(from_run="connector")),
    )

A stage is ``name`` plus any of the config's sections (``init``, ``data``, ``model``, ``task``,
``train``, ``eval``), merged key by key over the config's own sections, which every stage shares:
a nested mapping is merged, any other value (a number, a tuple of ``lr_rules``, ``init.from_run``)
replaced. A ``task`` naming another ``kind`` than the config's replaces it whole. In
``init.from_run`` (``recipes/from_run.py``) the name of an earlier stage stands for that stage's
folder, so a stage starts from the final parameters of the stages before it.

Every stage's config is checked before the first one trains. Stage ``NAME`` runs in
``<workdir>/NAME`` as a run of its own (config, checkpoints, metrics, report.md); once trained
and evaluated it writes ``stage.json`` there and is skipped when the job is started again. A job
killed inside a stage resumes that stage from its newest checkpoint, inside the stage's own time
budget (the trainer counts the seconds over every start). ``<workdir>/report.md`` has a section
per stage: steps, training time, its scores (CTC WER, text perplexity, Speech-LLM WER).
"""

from __future__ import annotations

import json
import os
from typing import Any, Callable, Mapping

import ml_collections

from jaxspeech import paths
from jaxspeech.config_dict import check_keys, plain
from jaxspeech.errors import ConfigError, UsageError
from jaxspeech.recipes.build import read_sections
from jaxspeech.recipes.config import SECTIONS
from jaxspeech.tasks.kinds import kind_name

STAGE_JSON = "stage.json"  # written into a stage's folder once it is trained and evaluated


def _merged(base: Mapping[str, Any], changes: Mapping[str, Any], replace: tuple[str, ...] = ()) -> dict[str, Any]:
    """``base`` with ``changes`` merged in: mappings key by key (except the keys in ``replace``), other values replaced."""
    merged = dict(base)
    for key, value in changes.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping) and key not in replace:
            merged[key] = _merged(merged[key], value)
        else:
            merged[key] = value
    return merged


def _stage_names(stages: tuple[Mapping[str, Any], ...]) -> list[str]:
    """The stages' names, checked: each stage a mapping with a unique folder-safe ``name``."""
    names = []
    for i, stage in enumerate(stages):
        if not isinstance(stage, Mapping):
            raise ConfigError(f"stages[{i}]", f"expected a mapping of config sections with a name, got {stage!r}")
        check_keys(stage, {"name", *SECTIONS}, f"stages[{i}]")
        name = stage.get("name")
        if not isinstance(name, str) or not name or set(name) & set("/:\\") or name.startswith("."):
            raise ConfigError(f"stages[{i}].name", f"expected a folder name (no '/', ':' or leading '.'), got {name!r}")
        if name in names:
            raise ConfigError(f"stages[{i}].name", f"{name!r} is used twice")
        names.append(name)
    return names


def _stage_folder(workdir: str, name: str) -> str:
    return os.path.normpath(os.path.join(workdir, name)) if paths.is_local(workdir) else paths.join(workdir, name)


def _resolve_from_run(value: Any, earlier: list[str], names: list[str], workdir: str, where: str) -> Any:
    """``init.from_run`` with the names of earlier stages replaced by their folders."""

    def folder(spec: str) -> str:
        run, colon, subtree = spec.partition(":")
        if run in names and run not in earlier:
            raise ConfigError(
                f"{where}.init.from_run",
                f"names stage {run!r}, which does not come before it (earlier stages: {earlier})",
            )
        return (_stage_folder(workdir, run) if run in earlier else run) + colon + subtree

    if isinstance(value, str):
        return folder(value)
    if isinstance(value, Mapping):
        return {target: folder(spec) if isinstance(spec, str) else spec for target, spec in value.items()}
    return value  # parse_from_run names what is wrong with it


def stage_configs(config: Mapping[str, Any], workdir: str) -> list[tuple[str, ml_collections.ConfigDict]]:
    """(name, the stage's whole config) for every stage of ``config`` in order, every section checked."""
    config = plain(config)
    stages = config["stages"]
    if not isinstance(stages, tuple):
        raise ConfigError("stages", f"expected a list of stages, got {type(stages).__name__}")
    check_keys(config, {"stages", *SECTIONS}, "config")
    names = _stage_names(stages)
    base = {k: v for k, v in config.items() if k != "stages"}
    configs = []
    for i, stage in enumerate(stages):
        where = f"stages[{i}] ({stage['name']})"
        own = {k: v for k, v in stage.items() if k != "name"}
        whole = dict(base)
        for section, values in own.items():
            if not isinstance(values, Mapping):
                raise ConfigError(f"{where}.{section}", f"expected a mapping, got {values!r}")
            if section == "task" and kind_name({"task": values}) != kind_name(whole):
                whole["task"] = values
            else:
                whole[section] = _merged(whole.get(section) or {}, values, replace=("from_run",))
        init = whole.get("init") or {}
        if init.get("from_run") is not None:
            whole["init"] = {**init, "from_run": _resolve_from_run(init["from_run"], names[:i], names, workdir, where)}
        try:
            read_sections(whole)
        except UsageError as e:
            raise type(e)(f"{where} {e.where}", e.what) from e
        configs.append((stage["name"], ml_collections.ConfigDict(whole)))
    return configs


def _what_counts(config: Mapping[str, Any]) -> dict[str, Any]:
    """``config`` as JSON reads it back, without what does not change the results (progress bars)."""
    config = json.loads(json.dumps(plain(config)))
    config.get("train", {}).pop("progress_bar", None)
    return config


def _finished(folder: str, config: ml_collections.ConfigDict) -> dict[str, Any] | None:
    """The summary a finished stage left in ``folder``; None when it has not finished. Refuses a
    stage that finished with another config (its results would not be this config's)."""
    path = paths.join(folder, STAGE_JSON)
    if not paths.exists(path):
        return None
    summary = json.loads(paths.read_text(path))
    now, then = _what_counts(config), _what_counts(summary["config"])
    if then != now:
        changed = sorted(k for k in set(now) | set(then) if now.get(k) != then.get(k))
        raise UsageError(
            path,
            f"this stage finished with another config (sections {changed} differ); train into a "
            f"new workdir, or delete {folder} to train the stage again",
        )
    return summary


def _scores(scores: Mapping[str, float]) -> str:
    return ", ".join(f"{k} {v:.3f}" if k.endswith(" PPL") else f"{k} {100 * v:.2f} %" for k, v in scores.items())


def write_stages_report(workdir: str, summaries: list[dict[str, Any]]) -> str:
    """``<workdir>/report.md``: a table of the stages, then a section per stage; returns its path."""
    lines = [
        f"# jaxspeech staged run: {paths.base_name(workdir)}",
        "",
        "## Stages",
        "",
        "| stage | task | steps | stopped | training s | total s | scores |",
        "|---|---|---:|---|---:|---:|---|",
    ]
    for s in summaries:
        lines.append(
            f"| {s['name']} | {s['kind']} | {s['step']} | {s['stop_reason']} | {s['trained_seconds']:.1f} | "
            f"{s['timings']['total']:.1f} | {_scores(s['scores'])} |"
        )
    for s in summaries:
        lines += [
            "",
            f"## Stage {s['name']} ({s['kind']})",
            "",
            f"Initialised from {s['initialised_from']}.",
            "",
            f"{s['step']} steps, stopped by {s['stop_reason']}, {s['trained_seconds']:.1f} s of training "
            f"(compilation excluded, every start of the stage counted).",
            "",
            "| score | value |",
            "|---|---:|",
        ]
        lines += [
            f"| {k} | {v:.3f} |" if k.endswith(" PPL") else f"| {k} | {100 * v:.2f} % |" for k, v in s["scores"].items()
        ]
        lines += ["", f"Its report: [{s['name']}/report.md]({s['name']}/report.md)"]
    path = paths.join(workdir, "report.md")
    paths.write_whole(path, "\n".join(lines) + "\n")
    return path


def train_stages(
    config: Mapping[str, Any], workdir: str, train_one: Callable[..., dict[str, Any]], *, progress: bool = True
) -> dict[str, Any]:
    """Trains and evaluates every stage in order (see the module docstring) with ``train_one(config,
    folder, progress=...)`` (``run.train_and_evaluate``, which calls this for a staged config); returns
    the last stage's summary with ``"stages"`` (every stage's) and ``"report"`` the job's."""
    configs = stage_configs(config, workdir)
    paths.make_dirs(workdir)
    summaries = []
    for name, stage_config in configs:
        folder = paths.join(workdir, name)
        summary = _finished(folder, stage_config)
        if summary is None:
            summary = {
                "name": name,
                "kind": kind_name(stage_config),
                "config": plain(stage_config),
                **train_one(stage_config, folder, progress=progress),
            }
            paths.write_whole(paths.join(folder, STAGE_JSON), json.dumps(summary, indent=2))
        summaries.append(summary)
    report = write_stages_report(workdir, summaries)
    return {**summaries[-1], "stages": summaries, "report": report}
