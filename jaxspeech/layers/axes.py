"""Logical axis names, defined once, and their default mapping onto mesh axes.

Parameters are annotated with the *parameter* names (``embed``, ``heads``, ...); activations with
the ``act_*`` names, so that e.g. the embedding dimension of weights can be sharded over ``fsdp``
while activations keep it whole. The mapping to mesh axes lives in ``DEFAULT_RULES`` (overridable
from a config); modules never name mesh axes.
"""

from __future__ import annotations

# Mesh axes (see jaxspeech.sharding).
DATA, FSDP, TENSOR = "data", "fsdp", "tensor"
MESH_AXES = (DATA, FSDP, TENSOR)

# Parameter axes.
EMBED = "embed"  # model width
HEADS = "heads"  # flattened query heads x head_dim
KV_HEADS = "kv_heads"  # flattened key/value heads x head_dim
MLP = "mlp"  # feed-forward hidden width
VOCAB = "vocab"
LAYERS = "layers"  # stacked (scanned) layers
NORM = "norm"  # scale/bias vectors of normalisation layers
CONV_IN = "conv_in"  # convolution input channels
CONV_OUT = "conv_out"
KERNEL = "kernel"  # convolution taps
MEL = "mel"  # log-mel bins
POSITIONS = "positions"  # learned position tables
QUERIES = "queries"  # learned queries (Q-Former)
LORA_RANK = "lora_rank"  # the low-rank dimension of LoRA adapters

# Activation axes.
ACT_BATCH = "act_batch"
ACT_LENGTH = "act_length"
ACT_EMBED = "act_embed"
ACT_HEADS = "act_heads"
ACT_MLP = "act_mlp"
ACT_VOCAB = "act_vocab"

DEFAULT_RULES: tuple[tuple[str, str | tuple[str, ...] | None], ...] = (
    (ACT_BATCH, (DATA, FSDP)),
    (ACT_LENGTH, None),
    (ACT_EMBED, None),
    (ACT_HEADS, TENSOR),
    (ACT_MLP, TENSOR),
    (ACT_VOCAB, TENSOR),
    (EMBED, FSDP),
    (HEADS, TENSOR),
    (KV_HEADS, TENSOR),
    (MLP, TENSOR),
    (VOCAB, TENSOR),
    (LAYERS, None),
    (NORM, None),
    (CONV_IN, None),
    (CONV_OUT, TENSOR),
    (KERNEL, None),
    (MEL, None),
    (POSITIONS, None),
    (QUERIES, None),
    (LORA_RANK, None),
)
