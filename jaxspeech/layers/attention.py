"""Multi-head attention (MHA / GQA / MQA, self or cross, optional KV cache) and the one dispatcher
through which every model reaches an attention backend.

Backends (``impl``):
  * ``"xla"``    plain jnp reference (``jaxspeech.kernels.reference``), over blocks of at most
                 ``XLA_QUERY_BLOCK`` queries for long inputs (scores that stay in cache); any device;
  * ``"cudnn"``  ``jax.nn.dot_product_attention(implementation="cudnn")``; NVIDIA GPUs;
  * ``"pallas"`` fused flash attention (``jaxspeech.kernels.flash_attention``); TPU/GPU, and CPU in
                 interpret mode (for tests).

Diagnostics: when the ``diagnostics`` collection is mutable (``apply(..., mutable=["diagnostics"])``;
never during ``init``), every ``Attention`` also sows its softmax weights f32[B, H, T, S] as
``attention_weights`` (computed densely, whatever the backend); otherwise nothing extra is traced.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
from flax import linen as nn
from jax.sharding import PartitionSpec as P

from jaxspeech.kernels.reference import head_major_kv_attention, reference_attention
from jaxspeech.layers import axes
from jaxspeech.layers.dense import Dense
from jaxspeech.kernels.masks import MaskSpec, dense_mask
from jaxspeech.layers.rope import apply_rope

IMPLEMENTATIONS = ("xla", "cudnn", "pallas")
# The "xla" backend attends in blocks of at most this many queries (``_in_query_blocks``).
XLA_QUERY_BLOCK = 256
DIAGNOSTICS = "diagnostics"


def _cudnn_attention(q, k, v, mask, bias, scale):
    batch, q_len, kv_len = q.shape[0], q.shape[1], k.shape[1]
    allowed = dense_mask(mask, batch, q_len, kv_len)[:, None, :, :]
    out = jax.nn.dot_product_attention(q, k, v, bias=bias, mask=allowed, scale=scale, implementation="cudnn")
    any_key = jnp.any(allowed, axis=-1)[:, 0, :, None, None]  # [B, T, 1, 1]
    return jnp.where(any_key, out, 0).astype(q.dtype)


def _in_query_blocks(attend, q, k, v, mask, bias, scale, block):
    """``attend`` over blocks of at most ``block`` queries, one block after another (``lax.map``):
    a block's scores f32[B, H, block, S] stay in cache instead of all [B, H, T, S] passing through
    memory several times (softmax, weighting). Query rows are independent, so every output row is
    what one call over all queries gives. ``attend`` takes q f[B, T, H, D] and k/v f[B, K, S, D]
    (laid out head-major once here, not in every block)."""
    batch, length = q.shape[:2]
    count = -(-length // block)
    size = -(-length // count)  # equal blocks, padded at the end
    pad = count * size - length
    k, v = k.transpose(0, 2, 1, 3), v.transpose(0, 2, 1, 3)
    if mask is not None and mask.uses_positions and mask.q_positions is None:
        mask = mask.replace(q_positions=jnp.broadcast_to(jnp.arange(length, dtype=jnp.int32)[None], (batch, length)))

    def blocks(x, axis):  # [..., T (axis), ...] -> [count, ..., size, ...]
        if x is None:
            return None
        x = jnp.pad(x, [(0, pad if i == axis else 0) for i in range(x.ndim)])
        x = x.reshape(*x.shape[:axis], count, size, *x.shape[axis + 1 :])
        return jnp.moveaxis(x, axis, 0)

    per_query = {"q": blocks(q, 1), "bias": blocks(bias, 2)}
    if mask is not None:
        per_query.update(
            q_segment_ids=blocks(mask.q_segment_ids, 1),
            q_positions=blocks(mask.q_positions, 1),
            q_bidir_ids=blocks(mask.q_bidir_ids, 1),
        )

    def one_block(inputs):
        block_mask = (
            None
            if mask is None
            else mask.replace(
                q_segment_ids=inputs["q_segment_ids"],
                q_positions=inputs["q_positions"],
                q_bidir_ids=inputs["q_bidir_ids"],
            )
        )
        return attend(inputs["q"], k, v, block_mask, bias=inputs["bias"], scale=scale)

    out = jax.lax.map(one_block, per_query)  # [count, B, size, H, D]
    return jnp.moveaxis(out, 0, 1).reshape(batch, count * size, *q.shape[2:])[:, :length]


def _mesh_axes(logical: str, dim: int, mesh) -> tuple[str, ...]:
    """The mesh axes (size > 1) that the logical axis ``logical`` maps to under the rules in
    context, kept while their product still divides ``dim``."""
    spec = nn.logical_to_mesh_axes((logical,))[0]
    names = () if spec is None else (spec,) if isinstance(spec, str) else tuple(spec)
    chosen, size = [], 1
    for name in names:
        if name in mesh.shape and mesh.shape[name] > 1 and dim % (size * mesh.shape[name]) == 0:
            chosen.append(name)
            size *= mesh.shape[name]
    return tuple(chosen)


def _kernel_target(mesh) -> dict[str, Any]:
    """Kernel backend and interpretation for the devices of ``mesh``, which may not be this
    machine's (a program compiled ahead of time for TPUs on a CPU host); {} = decide from the
    default backend."""
    device = None if mesh.empty else getattr(mesh, "abstract_device", None)
    platform = getattr(device, "platform", None)
    if platform == "tpu":
        return {"backend": "tpu", "interpret": False}
    if platform in ("gpu", "cuda", "rocm"):
        return {"backend": "gpu", "interpret": False}
    return {}


def _pallas_attention(q, k, v, mask, bias, scale):
    """``flash_attention`` on each device's shard when a mesh is in context (``jax.set_mesh``):
    a Pallas kernel is one opaque call that the SPMD partitioner cannot split, so it runs under
    ``shard_map`` over the batch (``act_batch``) and head (``act_heads``) mesh axes; key/value
    heads that do not split over the head axes are repeated to one per query head. The kernels
    are those of the mesh's devices (TPU or GPU), interpreted only on CPU meshes."""
    from jaxspeech.kernels.flash_attention import flash_attention  # imported lazily: Pallas is heavy

    mesh = jax.sharding.get_abstract_mesh()
    target = _kernel_target(mesh)

    def attend(q, k, v, mask, bias):
        return flash_attention(q, k, v, mask, bias=bias, scale=scale, **target)

    if mesh.empty or mesh.size == 1:
        return attend(q, k, v, mask, bias)
    batch_axes = _mesh_axes(axes.ACT_BATCH, q.shape[0], mesh)
    head_axes = _mesh_axes(axes.ACT_HEADS, q.shape[2], mesh)
    head_shards = math.prod(mesh.shape[a] for a in head_axes)
    if k.shape[2] % head_shards:
        k, v = (jnp.repeat(x, q.shape[2] // k.shape[2], axis=2) for x in (k, v))
    if not (batch_axes or head_axes):
        return attend(q, k, v, mask, bias)
    rows, heads = batch_axes or None, head_axes or None
    tokens = P(rows, None, heads, None)
    bias_spec = None if bias is None else P(rows if bias.shape[0] > 1 else None, heads if bias.shape[1] > 1 else None)
    mask_spec = jax.tree.map(lambda _: P(rows), mask)
    sharded = jax.shard_map(
        attend, mesh=mesh, in_specs=(tokens, tokens, tokens, mask_spec, bias_spec), out_specs=tokens, check_vma=False
    )
    return sharded(q, k, v, mask, bias)


def dot_product_attention(
    q: jax.Array,
    k: jax.Array,
    v: jax.Array,
    mask: MaskSpec | None = None,
    *,
    bias: jax.Array | None = None,
    scale: float | None = None,
    impl: str = "xla",
) -> jax.Array:
    """q f[B, T, H, D], k/v f[B, S, K, D] (H % K == 0) -> f[B, T, H, D].

    ``mask`` is a ``MaskSpec``; ``bias`` an optional additive f[B|1, H|1, T, S] score bias
    (e.g. Conformer relative positions). Fully masked query rows return 0 on every backend.
    """
    if impl == "xla":
        if q.shape[1] > XLA_QUERY_BLOCK:
            return _in_query_blocks(head_major_kv_attention, q, k, v, mask, bias, scale, XLA_QUERY_BLOCK)
        return reference_attention(q, k, v, mask, bias=bias, scale=scale)
    if impl == "cudnn":
        return _cudnn_attention(q, k, v, mask, bias, scale)
    if impl == "pallas":
        return _pallas_attention(q, k, v, mask, bias, scale)
    raise ValueError(f"unknown attention impl {impl!r}; expected one of {IMPLEMENTATIONS}")


def attention_weights(
    q: jax.Array,
    k: jax.Array,
    mask: MaskSpec | None = None,
    *,
    bias: jax.Array | None = None,
    scale: float | None = None,
) -> jax.Array:
    """Softmax weights of ``reference_attention``: q f[B, T, H, D], k f[B, S, K, D] -> f32[B, H, T, S].

    Scores and softmax in float32; query rows with no allowed key get all-zero weights."""
    batch, q_len, num_heads, head_dim = q.shape
    kv_len, num_kv_heads = k.shape[1], k.shape[2]
    scale = head_dim**-0.5 if scale is None else scale
    k = jnp.repeat(k, num_heads // num_kv_heads, axis=2)  # query head h reads key/value head h // groups
    scores = jnp.einsum("bthd,bshd->bhts", q, k, preferred_element_type=jnp.float32) * scale
    if bias is not None:
        scores = scores + bias.astype(jnp.float32)
    allowed = dense_mask(mask, batch, q_len, kv_len)[:, None, :, :]
    weights = jax.nn.softmax(jnp.where(allowed, scores, -jnp.inf), axis=-1)
    return jnp.where(allowed, weights, 0.0)


class Attention(nn.Module):
    """Projections + rotary embedding + dispatcher + output projection.

    ``__call__(x f[B, T, E], kv_input f[B, S, E] | None, ...) -> (f[B, T, features], cache | None)``.
    Self-attention when ``kv_input`` is None. ``rope`` is ``(positions i32[B, T], inv_freq)``
    applied to queries and keys. ``cache`` is a dict with ``k``/``v`` f[B, K, Smax, D] (head-major):
    the new keys/values are written at slot ``cache_index`` and attention runs over all slots (the
    mask decides which are visible). ``kv`` passes precomputed (k, v) for cross-attention.
    """

    features: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    q_bias: bool = False
    k_bias: bool = False
    v_bias: bool = False
    o_bias: bool = False
    impl: str = "xla"
    scale: float | None = None
    rope_interleaved: bool = False
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    def setup(self):
        def dense(features, logical_axes, use_bias):
            return Dense(features, logical_axes, use_bias, self.dtype, self.param_dtype)

        self.q_proj = dense(self.num_heads * self.head_dim, (axes.EMBED, axes.HEADS), self.q_bias)
        self.k_proj = dense(self.num_kv_heads * self.head_dim, (axes.EMBED, axes.KV_HEADS), self.k_bias)
        self.v_proj = dense(self.num_kv_heads * self.head_dim, (axes.EMBED, axes.KV_HEADS), self.v_bias)
        self.o_proj = dense(self.features, (axes.HEADS, axes.EMBED), self.o_bias)

    def project_kv(self, source: jax.Array) -> tuple[jax.Array, jax.Array]:
        """source f[B, S, E] -> (k, v) each f[B, S, K, D]."""
        batch, length = source.shape[:2]
        k = self.k_proj(source).reshape(batch, length, self.num_kv_heads, self.head_dim)
        v = self.v_proj(source).reshape(batch, length, self.num_kv_heads, self.head_dim)
        return k, v

    def __call__(
        self,
        x: jax.Array,
        kv_input: jax.Array | None = None,
        *,
        mask: MaskSpec | None = None,
        rope: tuple[jax.Array, jax.Array] | None = None,
        bias: jax.Array | None = None,
        cache: dict[str, jax.Array] | None = None,
        cache_index: jax.Array | None = None,
        kv: tuple[jax.Array, jax.Array] | None = None,
    ) -> tuple[jax.Array, dict[str, jax.Array] | None]:
        batch, length = x.shape[:2]
        q = self.q_proj(x).reshape(batch, length, self.num_heads, self.head_dim)
        k, v = kv if kv is not None else self.project_kv(x if kv_input is None else kv_input)
        if rope is not None:
            positions, inv_freq = rope
            q = apply_rope(q, positions, inv_freq, self.rope_interleaved)
            k = apply_rope(k, positions, inv_freq, self.rope_interleaved)
        new_cache = None
        if cache is not None:
            # Head-major slots: the attention products read the cache as it lies, without a relayout.
            def write(slots, new):  # new f[B, L, K, D] into slots f[B, K, Smax, D] at cache_index
                return jax.lax.dynamic_update_slice(
                    slots, new.transpose(0, 2, 1, 3).astype(slots.dtype), (0, 0, cache_index, 0)
                )

            new_cache = {"k": write(cache["k"], k), "v": write(cache["v"], v)}
            k, v = new_cache["k"].transpose(0, 2, 1, 3), new_cache["v"].transpose(0, 2, 1, 3)
        q = nn.with_logical_constraint(q, (axes.ACT_BATCH, axes.ACT_LENGTH, axes.ACT_HEADS, None))
        if self.is_mutable_collection(DIAGNOSTICS) and not self.is_initializing():  # init makes all collections mutable
            weights = attention_weights(q, k.astype(q.dtype), mask, bias=bias, scale=self.scale)
            self.sow(DIAGNOSTICS, "attention_weights", weights)
        out = dot_product_attention(
            q, k.astype(q.dtype), v.astype(q.dtype), mask, bias=bias, scale=self.scale, impl=self.impl
        )
        out = self.o_proj(out.reshape(batch, length, self.num_heads * self.head_dim))
        return out, new_cache
