"""A small real Task for the trainer's tests: a prefix speech-LM in miniature built from
``jaxspeech.layers`` (features -> encoder -> connector -> causal decoder over [audio; text]),
with a Grain data pipeline of seeded random examples."""

from __future__ import annotations

import dataclasses
from typing import Any

import grain
import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn

from jaxspeech.encoders.conformer import MaskedBatchNorm
from jaxspeech.layers import axes
from jaxspeech.layers.attention import Attention
from jaxspeech.layers.dense import Dense
from jaxspeech.layers.embeddings import Embed
from jaxspeech.kernels.masks import MaskSpec
from jaxspeech.layers.mlp import GatedMLP
from jaxspeech.layers.norms import RMSNorm
from jaxspeech.losses import next_token_loss
from jaxspeech.train.task import LOSS_WEIGHT


@dataclasses.dataclass(frozen=True)
class TinyConfig:
    feature_dim: int = 8
    frames: int = 6
    text_length: int = 8
    vocab: int = 32
    width: int = 16
    heads: int = 2
    head_dim: int = 8
    mlp: int = 32
    dropout: float = 0.1
    batch_norm: bool = False  # adds batch statistics (a "batch_stats" collection) to the encoder
    compute_dtype: Any = jnp.float32


@jax.custom_vjp
def poison_gradient(x, poison):
    """Identity on x f[B, ...]; its gradient is NaN for examples with poison f32[B] > 0 (the loss stays finite)."""
    return x


def _poison_forward(x, poison):
    return x, poison


def _poison_backward(poison, grad):
    nan_where_poisoned = jnp.where(poison > 0, jnp.nan, 1.0).reshape((-1,) + (1,) * (grad.ndim - 1))
    return grad * nan_where_poisoned.astype(grad.dtype), jnp.zeros_like(poison)


poison_gradient.defvjp(_poison_forward, _poison_backward)


@jax.custom_vjp
def offset_gradient(x, offset):
    """Identity on x; its gradient gets ``offset`` f32[] added (+-inf: exactly +-inf gradients)."""
    return x


offset_gradient.defvjp(
    lambda x, offset: (x, offset), lambda offset, grad: (grad + offset.astype(grad.dtype), jnp.zeros_like(offset))
)


def _inject_faults(params, batch):
    """Optional batch entries that break a step on purpose (f32[B], summed over the batch):
    ``grad_offset`` is added to the connector kernel's gradient, ``loss_offset`` to the loss
    without touching any gradient. Returns (params, loss offset f32[])."""
    if "grad_offset" in batch:
        connector = {
            **params["connector"],
            "kernel": offset_gradient(params["connector"]["kernel"], jnp.sum(batch["grad_offset"])),
        }
        params = {**params, "connector": connector}
    loss_offset = jax.lax.stop_gradient(jnp.sum(batch["loss_offset"])) if "loss_offset" in batch else 0.0
    return params, loss_offset


class TinySpeechLM(nn.Module):
    """features f[B, T, F], tokens i32[B, L] -> logits f32[B, L, V]."""

    config: TinyConfig

    @nn.compact
    def __call__(self, features, tokens, *, train: bool, poison=None):
        c, dt = self.config, self.config.compute_dtype
        audio = Dense(c.width, (axes.MEL, axes.EMBED), use_bias=True, dtype=dt, name="encoder")(features)
        if c.batch_norm:
            valid = jnp.ones(audio.shape[:2], bool)
            audio = MaskedBatchNorm(momentum=0.5, dtype=dt, name="encoder_norm")(audio, valid, train)
        audio = Dense(c.width, (axes.MLP, axes.EMBED), dtype=dt, name="connector")(nn.gelu(audio))
        if poison is not None:
            audio = poison_gradient(audio, poison)
        embed = Embed(c.vocab, c.width, dtype=dt, name="llm_embed")
        x = jnp.concatenate([audio, embed(tokens)], axis=1)
        x = nn.with_logical_constraint(x, (axes.ACT_BATCH, axes.ACT_LENGTH, axes.ACT_EMBED))
        attention = Attention(c.width, c.heads, c.heads, c.head_dim, dtype=dt, name="llm_attention")
        h, _ = attention(RMSNorm(dtype=dt, name="llm_norm1")(x), mask=MaskSpec(causal=True))
        x = x + nn.Dropout(c.dropout, deterministic=not train)(h)
        x = x + GatedMLP(c.mlp, dtype=dt, name="llm_mlp")(RMSNorm(dtype=dt, name="llm_norm2")(x))
        x = RMSNorm(dtype=dt, name="llm_final_norm")(x)
        return embed.attend(x[:, features.shape[1] :])


@dataclasses.dataclass(frozen=True)
class TinyTask:
    """Next-token cross-entropy on the text part, averaged over ``loss_mask``. Optional batch
    entries for the non-finite-step tests: ``poison`` f32[B] makes the gradient NaN through the
    activations; ``grad_offset`` and ``loss_offset`` (see ``_inject_faults``)."""

    config: TinyConfig = TinyConfig()

    @property
    def model(self) -> TinySpeechLM:
        return TinySpeechLM(self.config)

    def init_params(self, rng, batch):
        return self.model.init(rng, batch["features"], batch["tokens"], train=False)["params"]

    def loss(self, params, batch, rng, *, train: bool):
        params, loss_offset = _inject_faults(params, batch)
        logits = self.model.apply(
            {"params": params},
            batch["features"],
            batch["tokens"],
            train=train,
            poison=batch.get("poison"),
            rngs={"dropout": rng},
        )
        return _loss_and_metrics(logits, batch, loss_offset)

    def throughput_counts(self, batch):
        return {"examples": batch["tokens"].shape[0], "tokens": float(np.sum(batch["loss_mask"]))}


def _loss_and_metrics(logits, batch, loss_offset=0.0):
    result = next_token_loss(logits, batch["tokens"], batch["loss_mask"])
    return result.loss + loss_offset, {"accuracy": result.accuracy, LOSS_WEIGHT: result.count}


@dataclasses.dataclass(frozen=True)
class StatefulTinyTask(TinyTask):
    """``TinyTask`` with batch norm in the encoder: a ``StatefulTask`` (running statistics)."""

    config: TinyConfig = TinyConfig(batch_norm=True)

    def init_variables(self, rng, batch):
        variables = self.model.init(rng, batch["features"], batch["tokens"], train=False)
        return {"params": variables["params"], "batch_stats": variables["batch_stats"]}

    def loss(self, params, batch, rng, *, train: bool, model_state):
        params, loss_offset = _inject_faults(params, batch)
        logits, updates = self.model.apply(
            {"params": params, **model_state},
            batch["features"],
            batch["tokens"],
            train=train,
            poison=batch.get("poison"),
            rngs={"dropout": rng},
            mutable=list(model_state),
        )
        return (*_loss_and_metrics(logits, batch, loss_offset), updates)


def make_example(index: int, config: TinyConfig = TinyConfig(), seed: int = 0) -> dict[str, np.ndarray]:
    """Example ``index``: random features, a token sequence with a learnable pattern, a ragged mask."""
    rng = np.random.default_rng([seed, index])
    start = rng.integers(0, config.vocab)
    tokens = (start + np.arange(config.text_length) * (1 + index % 3)) % config.vocab
    length = rng.integers(3, config.text_length + 1)
    return {
        "features": rng.standard_normal((config.frames, config.feature_dim)).astype(np.float32)
        + np.float32(start / config.vocab),
        "tokens": tokens.astype(np.int32),
        "loss_mask": (np.arange(config.text_length) < length).astype(np.float32),
    }


def make_batch(batch_size: int, offset: int = 0, config: TinyConfig = TinyConfig()) -> dict[str, np.ndarray]:
    examples = [make_example(offset + i, config) for i in range(batch_size)]
    return {key: np.stack([e[key] for e in examples]) for key in examples[0]}


def grain_iterator(batch_size: int, num_examples: int = 64, seed: int = 0, config: TinyConfig = TinyConfig()):
    """An endless, shuffled, checkpointable Grain iterator (``get_state``/``set_state``)."""
    dataset = (
        grain.MapDataset.range(num_examples)
        .shuffle(seed=seed)
        .map(lambda i: make_example(int(i), config))
        .repeat()
        .batch(batch_size, drop_remainder=True)
    )
    return iter(dataset.to_iter_dataset())


# Settings shared by the loop tests and the worker subprocesses. Keeping them identical makes the
# compiled programs identical, so the session's compilation cache serves all of them.
LOOP_CONFIG = {
    "total_steps": 5,
    "progress_bar": False,
    "optimizer": {"learning_rate": 1e-2, "warmup_steps": 1, "decay_steps": 100, "weight_decay": 0.01},
    "checkpoint": {"every_steps": 0},
    "metrics": {"log_every": 1, "measure_peak_flops": False, "tensorboard": False},
}


# The optimizer of the freezing / non-finite tests (step level and loop level share its programs).
FREEZE_OPTIMIZER = {
    "learning_rate": 1e-2,
    "warmup_steps": 1,
    "decay_steps": 100,
    "weight_decay": 0.1,
    "lr_rules": (("encoder/.*", None),),
}


def loop_config(**overrides) -> dict:
    """``LOOP_CONFIG`` with ``overrides`` merged in (nested dicts are merged key by key)."""
    merged = {key: dict(value) if isinstance(value, dict) else value for key, value in LOOP_CONFIG.items()}
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key].update(value)
        else:
            merged[key] = value
    return merged


FAULT_ENTRIES = ("poison", "grad_offset", "loss_offset")


def with_faults(batch: dict, entry: str | None = None, value: float = 0.0, row: int | None = None) -> dict:
    """``batch`` with every entry of ``FAULT_ENTRIES`` (zero: harmless), ``entry`` set to ``value``
    in ``row`` (or every row). All such batches share one structure, hence one compiled step."""
    size = len(batch["tokens"])
    faulty = {**batch, **{key: np.zeros(size, np.float32) for key in FAULT_ENTRIES}}
    if entry is not None:
        rows = np.ones(size, bool) if row is None else np.arange(size) == row
        faulty[entry] = np.where(rows, np.float32(value), np.float32(0))
    return faulty


class IndexedBatches:
    """Endless ``make_batch(batch_size, offset=batch_size * i)`` for i = 0, 1, ..., with the
    ``FAULT_ENTRIES``: ``poison`` is 1 on the steps (1-based) in ``poisoned_steps``; checkpointable."""

    def __init__(self, batch_size: int, poisoned_steps=()):
        self.batch_size, self.poisoned_steps, self.position = batch_size, set(poisoned_steps), 0

    def __iter__(self):
        return self

    def __next__(self):
        self.position += 1
        batch = make_batch(self.batch_size, offset=self.batch_size * (self.position - 1))
        return with_faults(batch, "poison", float(self.position in self.poisoned_steps))

    def get_state(self):
        return {"position": self.position}

    def set_state(self, state):
        self.position = state["position"]
