"""Tests of converting GGUF and safetensors weights to Orbax one group of tensors at a time."""

import weakref

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from ec_jax.engine import tiny_model
from ec_jax.model import config as config_lib
from ec_jax.model import params as params_lib
from ec_jax.model.testing import random_params
from ec_jax.weights import __main__ as cli
from ec_jax.weights import convert
from ec_jax.weights import embedded
from ec_jax.weights import gguf_reader
from ec_jax.weights import orbax_io
from test_weights_gguf import write_gguf
from test_weights_hf import write_checkpoint


class _TrackedTensors:
  """Yields copies of params and records, before each yield, the bytes of earlier copies alive."""

  def __init__(self, params: dict):
    self._params = params
    self._yielded: list[weakref.ref] = []
    self.alive_bytes: list[int] = []

  def __iter__(self):
    for path, value in self._params.items():
      self.alive_bytes.append(sum(ref().nbytes for ref in self._yielded if ref() is not None))
      copy = np.array(value, np.float32)
      self._yielded.append(weakref.ref(copy))
      yield path, copy
      del copy


def _restored_params(folder) -> dict:
  restored = orbax_io.restore_decoder(folder)
  return params_lib.flatten_params(nnx.split(restored)[1])


def _count_writes(monkeypatch) -> list[int]:
  """Count the tensors of every group that save_tensors writes."""
  writes = []
  write_group = orbax_io._write_group

  def counting_write(params_dir, group):
    writes.append(len(group))
    write_group(params_dir, group)

  monkeypatch.setattr(orbax_io, "_write_group", counting_write)
  return writes


def test_save_tensors_keeps_one_tensor(tmp_path, monkeypatch):
  config = config_lib.tiny_llama()
  params = random_params(config, seed=41)
  tensors = _TrackedTensors(params)
  writes = _count_writes(monkeypatch)

  orbax_io.save_tensors(tmp_path / "saved", config, tensors, group_bytes=0)

  # Every earlier tensor is freed before the next one is made.
  assert tensors.alive_bytes == [0] * len(params)
  assert writes == [1] * len(params)
  restored = _restored_params(tmp_path / "saved")
  for path, value in params.items():
    np.testing.assert_array_equal(np.asarray(restored[path]), value, str(path))


def test_save_tensors_groups_by_bytes(tmp_path, monkeypatch):
  config = config_lib.tiny_qwen2()
  params = random_params(config, seed=42)
  group_bytes = 64 * 1024
  tensors = _TrackedTensors(params)
  writes = _count_writes(monkeypatch)

  orbax_io.save_tensors(tmp_path / "saved", config, tensors, group_bytes=group_bytes)

  assert max(tensors.alive_bytes) < group_bytes
  assert 1 < len(writes) < len(params)
  assert sum(writes) == len(params)
  restored = _restored_params(tmp_path / "saved")
  for path, value in params.items():
    np.testing.assert_array_equal(np.asarray(restored[path]), value, str(path))


def test_save_tensors_stores_bfloat16(tmp_path):
  config = config_lib.tiny_llama()
  params = random_params(config, seed=43)
  orbax_io.save_tensors(tmp_path / "saved", config, params.items(), dtype="bfloat16")

  saved_config = orbax_io.read_config(tmp_path / "saved")
  assert saved_config.param_dtype == "bfloat16"
  restored = _restored_params(tmp_path / "saved")
  path = ("layers", 1, "mlp", "down_proj")
  assert restored[path].dtype == jnp.bfloat16
  np.testing.assert_array_equal(np.asarray(restored[path]), params[path].astype(jnp.bfloat16))


@pytest.mark.parametrize("change,message", [
    ("drop", r"missing \[\('final_norm', 'scale'\)\]"),
    ("reshape", r"Parameter \('final_norm', 'scale'\) has shape \(8, 8\)"),
    ("repeat", r"Parameter \('final_norm', 'scale'\) appears twice"),
    ("unknown", r"Parameter \('final_norm', 'bias'\) is not a parameter"),
])
def test_save_tensors_rejects_bad_tensors(tmp_path, change, message):
  config = config_lib.tiny_llama()
  params = random_params(config, seed=44)
  items = [(path, value) for path, value in params.items() if path != ("final_norm", "scale")]
  scale = params[("final_norm", "scale")]
  if change == "reshape":
    items.append((("final_norm", "scale"), scale.reshape(8, 8)))
  elif change == "repeat":
    items += [(("final_norm", "scale"), scale)] * 2
  elif change == "unknown":
    items.append((("final_norm", "bias"), scale))

  with pytest.raises(ValueError, match=message):
    orbax_io.save_tensors(tmp_path / "saved", config, items, group_bytes=0)
  # The partly written folder is removed.
  assert list(tmp_path.iterdir()) == []


def test_gguf_tensors_are_read_lazily(tmp_path, monkeypatch):
  config = config_lib.tiny_llama()
  source = write_gguf(tmp_path / "model.gguf", config, random_params(config, seed=45), "llama")
  calls = []
  dequantize = gguf_reader.dequantize_tensor

  def counting_dequantize(tensor):
    calls.append(tensor.name)
    return dequantize(tensor)

  monkeypatch.setattr(gguf_reader, "dequantize_tensor", counting_dequantize)
  read_config, tensors = convert.open_source(source)
  assert read_config == config
  assert calls == []
  next(tensors)
  assert len(calls) == 1


def test_convert_gguf_matches_reader(tmp_path):
  config = config_lib.tiny_llama()
  source = write_gguf(tmp_path / "model.gguf", config, random_params(config, seed=46), "llama")
  # write_gguf stores no tokenizer metadata.
  folder = convert.convert(source, tmp_path / "orbax", group_bytes=0, weights_only=True)

  _, expected = gguf_reader.read_gguf(source)
  assert orbax_io.read_config(folder) == config
  restored = _restored_params(folder)
  assert set(restored) == set(expected)
  for path, value in expected.items():
    np.testing.assert_array_equal(np.asarray(restored[path]), value, str(path))


def test_convert_sharded_hf_checkpoint(tmp_path):
  config = config_lib.tiny_qwen2()
  params = random_params(config, seed=47)
  source = write_checkpoint(tmp_path / "hf", config, params, "qwen2", shards=2)
  folder = convert.convert(source, tmp_path / "orbax", weights_only=True)

  assert orbax_io.read_config(folder) == config
  restored = _restored_params(folder)
  for path, value in params.items():
    np.testing.assert_array_equal(np.asarray(restored[path]), value, str(path))


def test_cli_convert(tmp_path, capsys):
  config = config_lib.tiny_qwen2()
  source = write_gguf(tmp_path / "model.gguf", config, random_params(config, seed=48), "qwen2")
  destination = tmp_path / "orbax"

  assert cli.main(["convert", str(source), str(destination), "--dtype", "bfloat16",
                   "--group-mib", "0.01", "--weights-only"]) == 0
  assert str(destination) in capsys.readouterr().out
  assert orbax_io.read_config(destination).param_dtype == "bfloat16"
  assert not (destination / "tokenizer.json").exists()

  assert cli.main(["convert", str(source), str(destination)]) == 1
  assert "already exists; choose a new folder" in capsys.readouterr().err
  assert cli.main(["convert", str(tmp_path / "absent.gguf"), str(tmp_path / "other")]) == 1
  assert "absent.gguf" in capsys.readouterr().err


def test_convert_without_tokenizer_is_rejected(tmp_path, capsys):
  config = config_lib.tiny_llama()
  source = write_checkpoint(tmp_path / "hf", config, random_params(config, seed=49), "llama")
  destination = tmp_path / "orbax"

  with pytest.raises(ValueError) as raised:
    convert.convert(source, destination)
  message = str(raised.value)
  assert f"Cannot build the tokenizer of {source}" in message
  assert "tokenizer.json does not exist" in message
  assert "--weights-only" in message
  assert not destination.exists()

  assert cli.main(["convert", str(source), str(destination)]) == 1
  assert "--weights-only" in capsys.readouterr().err
  assert not destination.exists()


def test_convert_rejects_tokenizer_larger_than_model(tmp_path):
  config = config_lib.tiny_llama(vocab_size=200)
  source = write_checkpoint(tmp_path / "hf", config, random_params(config, seed=50), "llama")
  # 259 ids, more than the 200 embeddings.
  tiny_model.byte_tokenizer().backend.save(str(source / "tokenizer.json"))

  with pytest.raises(ValueError, match="has 259 ids but the model only 200 embeddings"):
    convert.convert(source, tmp_path / "orbax")
  assert not (tmp_path / "orbax").exists()


def test_cli_defaults_match_library():
  assert cli.DEFAULT_GROUP_MIB * 2**20 == orbax_io.DEFAULT_GROUP_BYTES
  assert cli.DTYPE_NAMES == tuple(sorted(config_lib.DTYPES))
  assert embedded.CONVERTED_CONFIG_FILE == orbax_io.CONFIG_FILE
  assert embedded.CONVERTED_PARAMS_DIR == orbax_io.PARAMS_DIR
