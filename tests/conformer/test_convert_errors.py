"""The Parakeet converter names the tensor (and expected vs found shape) on bad checkpoints."""

import json
import os

import numpy as np
import pytest

pytest.importorskip("transformers")

from jaxspeech.convert.parakeet import config_from_hf, load_parakeet  # noqa: E402
from jaxspeech.convert.safetensors_io import CheckpointError, SafetensorsReader, write_safetensors  # noqa: E402
from jaxspeech.testing import hf_parakeet  # noqa: E402

DEPTHWISE = "layers.0.conv.depthwise_conv.weight"  # [C=32, 1, K=5]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """(config.json dict, {name: tensor}) of a random one-layer HF ParakeetEncoder."""
    path = tmp_path_factory.mktemp("parakeet")
    hf_parakeet.encoder(num_hidden_layers=1).save_pretrained(path)
    with open(path / "config.json") as f:
        config = json.load(f)
    reader = SafetensorsReader(str(path))
    return config, {name: np.array(reader.get(name)) for name in reader.keys()}


def _write(directory, config, tensors):
    write_safetensors(tensors, str(directory))
    with open(os.path.join(directory, "config.json"), "w") as f:
        json.dump(config, f)
    return str(directory)


def test_intact_checkpoint_loads(checkpoint, tmp_path):
    config, tensors = checkpoint
    loaded = load_parakeet(_write(tmp_path, config, tensors), scan_layers=False)
    assert loaded.config.num_layers == 1 and loaded.vocab_size is None
    kernel = loaded.variables["params"]["layers_0"]["conv"]["depthwise"]["kernel"]
    np.testing.assert_array_equal(kernel, tensors[DEPTHWISE][:, 0, :].T)


def test_missing_tensor_is_named_with_expected_shape(checkpoint, tmp_path):
    config, tensors = checkpoint
    tensors = {k: v for k, v in tensors.items() if k != DEPTHWISE}
    with pytest.raises(CheckpointError, match=rf"tensor '{DEPTHWISE}' is missing \(expected shape \(32, 1, 5\)\)"):
        load_parakeet(_write(tmp_path, config, tensors))


def test_wrong_shape_is_named_with_expected_and_found(checkpoint, tmp_path):
    config, tensors = checkpoint
    tensors = dict(tensors, **{DEPTHWISE: np.zeros((32, 1, 7), np.float32)})  # kernel 7, config says 5
    with pytest.raises(CheckpointError, match=rf"'{DEPTHWISE}' has shape \(32, 1, 7\), expected \(32, 1, 5\)"):
        load_parakeet(_write(tmp_path, config, tensors))


def test_config_with_more_layers_than_tensors(checkpoint, tmp_path):
    config, tensors = checkpoint
    with pytest.raises(CheckpointError, match=r"tensor 'layers\.1\.feed_forward1\.linear1\.weight' is missing"):
        load_parakeet(_write(tmp_path, dict(config, num_hidden_layers=2), tensors))


def test_unused_tensor_is_reported(checkpoint, tmp_path):
    config, tensors = checkpoint
    tensors = dict(tensors, **{"layers.0.extra.weight": np.zeros(3, np.float32)})
    with pytest.raises(
        CheckpointError, match=r"holds tensors the Conformer model does not use: \['layers\.0\.extra\.weight'\]"
    ):
        load_parakeet(_write(tmp_path, config, tensors))


def test_unreadable_or_unsupported_config(tmp_path):
    with pytest.raises(CheckpointError, match="config.json: cannot be read as the model config"):
        load_parakeet(str(tmp_path))
    with pytest.raises(CheckpointError, match="has model_type 'llama'"):
        config_from_hf({"model_type": "llama"})
    with pytest.raises(CheckpointError, match="has subsampling_conv_stride 3, expected 2"):
        config_from_hf({"model_type": "parakeet_encoder", "subsampling_conv_stride": 3})
