"""The import-linter contracts of pyproject.toml (imports only go down the layers; no cycles)."""

import os
import shutil
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _lint_imports(root: str) -> subprocess.CompletedProcess:
    command = [os.path.join(os.path.dirname(sys.executable), "lint-imports"), "--no-cache"]
    env = {**os.environ, "PYTHONPATH": root}
    return subprocess.run(command, cwd=root, env=env, capture_output=True, text=True, timeout=120)


def test_the_package_keeps_its_layering_contracts():
    result = _lint_imports(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


def test_an_upward_import_breaks_the_layers_contract(tmp_path):
    shutil.copytree(
        os.path.join(ROOT, "jaxspeech"), tmp_path / "jaxspeech", ignore=shutil.ignore_patterns("__pycache__")
    )
    shutil.copy(os.path.join(ROOT, "pyproject.toml"), tmp_path / "pyproject.toml")
    norms = tmp_path / "jaxspeech" / "layers" / "norms.py"
    norms.write_text(norms.read_text() + "\nfrom jaxspeech.recipes import workdir  # noqa: E402\n")
    result = _lint_imports(str(tmp_path))
    assert result.returncode != 0
    assert "imports only go down the layers BROKEN" in result.stdout
    assert "jaxspeech.layers.norms -> jaxspeech.recipes.workdir" in result.stdout
