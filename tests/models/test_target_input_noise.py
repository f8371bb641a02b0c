"""Noisy teacher forcing of the speech task: only target tokens change, never into the placeholder."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxspeech.errors import ConfigError
from jaxspeech.tasks.speech_llm import SpeechLossConfig, noisy_targets


def test_only_target_tokens_are_replaced_at_about_the_share_asked():
    tokens = jnp.tile(jnp.arange(4, 68, dtype=jnp.int32)[None], (64, 1))
    mask = jnp.zeros(tokens.shape, jnp.float32).at[:, 16:].set(1.0)
    noisy = np.asarray(noisy_targets(jax.random.key(0), tokens, mask, 0.25, vocab_size=96, placeholder_id=3))
    changed = noisy != np.asarray(tokens)
    assert not changed[:, :16].any()
    # A drawn token equal to the original counts as unchanged: 1/95 of the draws.
    assert abs(changed[:, 16:].mean() - 0.25 * 94 / 95) < 0.02
    assert noisy.min() >= 0 and noisy.max() < 96


def test_the_placeholder_is_never_drawn():
    tokens = jnp.full((256, 64), 7, jnp.int32)
    mask = jnp.ones(tokens.shape, jnp.float32)
    for placeholder in (0, 5, 9):
        noisy = np.asarray(
            noisy_targets(jax.random.key(1), tokens, mask, 0.9, vocab_size=10, placeholder_id=placeholder)
        )
        assert not (noisy == placeholder).any()
        assert set(np.unique(noisy)) == set(range(10)) - {placeholder}


@pytest.mark.parametrize("share", [-0.1, 1.0])
def test_a_share_outside_0_1_is_refused_with_the_key(share):
    with pytest.raises(ConfigError, match="target_input_noise"):
        SpeechLossConfig(target_input_noise=share)
