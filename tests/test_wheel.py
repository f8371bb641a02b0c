"""``pip wheel .`` builds a wheel that installs into a fresh virtual environment and imports without
the repository: no runtime dependency on configs/ or tests/. The new environment reuses this one's
installed dependencies (its site-packages as a plain path, so this environment's editable jaxspeech
stays out; ``--no-deps``), so nothing is downloaded."""

import os
import shutil
import subprocess
import sys
import sysconfig
import venv

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Every subpackage, and the objects a user reaches through a package's public API.
CHECK = """
import importlib, os, pkgutil, sys
import jaxspeech
assert os.path.dirname(jaxspeech.__file__).startswith(sys.prefix), jaxspeech.__file__
for module in pkgutil.iter_modules(jaxspeech.__path__):
    if module.name == "__main__":
        continue
    importlib.import_module(f"jaxspeech.{module.name}")
from jaxspeech.encoders import WhisperEncoder
from jaxspeech.models import SpeechLLM
from jaxspeech.recipes.run import train_and_evaluate
from jaxspeech.cli import build_parser
build_parser()
print("ok", len(list(pkgutil.walk_packages(jaxspeech.__path__, "jaxspeech."))))
"""


def test_the_wheel_installs_and_imports_without_the_repository(tmp_path):
    source = tmp_path / "source"  # a copy of what the build reads, so that the build leaves the checkout alone
    shutil.copytree(os.path.join(ROOT, "jaxspeech"), source / "jaxspeech", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("setup.py", "pyproject.toml", "README.md"):
        shutil.copy(os.path.join(ROOT, name), source / name)
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path / "dist"),
            str(source),
        ],
        check=True,
        timeout=300,
    )
    wheels = list((tmp_path / "dist").glob("jaxspeech-*.whl"))
    assert len(wheels) == 1
    env_dir = tmp_path / "env"
    venv.create(env_dir, system_site_packages=True, with_pip=False, symlinks=True)
    python = str(env_dir / "bin" / "python")
    site = subprocess.run(
        [python, "-c", "import site; print(site.getsitepackages()[0])"], check=True, capture_output=True, text=True
    ).stdout.strip()
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", site, str(wheels[0])],
        check=True,
        timeout=300,
    )
    with open(os.path.join(site, "dependencies.pth"), "w") as f:  # a path line: its own .pth files are not run
        f.write(sysconfig.get_paths()["purelib"] + "\n")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    result = subprocess.run([python, "-c", CHECK], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.startswith("ok")
