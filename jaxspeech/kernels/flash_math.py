"""Per-tile math and launch settings shared by the TPU and GPU flash-attention kernels.

Everything here acts on values already loaded from refs: q f[bq, D], k/v f[bk, D], scores
f32[bq, bk], per-row statistics f32[bq, 1]. Matmuls accumulate in float32; float32 inputs use
full-precision matmuls so that kernels match the XLA reference to ~1e-6.

Fully masked rows: masked scores are -inf, the running max of such a row stays -inf and is
replaced by 0 before exponentiating, so its probabilities, sum and output stay exactly 0. Its
logsumexp is stored as +inf, which makes every recomputed probability 0 in the backward pass.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp
from jax import lax

from jaxspeech.kernels.block_masks import MaskFlags

_NT = (((1,), (1,)), ((), ()))  # a[m, k] . b[n, k] -> [m, n]
_NN = (((1,), (0,)), ((), ()))  # a[m, k] . b[k, n] -> [m, n]


def _dot(a: jax.Array, b: jax.Array, dims) -> jax.Array:
    precision = lax.Precision.HIGHEST if a.dtype == jnp.float32 else lax.Precision.DEFAULT
    return lax.dot_general(a, b, dims, precision=precision, preferred_element_type=jnp.float32)


def dot_nt(a: jax.Array, b: jax.Array) -> jax.Array:
    """a[m, k], b[n, k] -> f32[m, n]."""
    return _dot(a, b, _NT)


def dot_tn(a: jax.Array, b: jax.Array) -> jax.Array:
    """a f32[k, m], b[k, n] -> f32[m, n], with a cast to b's dtype.

    The transpose is explicit and done in float32 (as JAX's own TPU flash-attention kernel does
    for p and ds) rather than left to a transposed-operand matmul lowering.
    """
    return _dot(a.T.astype(b.dtype), b, _NN)


def dot_nn(a: jax.Array, b: jax.Array) -> jax.Array:
    """a[m, k], b[k, n] -> f32[m, n]."""
    return _dot(a, b, _NN)


def scores(
    q: jax.Array,
    k: jax.Array,
    scale: float,
    bias: jax.Array | None,
    full: jax.Array,
    allowed: Callable[[], jax.Array] | None,
) -> jax.Array:
    """f32[bq, bk] = scale * q k^T + bias, set to -inf where the element mask forbids a pair.

    ``allowed()`` builds the element mask bool[bq, bk] (None: the mask has no element checks); it
    is only evaluated, under a branch, for tiles that are not ``full``. Loads of q/k/v stay
    outside the branch so that pipelining compilers still see them.
    """
    s = dot_nt(q, k) * scale
    if bias is not None:
        s = s + bias.astype(jnp.float32)
    if allowed is None:
        return s
    return lax.cond(full, lambda s: s, lambda s: jnp.where(allowed(), s, -jnp.inf), s)


def softmax_step(
    m_prev: jax.Array, l_prev: jax.Array, acc_prev: jax.Array, s: jax.Array, v: jax.Array
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """One online-softmax update: (max f32[bq, 1], sum f32[bq, 1], acc f32[bq, D]) with tile s, v."""
    m_new = jnp.maximum(m_prev, jnp.max(s, axis=1, keepdims=True))
    m_safe = jnp.where(m_new == -jnp.inf, 0.0, m_new)
    p = jnp.exp(s - m_safe)
    alpha = jnp.exp(m_prev - m_safe)
    l_new = alpha * l_prev + jnp.sum(p, axis=1, keepdims=True)
    acc_new = alpha * acc_prev + dot_nn(p.astype(v.dtype), v)
    return m_new, l_new, acc_new


def finalize(m: jax.Array, l: jax.Array, acc: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(out f32[bq, D], logsumexp f32[bq, 1]); rows that saw no key give 0 and +inf."""
    live = l > 0.0
    out = acc / jnp.where(live, l, 1.0)
    lse = jnp.where(live, m + jnp.log(jnp.where(live, l, 1.0)), jnp.inf)
    return out, lse


def score_grads(
    s: jax.Array, lse: jax.Array, do: jax.Array, v: jax.Array, delta: jax.Array
) -> tuple[jax.Array, jax.Array]:
    """(p, ds) f32[bq, bk]: recomputed probabilities and the gradient of the (biased) scores.

    lse, delta f32[bq, 1] (delta = rowsum(dO * O)); do f[bq, D]; v f[bk, D].
    """
    p = jnp.exp(s - lse)
    dp = dot_nt(do, v)
    return p, p * (dp - delta)


@dataclasses.dataclass(frozen=True)
class KernelConfig:
    """Static settings of one kernel launch (hashable: it is a ``custom_vjp`` non-diff argument)."""

    flags: MaskFlags
    scale: float
    block_q: int
    block_kv: int
    groups: int  # query heads per key/value head
    bias_batched: bool | None  # None: no bias; else whether the bias has a batch axis (else 1)
    bias_per_head: bool | None  # whether the bias has a head axis (else 1)
    interpret: Any  # False, True, or Pallas interpret parameters (e.g. pltpu.InterpretParams)
    tiles: int  # tiles each (example, head) visits as far as known at trace time (kernels/cost.py)

    @property
    def has_bias(self) -> bool:
        return self.bias_batched is not None
