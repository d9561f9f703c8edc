"""Mesh construction, the logical-axis table and decoder shardings on 8 fake CPU devices."""

import logging
import types

import jax
from jax.sharding import AxisType, PartitionSpec as P
from ml_collections import config_dict
import numpy as np
import pytest
from flax import nnx

from ec_jax import parallel
from ec_jax.model import config as config_lib
from ec_jax.model import params as params_lib
from ec_jax.model import testing
from ec_jax.parallel import mesh as mesh_lib


@pytest.mark.parametrize("data,model", [(8, 1), (4, 2), (2, 4)])
def test_make_mesh_shapes(data, model):
  mesh = parallel.make_mesh(data=data, model=model)
  assert dict(mesh.shape) == {"data": data, "model": model}
  assert mesh.axis_types == (AxisType.Auto, AxisType.Auto)
  assert mesh.devices.size == jax.device_count() == 8


def test_make_mesh_data_minus_one_takes_rest():
  mesh = parallel.make_mesh(model=2)
  assert dict(mesh.shape) == {"data": 4, "model": 2}


def test_make_mesh_on_given_devices():
  mesh = parallel.make_mesh(data=-1, model=2, devices=jax.devices()[:4])
  assert dict(mesh.shape) == {"data": 2, "model": 2}
  assert set(mesh.devices.flat) == set(jax.devices()[:4])


@pytest.mark.parametrize("data,model,fragments", [
    (-1, 3, ["mesh.model = 3", "device count 8", "divisor of 8"]),
    (3, 2, ["3 x 2 = 6", "8 devices", "mesh.data = -1"]),
    (0, 1, ["mesh.data", "got 0"]),
    (-1, 0, ["mesh.model", "got 0"]),
    (2.0, 1, ["mesh.data must be an integer", "2.0"]),
])
def test_make_mesh_errors(data, model, fragments):
  with pytest.raises(ValueError) as error:
    parallel.make_mesh(data=data, model=model)
  for fragment in fragments:
    assert fragment in str(error.value)


def test_mesh_from_config():
  config = config_dict.ConfigDict({"mesh": {"data": -1, "model": 4}})
  assert dict(parallel.mesh_from_config(config).shape) == {"data": 2, "model": 4}
  assert dict(parallel.mesh_from_config({}).shape) == {"data": 8, "model": 1}


def test_describe_mesh():
  text = parallel.describe_mesh(parallel.make_mesh(data=4, model=2))
  assert "data=4" in text
  assert "model=2" in text
  assert "cpu" in text


def test_logical_to_spec_rules():
  assert parallel.logical_to_spec(("embed", "heads", "head_dim")) == P(None, "model", None)
  assert parallel.logical_to_spec(("embed", "kv_heads", "head_dim")) == P(None, "model", None)
  assert parallel.logical_to_spec(("vocab", "embed")) == P("model", None)
  assert parallel.logical_to_spec(("embed", "mlp")) == P(None, "model")
  assert parallel.logical_to_spec(("batch", None)) == P("data", None)
  assert parallel.logical_to_spec(("batch", "kv_heads", "cache_length", "head_dim")) == P(
      "data", "model", None, None)


def test_logical_to_spec_collision():
  with pytest.raises(ValueError) as error:
    parallel.logical_to_spec(("heads", "mlp"))
  assert "mesh axis 'model'" in str(error.value)
  assert "dimensions 0 and 1" in str(error.value)


def test_logical_to_spec_custom_rules_collision():
  rules = (("batch", "data"), ("time", "data"))
  with pytest.raises(ValueError, match="mesh axis 'data' to dimensions 0 and 1"):
    parallel.logical_to_spec(("batch", "time"), rules)


def test_logical_to_spec_unknown_name():
  with pytest.raises(ValueError) as error:
    parallel.logical_to_spec(("embed", "experts"))
  assert "'experts'" in str(error.value)
  assert "no rule" in str(error.value)


def test_param_shardings_tiny_llama_heads_on_model():
  config = config_lib.tiny_llama()
  mesh = parallel.make_mesh(data=2, model=4)
  shardings = parallel.param_shardings(config, mesh)
  layer = ("layers", 0)
  expected = {
      ("embedder", "embedding"): P("model", None),
      ("final_norm", "scale"): P(None),
      layer + ("attn", "q_proj"): P(None, "model", None),
      layer + ("attn", "k_proj"): P(None, "model", None),
      layer + ("attn", "v_proj"): P(None, "model", None),
      layer + ("attn", "o_proj"): P("model", None, None),
      layer + ("mlp", "gate_proj"): P(None, "model"),
      layer + ("mlp", "up_proj"): P(None, "model"),
      layer + ("mlp", "down_proj"): P("model", None),
      layer + ("attn_norm", "scale"): P(None),
  }
  for path, spec in expected.items():
    assert shardings[path].spec == spec, path
  assert set(shardings) == set(params_lib.param_shapes(config))
  for sharding in shardings.values():
    assert sharding.mesh.shape == mesh.shape


def test_param_shardings_split_whole_heads():
  config = config_lib.tiny_llama()
  mesh = parallel.make_mesh(data=2, model=4)
  shardings = parallel.param_shardings(config, mesh)
  path = ("layers", 1, "attn", "q_proj")
  shape = params_lib.param_shapes(config)[path]
  array = jax.device_put(np.zeros(shape, np.float32), shardings[path])
  shard_shapes = {shard.data.shape for shard in array.addressable_shards}
  assert shard_shapes == {(config.hidden_size, config.num_heads // 4, config.head_dim)}
  kv_path = ("layers", 1, "attn", "k_proj")
  kv = jax.device_put(np.zeros(params_lib.param_shapes(config)[kv_path], np.float32),
                      shardings[kv_path])
  assert {shard.data.shape[1] for shard in kv.addressable_shards} == {config.num_kv_heads // 4}


def test_param_shardings_qwen2_biases_and_lm_head():
  config = config_lib.tiny_qwen2()
  shardings = parallel.param_shardings(config, parallel.make_mesh(data=4, model=2))
  assert shardings[("lm_head",)].spec == P("model", None)
  assert shardings[("layers", 0, "attn", "q_bias")].spec == P("model", None)
  assert shardings[("layers", 0, "attn", "k_bias")].spec == P("model", None)


def test_param_shardings_model_axis_too_wide():
  config = config_lib.tiny_llama()  # 4 key/value heads.
  with pytest.raises(ValueError) as error:
    parallel.param_shardings(config, parallel.make_mesh(data=1, model=8))
  assert "mesh.model = 8" in str(error.value)
  assert "num_kv_heads = 4" in str(error.value)
  assert "[1, 2, 4]" in str(error.value)


def test_check_model_axis_query_heads():
  # 6 query heads over 2 key/value heads: model = 2 divides both, model = 4 divides neither.
  config = config_lib.tiny_llama(num_heads=6, num_kv_heads=2)
  parallel.check_model_axis(config, 2)
  with pytest.raises(ValueError, match="num_kv_heads = 2"):
    parallel.check_model_axis(config, 4)


def test_param_shardings_odd_vocab_replicated(caplog):
  config = config_lib.tiny_llama(vocab_size=321)
  with caplog.at_level(logging.WARNING):
    shardings = parallel.param_shardings(config, parallel.make_mesh(data=4, model=2))
  assert shardings[("embedder", "embedding")].spec == P(None, None)
  assert "replicated" in caplog.text
  assert "321" in caplog.text


def test_cache_and_batch_shardings():
  mesh = parallel.make_mesh(data=4, model=2)
  assert parallel.cache_sharding(mesh).spec == P("data", "model", None, None)
  assert parallel.batch_sharding(mesh, 3).spec == P("data", None, None)
  with pytest.raises(ValueError, match="ndim = 0"):
    parallel.batch_sharding(mesh, 0)


@pytest.mark.parametrize("rows,data,padded", [(10, 4, 12), (8, 4, 8), (0, 4, 0), (3, 1, 3)])
def test_pad_rows(rows, data, padded):
  count, mask = parallel.pad_rows(rows, data)
  assert count == padded
  assert mask.shape == (padded,)
  assert mask.dtype == bool
  assert int(mask.sum()) == rows
  assert mask[:rows].all()


@pytest.mark.parametrize("rows,data", [(-1, 4), (4, 0), (4.0, 2)])
def test_pad_rows_errors(rows, data):
  with pytest.raises(ValueError, match="must be an integer"):
    parallel.pad_rows(rows, data)


def test_sharded_forward_matches_one_device():
  config = config_lib.tiny_llama()
  params = testing.random_params(config)
  tokens = np.random.default_rng(0).integers(0, config.vocab_size, (8, 6), dtype=np.int32)

  def forward(model, batch):
    graphdef, state = nnx.split(model)
    run = jax.jit(lambda state, batch: nnx.merge(graphdef, state).forward(batch))
    return run(state, batch)

  expected = forward(params_lib.decoder_from_params(config, params), tokens)
  mesh = parallel.make_mesh(data=2, model=4)
  model = params_lib.decoder_from_params(config, params, parallel.param_shardings(config, mesh))
  logits = forward(model, jax.device_put(tokens, parallel.batch_sharding(mesh, 2)))

  assert logits.shape == expected.shape
  np.testing.assert_allclose(np.asarray(logits), np.asarray(expected), atol=2e-5, rtol=0)


def test_model_axis_crosses_processes():
  def devices(process_indices):
    return np.array([[types.SimpleNamespace(process_index=index) for index in row]
                     for row in process_indices], dtype=object)

  assert not mesh_lib.model_axis_crosses_processes(devices([[0, 0], [1, 1]]))
  assert mesh_lib.model_axis_crosses_processes(devices([[0, 1], [0, 1]]))
  assert not mesh_lib.model_axis_crosses_processes(devices([[0], [1]]))
