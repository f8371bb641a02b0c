"""TrainConfig from ml_collections: nested sections, defaults, and unknown keys rejected by name."""

import re

import ml_collections
import pytest

from jaxspeech.layers import axes
from jaxspeech.errors import ConfigError
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
    [
        (("totl_steps",), "train"),
        (("optimizer", "lerning_rate"), "train.optimizer"),
        (("checkpoint", "keep"), "train.checkpoint"),
    ],
)
def test_unknown_keys_are_rejected_with_the_valid_ones_listed(path, where):
    values = _config_dict().to_dict()
    section = values
    for key in path[:-1]:
        section = section[key]
    section[path[-1]] = 1
    with pytest.raises(
        ValueError, match=re.escape(f"unknown key(s) ['{path[-1]}'] in {where}; valid keys are [")
    ) as error:
        train_config_from_dict(values)
    valid = {"train": "total_steps", "train.optimizer": "learning_rate", "train.checkpoint": "every_steps"}[where]
    assert f"'{valid}'" in str(error.value)


def test_bad_values_are_rejected():
    with pytest.raises(ConfigError, match="train.grad_accum_steps: expected an integer >= 1, got 0"):
        train_config_from_dict({"grad_accum_steps": 0})
    with pytest.raises(ValueError, match="grad_accum_steps must be >= 1"):  # built directly, the dataclass checks
        TrainConfig(grad_accum_steps=0)
    with pytest.raises(ConfigError, match=r"train: decay_steps \(10\) must exceed warmup_steps \(20\)"):
        train_config_from_dict({"total_steps": 10, "optimizer": {"warmup_steps": 20}})
    with pytest.raises(ConfigError, match="train.optimizer: expected a mapping of its fields, got 3"):
        train_config_from_dict({"optimizer": 3})


@pytest.mark.parametrize(
    "values, key, expected",
    [
        ({"checkpoint": {"restore_data_state": "no"}}, "train.checkpoint.restore_data_state", "True or False"),
        ({"checkpoint": {"async_save": "yes"}}, "train.checkpoint.async_save", "True or False"),
        ({"time_budget_s": "10min"}, "train.time_budget_s", "a finite number >= 0 or None"),
        ({"time_budget_s": float("nan")}, "train.time_budget_s", "a finite number >= 0 or None"),
        ({"time_budget_s": -60.0}, "train.time_budget_s", "a finite number >= 0 or None"),
        ({"grad_accum_steps": "two"}, "train.grad_accum_steps", "an integer >= 1"),
        ({"total_steps": 2.5}, "train.total_steps", "an integer >= 1"),
        ({"checkpoint": {"every_steps": -5}}, "train.checkpoint.every_steps", "an integer >= 0"),
        ({"optimizer": {"learning_rate": float("inf")}}, "train.optimizer.learning_rate", "a finite number"),
        ({"optimizer": {"no_decay_rules": ("bias", 3)}}, "train.optimizer.no_decay_rules", "a tuple of (a string)"),
    ],
)
def test_values_of_the_wrong_type_or_range_are_refused_naming_the_key(values, key, expected):
    with pytest.raises(ConfigError) as error:
        train_config_from_dict(values)
    assert error.value.where == key and f"expected {expected}, got" in str(error.value)
