"""LoRA adapters on any ``Dense`` kernel, added from outside the modules.

Inside ``with lora(config):`` every ``jaxspeech.layers.dense.Dense`` whose module path
('/'-joined, e.g. ``llm/layers/self_attn/q_proj``) matches ``config.targets`` computes

    y = x @ W (+ b) + (alpha / rank) * (dropout(x) @ lora_a) @ lora_b

with ``lora_a`` f[in, r] and ``lora_b`` f[r, out] stored next to the kernel (so scanned layers
stack them like any parameter). ``lora_b`` starts at zero: an untrained adapter leaves the model
unchanged. No module knows about LoRA; freezing the base weights is the optimizer's business
(e.g. ``[(".*/lora_[ab]", 1e-4), ("llm/.*", None)]``). ``merge_lora`` folds adapters into the
kernels for export.
"""

from __future__ import annotations

import contextlib
import dataclasses
import re
from typing import Any, Iterator

import jax
import jax.numpy as jnp
from flax import linen as nn

from jaxspeech.layers import axes
from jaxspeech.layers.dense import Dense

LORA_A, LORA_B = "lora_a", "lora_b"


@dataclasses.dataclass(frozen=True)
class LoraConfig:
    """``targets``: regex fully matching the module paths of the adapted Dense layers."""

    rank: int = 8
    alpha: float = 16.0
    dropout: float = 0.0
    targets: str = r"llm/.*(q_proj|k_proj|v_proj|o_proj)"

    def __post_init__(self):
        if self.rank < 1:
            raise ValueError(f"LoRA rank must be >= 1, got {self.rank}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"LoRA dropout must be in [0, 1), got {self.dropout}")
        re.compile(self.targets)

    @property
    def scale(self) -> float:
        return self.alpha / self.rank


def _a_init(key, shape, dtype):
    """Kaiming-uniform over the input dimension (as PEFT initialises A)."""
    bound = 1.0 / jnp.sqrt(shape[-2])
    return jax.random.uniform(key, shape, dtype, -bound, bound)


@contextlib.contextmanager
def lora(config: LoraConfig | None, *, deterministic: bool = True) -> Iterator[None]:
    """Applies (and at init, creates) LoRA adapters; ``deterministic=False`` enables LoRA dropout
    (needs a ``dropout`` rng). A None config is a no-op context."""
    if config is None:
        yield
        return
    pattern = re.compile(config.targets)

    def interceptor(next_fun, args, kwargs, context):
        module = context.module
        if not isinstance(module, Dense) or context.method_name != "__call__":
            return next_fun(*args, **kwargs)
        if not pattern.fullmatch("/".join(module.path)):
            return next_fun(*args, **kwargs)
        x = args[0]
        y = next_fun(*args, **kwargs)
        in_axis, out_axis = module.axes
        a = module.param(
            LORA_A,
            nn.with_logical_partitioning(_a_init, (in_axis, axes.LORA_RANK)),
            (x.shape[-1], config.rank),
            module.param_dtype,
        )
        b = module.param(
            LORA_B,
            nn.with_logical_partitioning(nn.initializers.zeros, (axes.LORA_RANK, out_axis)),
            (config.rank, module.features),
            module.param_dtype,
        )
        h = x.astype(module.dtype)
        if config.dropout and not deterministic:
            keep = jax.random.bernoulli(module.make_rng("dropout"), 1.0 - config.dropout, h.shape)
            h = jnp.where(keep, h / (1.0 - config.dropout), 0).astype(h.dtype)
        update = jnp.dot(jnp.dot(h, a.astype(module.dtype)), b.astype(module.dtype))
        return y + (config.scale * update).astype(y.dtype)

    with nn.intercept_methods(interceptor):
        yield


def _walk(tree: Any, visit) -> Any:
    if isinstance(tree, dict):
        tree = visit(tree)
        return {k: _walk(v, visit) for k, v in tree.items()}
    return tree


def merge_lora(params: dict, config: LoraConfig) -> dict:
    """Params with every adapter folded into its kernel (W + scale * A @ B) and removed."""

    def visit(node: dict) -> dict:
        if LORA_A not in node:
            return node
        node = dict(node)
        a, b = nn.unbox(node.pop(LORA_A)), nn.unbox(node.pop(LORA_B))
        kernel = nn.unbox(node["kernel"])
        delta = jnp.einsum("...ir,...ro->...io", a.astype(jnp.float32), b.astype(jnp.float32)) * config.scale
        node["kernel"] = (kernel.astype(jnp.float32) + delta).astype(kernel.dtype)
        return node

    return _walk(params, visit)


def lora_only(params: dict) -> dict:
    """The sub-tree of adapter parameters (paths preserved)."""

    def keep(tree):
        if not isinstance(tree, dict):
            return None
        out = {}
        for key, value in tree.items():
            if key in (LORA_A, LORA_B):
                out[key] = value
            else:
                sub = keep(value)
                if sub:
                    out[key] = sub
        return out

    return keep(params) or {}


def add_adapters(base: dict, adapters: dict) -> dict:
    """Base params (e.g. imported from a checkpoint) with adapter leaves inserted at their paths."""
    out = dict(base)
    for key, value in adapters.items():
        if key in (LORA_A, LORA_B):
            out[key] = value
        elif key in out:
            out[key] = add_adapters(out[key], value)
        else:
            raise KeyError(f"adapter path {key!r} has no counterpart in the base parameters")
    return out
