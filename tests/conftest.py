"""Test setup (environment variables read when jax is imported): 8 fake CPU devices for sharding tests,
no hub access, rank promotion raises."""

import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Implicit rank promotion (f[B, T] + f[T] broadcasting silently) raises in tests, as in nanodo:
# a shape mistake fails loudly instead of broadcasting into a wrong result.
os.environ.setdefault("JAX_NUMPY_RANK_PROMOTION", "raise")
