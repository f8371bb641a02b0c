"""The recipe tests build the same small programs more than once (a run's init and decoding, again in
the pretrained run): they share the trainer tests' session compilation cache."""

import pytest

from tests.train.conftest import compilation_cache  # noqa: F401  (the session-wide cache fixture)


@pytest.fixture(autouse=True)
def _use_compilation_cache(compilation_cache):  # noqa: F811
    yield
