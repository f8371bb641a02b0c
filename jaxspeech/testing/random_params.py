"""Random Speech LLM parameters without compiling ``model.init`` (its RNG graph takes XLA:CPU ~15 s to
compile for the tiny configs): shapes come from ``jax.eval_shape``, values from numpy."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn

from jaxspeech.layers.lora import LoraConfig, lora


def random_params(model: nn.Module, batch: dict, seed: int = 0, adapters: LoraConfig | None = None) -> dict:
    """Unboxed params: norm scales 1 + N(0, 0.1), everything else N(0, 0.2) (cross-attention gates included,
    so the audio memory matters); LoRA adapters too when ``adapters`` is given."""

    def init():
        with lora(adapters):
            return model.init(
                jax.random.key(0),
                batch["tokens"],
                batch["features"],
                batch["feature_lengths"],
                segment_ids=batch["segment_ids"],
            )

    shapes = nn.unbox(jax.eval_shape(init))
    rng = np.random.default_rng(seed)

    def fill(path, leaf):
        noise = rng.normal(size=leaf.shape)
        value = 1.0 + 0.1 * noise if path[-1].key == "scale" else 0.2 * noise
        return jnp.asarray(value, leaf.dtype)

    return jax.tree_util.tree_map_with_path(fill, shapes)
