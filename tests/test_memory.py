"""Memory calculator: formulas checked against real sharded arrays on 8 fake CPU devices."""

import json
import pathlib
import subprocess
import sys

import jax
import numpy as np
import pytest

from ec_jax import parallel
from ec_jax.model import config as config_lib
from ec_jax.model import params as params_lib
from ec_jax.parallel import memory

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent


def _bytes_on_one_device(arrays, device):
  total = 0
  for array in arrays:
    for shard in array.addressable_shards:
      if shard.device == device:
        total += shard.data.nbytes
  return total


@pytest.mark.parametrize("config", [config_lib.tiny_llama(), config_lib.tiny_qwen2(),
                                    config_lib.tiny_llama(vocab_size=321)],
                         ids=["tied", "untied_with_bias", "odd_vocab"])
def test_parameter_count_matches_decoder(config):
  shape = memory.ModelShape.from_model_config(config)
  expected = sum(int(np.prod(size)) for size in params_lib.param_shapes(config).values())
  assert shape.num_parameters() == expected


@pytest.mark.parametrize("config,data,model", [
    (config_lib.tiny_llama(), 2, 4),
    (config_lib.tiny_qwen2(), 4, 2),
    (config_lib.tiny_llama(vocab_size=321), 4, 2),
], ids=["llama_2x4", "qwen2_4x2", "odd_vocab_4x2"])
def test_chip_memory_matches_sharded_arrays(config, data, model):
  mesh = parallel.make_mesh(data=data, model=model)
  workload = memory.Workload(num_samples=3, batch_problems=2, seq_len=10, param_bytes=2,
                             cache_bytes=2)
  estimate = memory.chip_memory(memory.ModelShape.from_model_config(config), workload, data,
                                model)
  device = mesh.devices.flat[0]

  shardings = parallel.param_shardings(config, mesh)
  weights = [jax.device_put(np.zeros(size, np.float16), shardings[path])
             for path, size in params_lib.param_shapes(config).items()]
  assert estimate.weights == _bytes_on_one_device(weights, device)

  rows, _ = parallel.pad_rows(workload.rows, data)
  cache_shape = (rows, config.num_kv_heads, workload.seq_len, config.head_dim)
  layer = jax.device_put(np.zeros(cache_shape, np.float16), parallel.cache_sharding(mesh))
  # Keys and values of every layer have this layout.
  cache_bytes = 2 * config.num_layers * _bytes_on_one_device([layer], device)
  assert estimate.kv_cache == cache_bytes


def test_kv_cache_qwen72b_by_hand():
  shape = memory.PRESETS["qwen2.5-72b"]
  workload = memory.Workload(num_samples=64, batch_problems=1, seq_len=32768)
  # 2 x 80 layers x 8 heads x 128 x 2 bytes = 327,680 bytes per token, times 64 x 32,768 tokens.
  assert memory.total_kv_cache_bytes(shape, workload) == 327_680 * 64 * 32_768
  assert memory.total_kv_cache_bytes(shape, workload) == 640 * memory.GIB
  per_chip = memory.chip_memory(shape, workload, data=2, model=8)
  assert per_chip.kv_cache == 40 * memory.GIB


@pytest.mark.parametrize("name,billions", [
    ("qwen2.5-14b", 14.8), ("qwen2.5-32b", 32.8), ("qwen2.5-72b", 72.7),
    ("qwen3-coder-480b-a35b", 480.2)])
def test_preset_parameter_counts(name, billions):
  assert round(memory.PRESETS[name].num_parameters() / 1e9, 1) == billions


def test_chip_memory_rejects_model_axis():
  with pytest.raises(ValueError) as error:
    memory.chip_memory(memory.PRESETS["qwen2.5-14b"], memory.Workload(), data=1, model=3)
  assert "does not divide Qwen2.5-14B's num_kv_heads = 8" in str(error.value)
  assert "[1, 2, 4, 8]" in str(error.value)


def test_smallest_fitting_mesh():
  shape = memory.PRESETS["qwen2.5-72b"]
  workload = memory.Workload()
  found = memory.smallest_fitting_mesh(shape, workload, memory.CHIPS["tpu-v5p"][0])
  assert found is not None
  data, model, chip = found
  assert (data, model) == (2, 8)
  assert chip.total <= 0.9 * memory.CHIPS["tpu-v5p"][0]
  # With 8 chips (1 x 8) the 80 GiB of KV cache per chip does not fit in 95 GiB x 0.9.
  assert memory.chip_memory(shape, workload, 1, 8).total > 0.9 * memory.CHIPS["tpu-v5p"][0]


def test_moe_does_not_fit_h100():
  shape = memory.PRESETS["qwen3-coder-480b-a35b"]
  assert memory.smallest_fitting_mesh(shape, memory.Workload(),
                                      memory.CHIPS["h100"][0]) is None


def test_shape_from_hf_config(tmp_path):
  values = {"model_type": "qwen2", "vocab_size": 384, "hidden_size": 64,
            "intermediate_size": 96, "num_hidden_layers": 2, "num_attention_heads": 8,
            "num_key_value_heads": 2, "tie_word_embeddings": False}
  path = tmp_path / "tiny" / "config.json"
  path.parent.mkdir()
  path.write_text(json.dumps(values))
  shape = memory.shape_from_argument(str(path))
  assert shape.name == "tiny"
  assert shape.num_parameters() == memory.ModelShape.from_model_config(
      config_lib.tiny_qwen2()).num_parameters()


def test_shape_from_unknown_name():
  with pytest.raises(ValueError, match="neither a preset"):
    memory.shape_from_argument("qwen-1000b")


def _run_cli(*flags):
  return subprocess.run([sys.executable, "-m", "ec_jax.parallel.memory", *flags],
                        cwd=REPO_ROOT, capture_output=True, text=True, timeout=120, check=False)


def test_cli_table_and_breakdown():
  table = _run_cli("--chip=tpu-v5p")
  assert table.returncode == 0, table.stderr
  for name in ("Qwen2.5-14B", "Qwen2.5-32B", "Qwen2.5-72B", "Qwen3-Coder-480B-A35B"):
    assert name in table.stdout
  assert "| Qwen2.5-72B | 72.7B | 135.4 | 640.0 | 16 (2 x 8), 57.0 |" in table.stdout
  assert "does not run mixture-of-experts models" in table.stdout

  breakdown = _run_cli("--model=qwen2.5-72b", "--mesh_data=2", "--mesh_model=8",
                       "--chip=h100")
  assert breakdown.returncode == 0, breakdown.stderr
  assert "KV cache      40.000 GiB per chip" in breakdown.stdout
  assert "H100 (80 GB): fits" in breakdown.stdout


def test_cli_invalid_mesh():
  result = _run_cli("--model=qwen2.5-14b", "--mesh_data=1", "--mesh_model=3")
  assert result.returncode == 1
  assert "memory: error: mesh model size 3 does not divide" in result.stderr
