"""Harness for the flash-attention tests: random inputs, and one jitted program that returns the
output and the VJP (dq, dk, dv, dbias) of ``flash_attention`` or of ``reference_attention``."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from jaxspeech.kernels.flash_attention import BlockSizes, flash_attention
from jaxspeech.kernels.reference import reference_attention

# Interpret-mode kernels become large XLA programs; -O0 compiles them ~1.5x faster on CPU.
# The reference keeps the default level: at -O0, XLA:CPU (jax 0.10.2) returned NaNs in its
# gradient for a bias broadcast over heads (bias f[B, 1, T, S]).
FAST_COMPILE = {"xla_backend_optimization_level": 0}
SMALL_BLOCKS = BlockSizes(block_q=16, block_kv=16)
F32_TOL, BF16_TOL = 1e-5, 1e-2


def random_inputs(seed, batch, q_len, kv_len, heads, kv_heads, head_dim, dtype=jnp.float32, bias_shape=None):
    """(q, k, v, bias | None, do) with standard-normal entries; ``do`` is the output cotangent."""
    keys = jax.random.split(jax.random.key(seed), 5)
    q = jax.random.normal(keys[0], (batch, q_len, heads, head_dim)).astype(dtype)
    k = jax.random.normal(keys[1], (batch, kv_len, kv_heads, head_dim)).astype(dtype)
    v = jax.random.normal(keys[2], (batch, kv_len, kv_heads, head_dim)).astype(dtype)
    bias = None if bias_shape is None else jax.random.normal(keys[3], bias_shape)
    do = jax.random.normal(keys[4], (batch, q_len, heads, head_dim)).astype(dtype)
    return q, k, v, bias, do


def _vjp(attention, q, k, v, bias, do):
    out, pullback = jax.vjp(attention, q, k, v, bias)
    return out, pullback(do)


@functools.partial(jax.jit, static_argnames=("backend", "block_sizes", "interpret"), compiler_options=FAST_COMPILE)
def flash_vjp(q, k, v, bias, do, mask, *, backend, block_sizes=SMALL_BLOCKS, interpret=True):
    """(out, (dq, dk, dv, dbias)) of flash_attention in interpret mode (or the given interpreter)."""

    def attention(q, k, v, bias):
        return flash_attention(q, k, v, mask, bias=bias, block_sizes=block_sizes, backend=backend, interpret=interpret)

    return _vjp(attention, q, k, v, bias, do)


@jax.jit
def reference_vjp(q, k, v, bias, do, mask):
    """(out, grads) of reference_attention computed in float32 on the same (possibly rounded) inputs."""
    upcast = lambda x: None if x is None else x.astype(jnp.float32)
    return _vjp(
        lambda q, k, v, bias: reference_attention(q, k, v, mask, bias=bias),
        *map(upcast, (q, k, v, bias, do)),
    )


def relative_error(actual, expected) -> float:
    actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    return float(np.linalg.norm(actual - expected) / max(np.linalg.norm(expected), 1e-30))


def compare(backend, q, k, v, bias, do, mask, tol, block_sizes=SMALL_BLOCKS, interpret=True) -> dict[str, float]:
    """Relative errors of out, dq, dk, dv (and dbias) against the reference; asserts all <= tol."""
    out, grads = flash_vjp(q, k, v, bias, do, mask, backend=backend, block_sizes=block_sizes, interpret=interpret)
    ref_out, ref_grads = reference_vjp(q, k, v, bias, do, mask)
    names = ("out", "dq", "dk", "dv", "dbias")
    errors = {}
    for name, actual, expected in zip(names, (out, *grads), (ref_out, *ref_grads)):
        if expected is None:
            continue
        assert actual.shape == expected.shape, (name, actual.shape, expected.shape)
        assert np.all(np.isfinite(np.asarray(actual, np.float32))), f"{name} is not finite"
        errors[name] = relative_error(actual, expected)
    assert all(e <= tol for e in errors.values()), errors
    return errors


def packed_segments(lengths_per_example, total: int) -> jax.Array:
    """i32[B, total]: segment ids 1, 2, ... of the given lengths, then 0 (padding)."""
    rows = []
    for lengths in lengths_per_example:
        row = np.concatenate([np.full(n, i + 1) for i, n in enumerate(lengths)] + [np.zeros(total - sum(lengths))])
        rows.append(row)
    return jnp.asarray(np.stack(rows), jnp.int32)


def spans(spans_per_example, total: int) -> jax.Array:
    """i32[B, total]: bidirectional span ids; ``spans_per_example`` lists (start, end, id) triples."""
    ids = np.zeros((len(spans_per_example), total), np.int32)
    for b, example_spans in enumerate(spans_per_example):
        for start, end, span_id in example_spans:
            ids[b, start:end] = span_id
    return jnp.asarray(ids)
