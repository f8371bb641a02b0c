"""ruff's lint rules of pyproject.toml hold for the whole repository."""

import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_ruff_check_passes():
    command = [sys.executable, "-m", "ruff", "check", "--no-cache", ROOT]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
