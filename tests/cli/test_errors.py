"""One error path for every subcommand: each documented error prints one line
``error: <file, key or flag>: <what was expected>`` to stderr and exits 2, without a traceback;
``--debug`` / ``JAXSPEECH_DEBUG=1`` raise it instead, and an unexpected error keeps its traceback.
(Errors that need a trained run: tests/recipes/test_speech_recipe.py.)"""

import json
import os

import pytest

from jaxspeech.cli import main
from jaxspeech.errors import ConfigError, MissingFileError
from jaxspeech.testing.tokenizer_dirs import write_chatml_dir

CONFIG = "configs/tiny_asr.py"
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _error(capsys, argv: list[str]) -> str:
    """Runs the command; asserts exit 2 and one ``error:`` line on stderr; returns that line."""
    status = main(argv)
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert status == 2 and len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err
    return lines[0]


def _flag_error(capsys, argv: list[str]) -> str:
    """Like ``_error`` for a flag argparse refuses (it exits through SystemExit(2))."""
    with pytest.raises(SystemExit) as info:
        main(argv)
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert info.value.code == 2 and len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


# ----------------------------------------------------------------------------- train
def _train(tmp_path, *sets: str) -> list[str]:
    argv = [
        "train",
        "--config",
        os.path.join(REPO, f"{CONFIG}:debug"),
        "--workdir",
        str(tmp_path / "run"),
        "--set",
        f"data.dir={tmp_path / 'corpus'}",
    ]
    for item in sets:
        argv += ["--set", item]
    return argv


def test_train_config_file_not_found(tmp_path, capsys):
    line = _error(capsys, ["train", "--config", str(tmp_path / "nope.py"), "--workdir", str(tmp_path)])
    assert line == f"error: {tmp_path / 'nope.py'}: config file not found"


def test_train_set_without_key_value(tmp_path, capsys):
    assert (
        _error(capsys, _train(tmp_path, "train.total_steps"))
        == "error: --set: expected KEY=VALUE, got 'train.total_steps'"
    )


@pytest.mark.parametrize(
    "item, key, expected",
    [
        ("model.lm.num_layers=2", "model.lm", "unknown config key"),
        ("train.totl_steps=3", "train.totl_steps", "unknown key(s) ['totl_steps'] in train"),
        (
            "train.checkpoint.restore_data_state=no",
            "train.checkpoint.restore_data_state",
            "expected True or False, got 'no'",
        ),
        ("train.time_budget_s=10min", "train.time_budget_s", "expected a finite number >= 0 or None, got '10min'"),
        ("train.grad_accum_steps=two", "train.grad_accum_steps", "expected an integer >= 1, got 'two'"),
        ("train.optimizer.learning_rate=nan", "train.optimizer.learning_rate", "got 'nan'"),
        ("train.checkpoint.every_steps=-5", "train.checkpoint.every_steps", "expected an integer >= 0, got -5"),
        ("model.llm.num_layerz=2", "model.llm.num_layerz", "unknown key(s) ['num_layerz'] in model.llm"),
        ("model.llm.num_heads=-2", "model.llm.num_heads", "got -2"),
        ("data.pipeline.frame_budget=lots", "data.pipeline.frame_budget", "got 'lots'"),
        (
            "eval.generation.method=sampled",
            "eval.generation.method",
            "expected one of 'greedy', 'sample', 'beam', got 'sampled'",
        ),
    ],
    ids=[
        "unknown section",
        "unknown key",
        "bool",
        "float",
        "int",
        "nan",
        "negative",
        "model key",
        "model size",
        "data value",
        "eval value",
    ],
)
def test_train_bad_set_values_are_named_before_any_data_is_built(tmp_path, capsys, item, key, expected):
    line = _error(capsys, _train(tmp_path, item))
    assert line.startswith(f"error: {key}: ") and expected in line, line
    assert not os.path.exists(tmp_path / "corpus") and not os.path.exists(tmp_path / "run")


def _wrong_value(value) -> str:
    """A --set value of another type than ``value``'s (None: a mapping no optional field takes)."""
    if isinstance(value, bool):
        return "no"
    if isinstance(value, (int, float)):
        return "abc"
    if isinstance(value, str):
        return "[1, 2]"
    if isinstance(value, (list, tuple)):
        return "5" if value and isinstance(value[0], str) else "abc"
    return "{1: 2}" if value is None else "abc"


def test_every_key_of_the_config_is_type_checked_before_any_data_is_built(tmp_path, capsys):
    from jaxspeech.config_dict import load_config_file, plain

    def leaves(section, prefix=""):
        for key, value in section.items():
            if isinstance(value, dict) and value:
                yield from leaves(value, f"{prefix}{key}.")
            else:
                yield f"{prefix}{key}", value

    keys = list(leaves(plain(load_config_file(os.path.join(REPO, f"{CONFIG}:debug")))))
    assert len(keys) >= 80
    for key, value in keys:
        line = _error(capsys, _train(tmp_path, f"{key}={_wrong_value(value)}"))
        assert line.startswith(f"error: {key}"), (key, value, line)
    assert not os.path.exists(tmp_path / "corpus") and not os.path.exists(tmp_path / "run")


@pytest.mark.parametrize(
    "config, sets, key, expected",
    [
        (
            f"{CONFIG}:debug",
            ["task.kind=bogus"],
            "task.kind",
            "expected one of ['ctc_encoder', 'speech_llm', 'text_lm'",
        ),
        ("configs/slam_asr.py", [], "init", "names no weights: pass the checkpoints with --set init.whisper_dir="),
        ("configs/slam_asr.py", ["init.whisper_dir=/w"], "init", "a Speech LLM starts from both checkpoints"),
        ("configs/slam_asr.py", ["init.llm=Qwen9"], "init.llm", "unknown LLM preset 'Qwen9'; known: Qwen2-0.5B"),
        ("configs/whisper_finetune.py", [], "init", "set init.whisper_dir=<HF Whisper directory>"),
        (
            "configs/whisper_finetune.py",
            ["init.whisper=whisper-tiny", "init.random={'encoder': {}}"],
            "init",
            "set init.whisper (a preset) or init.random (from scratch), not both",
        ),
    ],
    ids=["task kind", "no weights", "one checkpoint", "unknown preset", "whisper no weights", "preset and random"],
)
def test_train_inconsistent_init_and_task_are_named_before_any_data_is_built(
    tmp_path, capsys, config, sets, key, expected
):
    """Values that are each well typed but do not fit together: one line naming the section."""
    argv = [
        "train",
        "--config",
        os.path.join(REPO, config),
        "--workdir",
        str(tmp_path / "run"),
        "--set",
        f"data.dir={tmp_path / 'corpus'}",
    ]
    for item in sets:
        argv += ["--set", item]
    line = _error(capsys, argv)
    assert line.startswith(f"error: {key}: ") and expected in line, line
    assert not os.path.exists(tmp_path / "corpus") and not os.path.exists(tmp_path / "run")


@pytest.mark.parametrize(
    "argv, flag",
    [
        (["train", "--config", os.path.join(REPO, f"{CONFIG}:debug")], "--workdir"),
        (["sweep", "--config", os.path.join(REPO, f"{CONFIG}:debug"), "--grid", "train.seed=0,1"], "--workdir"),
        (["prepare-data", "tiny"], "--out"),
    ],
    ids=["train", "sweep", "prepare-data"],
)
def test_an_output_folder_that_cannot_be_created_is_refused_before_any_work(tmp_path, capsys, argv, flag):
    (tmp_path / "file").write_text("x")
    for folder, expected in (
        (
            tmp_path / "file" / "run",
            f"cannot create {tmp_path / 'file' / 'run'}: {tmp_path / 'file'} is a file, not a folder",
        ),
        (tmp_path / "file", f"{tmp_path / 'file'} is a file, expected a folder"),
    ):
        assert _flag_error(capsys, [*argv, flag, str(folder)]).startswith(f"error: {flag}: {expected}")
    assert sorted(os.listdir(tmp_path)) == ["file"]


# ----------------------------------------------------------------------------- eval / transcribe / plot
def test_eval_and_transcribe_of_a_folder_that_is_not_a_run(tmp_path, capsys):
    expected = f"error: {tmp_path / 'config.json'}: not found: {tmp_path} is not a jaxspeech training workdir"
    assert _error(capsys, ["eval", "--workdir", str(tmp_path)]) == expected
    assert _error(capsys, ["transcribe", "--checkpoint", str(tmp_path), "x.flac"]) == expected
    (tmp_path / "config.json").write_text('{"model_type": "whisper", "d_model": 384}')  # a Hugging Face checkpoint
    for argv in (["eval", "--workdir", str(tmp_path)], ["transcribe", "--checkpoint", str(tmp_path), "x.flac"]):
        assert _error(capsys, argv).startswith(
            f"error: {tmp_path / 'config.json'}: is not a jaxspeech run's config "
            "(it holds ['d_model', 'model_type'], not only the sections"
        )
    (tmp_path / "config.json").write_text("{not json")
    assert _error(capsys, ["eval", "--workdir", str(tmp_path)]).startswith(
        f"error: {tmp_path / 'config.json'}: cannot be read as JSON ("
    )


@pytest.mark.parametrize(
    "argv, expected",
    [
        (["eval", "--workdir", "w", "--beam", "0"], "error: --beam: expected an integer >= 1, got '0'"),
        (
            ["eval", "--workdir", "w", "--ctc-weight", "1.5"],
            "error: --ctc-weight: expected a finite number >= 0 and <= 1, got '1.5'",
        ),
        (
            ["transcribe", "--checkpoint", "w", "--batch-size", "0", "x.wav"],
            "error: --batch-size: expected an integer >= 1, got '0'",
        ),
        (
            ["generate", "--hf-dir", "d", "--prompt", "x", "--top-p", "0"],
            "error: --top-p: expected a finite number > 0 and <= 1, got '0'",
        ),
        (["prepare-data", "tiny", "--hours", "nan"], "error: --hours: expected a finite number >= 0, got 'nan'"),
        (["prepare-data", "tiny", "--hours", "-1"], "error: --hours: expected a finite number >= 0, got '-1'"),
        (
            ["prepare-data", "tiny", "--noise-prob", "2"],
            "error: --noise-prob: expected a finite number >= 0 and <= 1, got '2'",
        ),
        (["check-data", "m.jsonl", "--frame-budget", "x"], "error: --frame-budget: expected an integer >= 1, got 'x'"),
    ],
    ids=[
        "eval beam",
        "eval ctc weight",
        "transcribe batch",
        "generate top-p",
        "hours nan",
        "hours negative",
        "noise prob",
        "frame budget",
    ],
)
def test_number_flags_out_of_range(capsys, argv, expected):
    assert _flag_error(capsys, argv).startswith(expected)


def test_prepare_data_refuses_nan_hours_before_writing_anything(tmp_path, capsys):
    _flag_error(capsys, ["prepare-data", "tiny", "--out", str(tmp_path / "corpus"), "--hours", "nan"])
    assert not os.path.exists(tmp_path / "corpus")


def test_prepare_data_refuses_a_folder_it_did_not_build(tmp_path, capsys):
    os.makedirs(tmp_path / "corpus")
    (tmp_path / "corpus" / "train.jsonl").write_text("{}\n")
    line = _error(capsys, ["prepare-data", "tiny", "--out", str(tmp_path / "corpus"), "--no-progress"])
    assert line.startswith(f"error: {tmp_path / 'corpus'}: has split folders or manifests but no corpus.json")


def test_plot_without_metrics_or_with_nothing_to_plot(tmp_path, capsys):
    assert _error(capsys, ["plot", str(tmp_path)]).startswith(f"error: {tmp_path / 'metrics.jsonl'}: no metrics log")
    (tmp_path / "metrics.jsonl").write_text(json.dumps({"step": 1, "unrelated": 2.0}) + "\n")
    assert _error(capsys, ["plot", str(tmp_path)]).startswith(f"error: {tmp_path / 'metrics.jsonl'}: has no ")


# ----------------------------------------------------------------------------- generate / transcribe --whisper-dir
@pytest.fixture(scope="module")
def llm_dir(tmp_path_factory) -> str:
    """A tokenizer and a config.json, but model.safetensors is a Git LFS pointer (a text file)."""
    directory = write_chatml_dir(str(tmp_path_factory.mktemp("llm")))
    config = {
        "model_type": "qwen2",
        "vocab_size": 440,
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 1,
        "num_attention_heads": 2,
        "num_key_value_heads": 1,
    }
    with open(os.path.join(directory, "config.json"), "w") as f:
        json.dump(config, f)
    with open(os.path.join(directory, "model.safetensors"), "w") as f:
        f.write("version https://git-lfs.github.com/spec/v1\noid sha256:0123\nsize 123456\n")
    return directory


def test_generate_names_a_weights_file_that_is_not_safetensors(llm_dir, capsys):
    line = _error(capsys, ["generate", "--hf-dir", llm_dir, "--prompt", "hi"])
    assert (
        line.startswith(f"error: {os.path.join(llm_dir, 'model.safetensors')}: declares a ")
        and "not a safetensors file" in line
    )


def test_generate_names_a_missing_tokenizer(tmp_path, capsys):
    line = _error(capsys, ["generate", "--hf-dir", str(tmp_path), "--prompt", "hi"])
    assert line == f"error: {tmp_path}: expected tokenizer.json or tokenizer.model in this directory"


def test_generate_names_a_missing_model_config(tmp_path, capsys):
    directory = write_chatml_dir(str(tmp_path / "llm"))  # a tokenizer, but no config.json
    line = _error(capsys, ["generate", "--hf-dir", directory, "--prompt", "hi"])
    assert line.startswith(f"error: {os.path.join(directory, 'config.json')}: cannot be read as the model config")


def test_generate_sample_and_beam_are_exclusive(llm_dir, capsys):
    assert _error(capsys, ["generate", "--hf-dir", llm_dir, "--prompt", "x", "--sample", "--beam", "2"]).startswith(
        "error: --sample: and --beam are exclusive"
    )


def test_transcribe_names_a_whisper_dir_without_config(tmp_path, capsys):
    line = _error(capsys, ["transcribe", "--whisper-dir", str(tmp_path), "x.flac"])
    assert line.startswith(f"error: {tmp_path / 'config.json'}: cannot be read as JSON")


def test_transcribe_names_a_truncated_whisper_weights_file(tmp_path, capsys):
    from jaxspeech.testing.whisper import micro_hf_model, save_micro_dir

    directory = save_micro_dir(micro_hf_model(), str(tmp_path / "whisper"))
    weights = os.path.join(directory, "model.safetensors")
    data = open(weights, "rb").read()
    with open(weights, "wb") as f:
        f.write(data[: len(data) // 2])
    capsys.readouterr()  # transformers' progress bar while saving
    line = _error(capsys, ["transcribe", "--whisper-dir", directory, "x.flac"])
    assert line.startswith(f"error: {weights}: tensor '") and "but the file holds" in line, line


# ----------------------------------------------------------------------------- plan / launch
def test_plan_and_launch_errors(tmp_path, capsys):
    missing = str(tmp_path / "nope.py")
    assert (
        _error(capsys, ["plan", "--config", missing, "--topology", "v5e:2x2"])
        == f"error: {missing}: config file not found"
    )
    plan = tmp_path / "plan.json"
    launch = [
        "launch",
        "--plan",
        str(plan),
        "--config",
        os.path.join(REPO, CONFIG),
        "--name",
        "x",
        "--zone",
        "z",
        "--workdir",
        "w",
        "--dry-run",
    ]
    assert _error(capsys, launch).startswith(f"error: {plan}: cannot be read as a plan")
    plan.write_text(json.dumps({"version": 0}))
    assert _error(capsys, launch).startswith(f"error: {plan}: is not a jaxspeech plan")
    assert _flag_error(capsys, ["plan", "--config", missing, "--topology", "v5e:2x2", "--mesh", "x"]).startswith(
        "error: --mesh: --mesh expects AXIS=SIZE"
    )


# ----------------------------------------------------------------------------- check-data / score
def test_check_data_errors(tmp_path, capsys):
    assert _error(capsys, ["check-data"]).startswith("error: --librispeech: give either manifests or --librispeech")
    missing = str(tmp_path / "none.jsonl")
    assert _error(capsys, ["check-data", missing]).startswith(f"error: {missing}: cannot read the manifest")
    (tmp_path / "bad.jsonl").write_text('{"audio_filepath": "a.wav", "duration": 1.0, "text": "x"}\nnot json\n')
    assert _error(capsys, ["check-data", str(tmp_path / "bad.jsonl")]).startswith(
        f"error: {tmp_path / 'bad.jsonl'}:2: not valid JSON"
    )
    both = ["check-data", str(tmp_path / "bad.jsonl"), "--librispeech", str(tmp_path)]
    assert _error(capsys, both) == "error: --librispeech: give either manifests or --librispeech, not both or neither"
    assert _error(capsys, ["check-data", "--librispeech", str(tmp_path)]) == (
        f"error: {tmp_path}: no LibriSpeech transcripts found (expected {tmp_path}/*/*/*.trans.txt)"
    )


def test_sweep_grid_errors(tmp_path, capsys):
    sweep = ["sweep", "--config", os.path.join(REPO, f"{CONFIG}:debug"), "--workdir", str(tmp_path / "sweep")]
    assert (
        _error(capsys, [*sweep, "--grid", "train.seed"])
        == "error: --grid: expected KEY=VALUE1,VALUE2,..., got 'train.seed'"
    )
    assert _error(capsys, [*sweep, "--grid", "train.seed=0,1", "--grid", "train.seed=2,3"]) == (
        "error: --grid: axes ['train.seed'] are given more than once"
    )
    missing = str(tmp_path / "grid.py")
    assert _error(capsys, [*sweep, "--grid-file", missing]) == f"error: {missing}: grid file not found"
    study = os.path.join(REPO, "experiments/fusion/grid.py")
    assert _error(capsys, [*sweep, "--grid-file", f"{study}:large"]) == (
        f"error: {study}:large: experiments/fusion/grid.py takes no argument, 'debug' or 'colab', got 'large'"
    )
    assert os.listdir(tmp_path) == []


def test_score_errors(tmp_path, capsys):
    missing = str(tmp_path / "none.jsonl")
    assert _error(capsys, ["score", "--pairs", missing]) == f"error: {missing}: no such file"
    (tmp_path / "bad.jsonl").write_text('{"reference": "a", "hypothesis": "a"}\n{"reference": "b"}\n')
    assert _error(capsys, ["score", "--pairs", str(tmp_path / "bad.jsonl")]).startswith(
        f"error: {tmp_path / 'bad.jsonl'}:2: expected a JSON object with 'reference' and 'hypothesis'"
    )
    (tmp_path / "refs.txt").write_text("a\nb\n")
    (tmp_path / "hyps.txt").write_text("a\n")
    assert (
        _error(capsys, ["score", "--references", str(tmp_path / "refs.txt")])
        == "error: --references: needs --hypotheses"
    )
    assert _error(
        capsys, ["score", "--references", str(tmp_path / "refs.txt"), "--hypotheses", str(tmp_path / "hyps.txt")]
    ) == (f"error: {tmp_path / 'refs.txt'}: has 2 lines but {tmp_path / 'hyps.txt'} has 1")
    (tmp_path / "good.jsonl").write_text('{"reference": "a", "hypothesis": "a"}\n')
    assert _error(capsys, ["score", "--pairs", str(tmp_path / "good.jsonl"), "--metric", "cer", "--spelling", "x"]) == (
        "error: --spelling: applies to the english normalizer only"
    )


# ----------------------------------------------------------------------------- debug and unexpected errors
def test_debug_flag_and_environment_show_the_traceback(tmp_path, monkeypatch):
    argv = ["plot", str(tmp_path)]
    with pytest.raises(MissingFileError):
        main(["--debug", *argv])
    with pytest.raises(MissingFileError):
        main([*argv, "--debug"])
    monkeypatch.setenv("JAXSPEECH_DEBUG", "1")
    with pytest.raises(ConfigError):
        main(["train", "--config", os.path.join(REPO, f"{CONFIG}:debug"), "--set", "train.total_steps=x"])


def test_an_unexpected_error_keeps_its_traceback(tmp_path, monkeypatch):
    def broken(workdir, out_dir=None):  # a bug inside a command, not a user's mistake
        raise RuntimeError("plotting went wrong")

    monkeypatch.setattr("jaxspeech.cli.plot.plot_learning_curves", broken)
    with pytest.raises(RuntimeError, match="plotting went wrong"):
        main(["plot", str(tmp_path)])
