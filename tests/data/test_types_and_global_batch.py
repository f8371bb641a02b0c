"""The Batch contract (padding, abstract shapes, counts) and global arrays over a device mesh."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec

from jaxspeech.data.global_batch import batch_mesh_axes, make_global_batch
from jaxspeech.data.pipeline import DataPipeline, PipelineConfig
from jaxspeech.data.sources import ManifestSource
from jaxspeech.sharding.mesh import make_mesh
from jaxspeech.types import Batch, BatchShape


def test_padding_batch_has_the_shapes_and_no_examples():
    shape = BatchShape(batch_size=4, clips=2, frames=30, tokens=12, n_mels=80)
    batch = Batch.padding(shape)
    assert batch.features.shape == (4, 2, 30, 80) and batch.tokens.shape == (4, 12)
    assert batch.example_ids.dtype == np.int64 and (batch.example_ids == -1).all()
    assert int(batch.num_examples) == 0 and batch.weights.sum() == 0 and batch.audio is None
    raw = Batch.padding(BatchShape(4, 1, 30, 12, 80, audio_samples=4800))
    assert raw.features is None and raw.audio.shape == (4, 1, 4800)


def test_abstract_batch_matches_a_device_batch_and_compiles():
    shape = BatchShape(batch_size=2, clips=1, frames=10, tokens=5, n_mels=8)
    abstract = Batch.abstract(shape)
    assert abstract.features == jax.ShapeDtypeStruct((2, 1, 10, 8), jnp.float32)
    assert abstract.example_ids.dtype == jnp.int32  # int64 ids are int32 on device without x64
    device = jax.device_put(Batch.padding(shape))
    assert jax.tree.map(lambda x: (x.shape, x.dtype), device) == jax.tree.map(lambda x: (x.shape, x.dtype), abstract)
    lowered = jax.jit(lambda b: (b.features.sum(axis=(1, 2, 3)) * b.weights).sum()).lower(abstract)
    assert float(lowered.compile()(device)) == 0.0


def test_num_examples_counts_filled_clip_slots():
    batch = Batch.padding(BatchShape(3, 2, 4, 0, 8))
    batch = batch.replace(example_ids=np.array([[5, 6], [7, -1], [-1, -1]]))
    assert int(batch.num_examples) == 3
    assert int(jax.jit(lambda b: b.num_examples)(batch)) == 3


def test_global_batch_is_sharded_over_the_batch_axes(small_manifest):
    mesh = make_mesh({"data": 2, "fsdp": 2, "tensor": 2})
    assert batch_mesh_axes() == ("data", "fsdp")
    config = PipelineConfig(bucket_frames=(100, 200), frame_budget=800, n_mels=16, batch_size_multiple=4, num_epochs=1)
    pipeline = DataPipeline(ManifestSource(small_manifest), config, process_index=0, process_count=1)
    assert all(s.batch_size % 4 == 0 for s in pipeline.batch_shapes())
    host_batch = next(iter(pipeline))
    device_batch = make_global_batch(host_batch.batch, mesh)
    assert device_batch.features.sharding.spec == PartitionSpec(("data", "fsdp"), None, None, None)
    assert device_batch.weights.sharding.spec == PartitionSpec(("data", "fsdp"))
    assert device_batch.example_ids.dtype == jnp.int32 and device_batch.audio is None
    np.testing.assert_array_equal(np.asarray(device_batch.features), host_batch.batch.features)
    np.testing.assert_array_equal(np.asarray(device_batch.example_ids), host_batch.batch.example_ids)
    rows_per_shard = host_batch.batch.weights.shape[0] // 4
    assert {s.data.shape[0] for s in device_batch.tokens.addressable_shards} == {rows_per_shard}


def test_global_batch_refuses_uneven_rows():
    mesh = make_mesh({"data": 2, "fsdp": 2, "tensor": 2})
    with pytest.raises(ValueError, match="cannot be split over mesh axes"):
        make_global_batch(Batch.padding(BatchShape(6, 1, 4, 2, 8)), mesh)
