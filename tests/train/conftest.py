"""Shared fixtures for the trainer's tests.

XLA:CPU compiles even the tiny test model's train step in seconds, and several tests (and the
subprocesses of the crash/resume tests) build the very same programs; a persistent compilation
cache for this test session lets them share those compilations.
"""

import jax
import pytest


@pytest.fixture(scope="session")
def compilation_cache(tmp_path_factory) -> str:
    path = str(tmp_path_factory.mktemp("jax_compilation_cache"))
    jax.config.update("jax_compilation_cache_dir", path)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    return path


@pytest.fixture(autouse=True)
def _use_compilation_cache(compilation_cache):
    yield
