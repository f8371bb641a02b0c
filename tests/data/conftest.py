"""Shared fixtures: one small synthetic dataset per test session."""

import pytest

from jaxspeech.testing import audio_files


@pytest.fixture(scope="session")
def small_manifest(tmp_path_factory) -> str:
    """48 FLAC clips of 0.2-1.9 s with a manifest of relative paths."""
    return audio_files.make_dataset(str(tmp_path_factory.mktemp("small")), 48, seed=1)
