"""Shared fixtures: one small synthetic dataset per test session."""

import pytest

from tests.data import synthetic


@pytest.fixture(scope="session")
def small_manifest(tmp_path_factory) -> str:
    """48 FLAC clips of 0.2-1.9 s with a manifest of relative paths."""
    return synthetic.make_dataset(str(tmp_path_factory.mktemp("small")), 48, seed=1)
