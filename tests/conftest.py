"""Test setup: 8 fake CPU devices for sharding tests (must be set before jax is imported)."""

import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import jaxspeech  # noqa: E402,F401  before any backend starts: no libtpu start-up errors on CPU machines

import jax  # noqa: E402

# Broadcasting is explicit everywhere (layers/broadcast.py): an implicit rank promotion is an error.
jax.config.update("jax_numpy_rank_promotion", "raise")
