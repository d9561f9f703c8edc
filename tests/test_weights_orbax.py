"""Tests of saving decoder weights with Orbax and restoring them onto a sharded mesh."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest
from flax import nnx

from ec_jax.model import config as config_lib
from ec_jax.model import params as params_lib
from ec_jax.model.decoder import Decoder
from ec_jax.model.testing import random_decoder, random_params
from ec_jax.weights import orbax_io

TOKENS = np.array([[5, 17, 42, 99, 3, 250, 7, 61]] * 2, np.int32)
# Logical axis -> mesh axis; every logical name the decoder uses must appear.
AXIS_RULES = {"heads": "model", "kv_heads": "model", "vocab": None, "embed": None,
              "head_dim": None, "mlp": None}


@nnx.jit
def forward(model: Decoder, tokens):
  return model.forward(tokens)


def mesh_shardings(config, mesh) -> dict:
  """Return {path: NamedSharding} with heads and kv_heads split over the `model` axis."""
  shardings = {}
  for path, axes in params_lib.logical_axes(config).items():
    spec = jax.sharding.PartitionSpec(*(AXIS_RULES[axis] for axis in axes))
    shardings[path] = jax.sharding.NamedSharding(mesh, spec)
  return shardings


def test_round_trip_onto_sharded_mesh(tmp_path):
  config = config_lib.tiny_llama()
  model = random_decoder(config, seed=31)
  orbax_io.save_decoder(tmp_path / "saved", model)
  assert orbax_io.read_config(tmp_path / "saved") == config

  mesh = jax.make_mesh((2, 4), ("data", "model"),
                       axis_types=(jax.sharding.AxisType.Auto,) * 2)
  restored = orbax_io.restore_decoder(tmp_path / "saved",
                                      shardings=mesh_shardings(config, mesh))
  q_proj = restored.layers[1].attn.q_proj[...]
  assert q_proj.sharding.spec == jax.sharding.PartitionSpec(None, "model", None)
  assert q_proj.sharding.mesh.shape == {"data": 2, "model": 4}
  # 8 query heads over 4 devices of the model axis: 2 heads per shard.
  assert q_proj.addressable_shards[0].data.shape == (64, 2, 8)
  k_proj = restored.layers[0].attn.k_proj[...]
  assert k_proj.sharding.spec == jax.sharding.PartitionSpec(None, "model", None)
  assert k_proj.addressable_shards[0].data.shape == (64, 1, 8)
  embedding = restored.embedder.embedding[...]
  assert embedding.sharding.is_fully_replicated

  original = params_lib.flatten_params(nnx.split(model)[1])
  for path, value in params_lib.flatten_params(nnx.split(restored)[1]).items():
    np.testing.assert_array_equal(np.asarray(value), np.asarray(original[path]), str(path))
  np.testing.assert_allclose(forward(restored, jnp.asarray(TOKENS)),
                             forward(model, jnp.asarray(TOKENS)), atol=1e-5, rtol=0)


def test_restore_casts_to_bfloat16(tmp_path):
  config = config_lib.tiny_qwen2()
  params = random_params(config, seed=32)
  orbax_io.save_params(tmp_path / "saved", config, params)
  restored = orbax_io.restore_decoder(tmp_path / "saved", param_dtype="bfloat16")
  assert restored.config.compute_dtype == "bfloat16"
  bias = restored.layers[0].attn.k_bias[...]
  assert bias.dtype == jnp.bfloat16
  expected = params[("layers", 0, "attn", "k_bias")].astype(jnp.bfloat16)
  np.testing.assert_array_equal(np.asarray(bias), expected)


def test_save_rejects_existing_folder(tmp_path):
  config = config_lib.tiny_llama()
  (tmp_path / "saved").mkdir()
  with pytest.raises(FileExistsError, match="already exists; choose a new folder"):
    orbax_io.save_params(tmp_path / "saved", config, random_params(config))


def test_save_rejects_mismatched_params(tmp_path):
  config = config_lib.tiny_llama()
  params = random_params(config)
  del params[("final_norm", "scale")]
  with pytest.raises(ValueError, match=r"missing \[\('final_norm', 'scale'\)\]"):
    orbax_io.save_params(tmp_path / "saved", config, params)


def test_restore_reports_missing_folder(tmp_path):
  with pytest.raises(FileNotFoundError, match="No model_config.json in"):
    orbax_io.restore_decoder(tmp_path / "absent")


def test_restore_reads_single_save_checkpoint(tmp_path):
  # Folders written before save_tensors existed hold one StandardCheckpointer save.
  config = config_lib.tiny_llama()
  params = random_params(config, seed=33)
  folder = tmp_path / "saved"
  folder.mkdir()
  with ocp.StandardCheckpointer() as checkpointer:
    checkpointer.save(folder / orbax_io.PARAMS_DIR, params_lib.unflatten_params(params))
  (folder / orbax_io.CONFIG_FILE).write_text(json.dumps(config.to_dict()))

  restored = params_lib.flatten_params(nnx.split(orbax_io.restore_decoder(folder))[1])
  for path, value in params.items():
    np.testing.assert_array_equal(np.asarray(restored[path]), value, str(path))
