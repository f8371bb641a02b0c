"""TrainConfig from ml_collections: nested sections, defaults, and unknown keys rejected by name."""

import re

import ml_collections
import pytest

from jaxspeech.layers import axes
from jaxspeech.train.config import TrainConfig, train_config_from_dict, train_config_to_dict
from jaxspeech.train.optim import OptimizerConfig


def _config_dict() -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.total_steps = 300
    config.mesh = {"data": 2, "fsdp": -1}
    config.optimizer = ml_collections.ConfigDict({"learning_rate": 3e-4, "warmup_steps": 30})
    config.optimizer.lr_rules = [["encoder/.*", None], ["connector/.*", 1e-3]]
    config.checkpoint = {"every_steps": 100, "max_to_keep": 2}
    return config


def test_builds_nested_frozen_config_from_a_config_dict():
    config = train_config_from_dict(_config_dict())
    assert isinstance(config, TrainConfig) and isinstance(config.optimizer, OptimizerConfig)
    assert config.total_steps == 300 and config.mesh == {"data": 2, "fsdp": -1}
    assert config.optimizer.lr_rules == (("encoder/.*", None), ("connector/.*", 1e-3))
    assert config.optimizer.decay_steps == 300  # defaults to total_steps
    assert config.checkpoint.max_to_keep == 2 and config.checkpoint.async_save is True
    assert config.sharding_rules == axes.DEFAULT_RULES
    with pytest.raises(AttributeError):
        config.total_steps = 5
    assert train_config_from_dict(train_config_to_dict(config)) == config


@pytest.mark.parametrize(
    "path, where",
    [(("totl_steps",), "TrainConfig"), (("optimizer", "lerning_rate"), "TrainConfig.optimizer"), (("checkpoint", "keep"), "TrainConfig.checkpoint")],
)
def test_unknown_keys_are_rejected_with_the_valid_ones_listed(path, where):
    values = _config_dict().to_dict()
    section = values
    for key in path[:-1]:
        section = section[key]
    section[path[-1]] = 1
    with pytest.raises(ValueError, match=re.escape(f"unknown key(s) ['{path[-1]}'] in {where}; valid keys are [")) as error:
        train_config_from_dict(values)
    valid = {"TrainConfig": "total_steps", "TrainConfig.optimizer": "learning_rate", "TrainConfig.checkpoint": "every_steps"}[where]
    assert f"'{valid}'" in str(error.value)


def test_bad_values_are_rejected():
    with pytest.raises(ValueError, match="grad_accum_steps must be >= 1"):
        train_config_from_dict({"grad_accum_steps": 0})
    with pytest.raises(ValueError, match=r"decay_steps \(10\) must exceed warmup_steps \(20\)"):
        train_config_from_dict({"total_steps": 10, "optimizer": {"warmup_steps": 20}})
    with pytest.raises(TypeError, match="TrainConfig.optimizer must be a mapping"):
        train_config_from_dict({"optimizer": 3})
