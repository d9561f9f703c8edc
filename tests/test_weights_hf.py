"""Tests of the Hugging Face checkpoint reader on folders written here with safetensors."""

import json
import os
import pathlib
import subprocess
import sys

import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest
from flax import nnx
from safetensors.numpy import save_file

from ec_jax.model import config as config_lib
from ec_jax.model import params as params_lib
from ec_jax.model.decoder import Decoder
from ec_jax.model.testing import random_params
from ec_jax.weights import hf_checkpoint

TOKENS = np.array([[5, 17, 42, 99, 3, 250, 7, 61]], np.int32)
REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]

# Model parameter path suffix -> Hugging Face name, written independently of the reader's table.
HF_LAYER_NAMES = {
    ("attn_norm", "scale"): "input_layernorm.weight",
    ("attn", "q_proj"): "self_attn.q_proj.weight",
    ("attn", "k_proj"): "self_attn.k_proj.weight",
    ("attn", "v_proj"): "self_attn.v_proj.weight",
    ("attn", "o_proj"): "self_attn.o_proj.weight",
    ("attn", "q_bias"): "self_attn.q_proj.bias",
    ("attn", "k_bias"): "self_attn.k_proj.bias",
    ("attn", "v_bias"): "self_attn.v_proj.bias",
    ("mlp_norm", "scale"): "post_attention_layernorm.weight",
    ("mlp", "gate_proj"): "mlp.gate_proj.weight",
    ("mlp", "up_proj"): "mlp.up_proj.weight",
    ("mlp", "down_proj"): "mlp.down_proj.weight",
}
HF_GLOBAL_NAMES = {
    ("embedder", "embedding"): "model.embed_tokens.weight",
    ("final_norm", "scale"): "model.norm.weight",
    ("lm_head",): "lm_head.weight",
}


def hf_name(path: tuple) -> str:
  if path in HF_GLOBAL_NAMES:
    return HF_GLOBAL_NAMES[path]
  return f"model.layers.{path[1]}.{HF_LAYER_NAMES[path[2:]]}"


def hf_config(config: config_lib.ModelConfig, model_type: str) -> dict:
  return {
      "architectures": ["Qwen2ForCausalLM" if model_type == "qwen2" else "LlamaForCausalLM"],
      "model_type": model_type,
      "vocab_size": config.vocab_size,
      "hidden_size": config.hidden_size,
      "intermediate_size": config.intermediate_size,
      "num_hidden_layers": config.num_layers,
      "num_attention_heads": config.num_heads,
      "num_key_value_heads": config.num_kv_heads,
      "rope_theta": config.rope_theta,
      "rms_norm_eps": config.rms_norm_eps,
      "tie_word_embeddings": config.tie_embeddings,
      "max_position_embeddings": config.max_position,
      "hidden_act": "silu",
      "rope_scaling": None,
      "torch_dtype": "float32",
  }


def write_checkpoint(
    directory: pathlib.Path,
    config: config_lib.ModelConfig,
    params: dict,
    model_type: str,
    shards: int = 1,
    dtype=np.float32,
    extra_tensors: dict | None = None,
) -> pathlib.Path:
  """Write params (model layout) as a Hugging Face checkpoint folder, sharded if shards > 1."""
  directory.mkdir(parents=True, exist_ok=True)
  (directory / "config.json").write_text(json.dumps(hf_config(config, model_type)))
  tensors = {
      hf_name(path): np.ascontiguousarray(
          params_lib.to_checkpoint_layout(path, value, config)).astype(dtype)
      for path, value in params.items()
  }
  tensors.update(extra_tensors or {})
  names = sorted(tensors)
  if shards == 1:
    save_file(tensors, str(directory / "model.safetensors"))
    return directory
  weight_map = {}
  for shard in range(shards):
    file_name = f"model-{shard + 1:05d}-of-{shards:05d}.safetensors"
    shard_names = names[shard::shards]
    save_file({name: tensors[name] for name in shard_names}, str(directory / file_name))
    weight_map.update({name: file_name for name in shard_names})
  index = {"metadata": {"total_size": 0}, "weight_map": weight_map}
  (directory / "model.safetensors.index.json").write_text(json.dumps(index))
  return directory


@nnx.jit
def forward(model: Decoder, tokens):
  return model.forward(tokens)


def logits_of(config, params) -> np.ndarray:
  return np.asarray(forward(params_lib.decoder_from_params(config, params), jnp.asarray(TOKENS)))


@pytest.fixture(scope="module")
def llama():
  config = config_lib.tiny_llama()
  return config, random_params(config, seed=21)


@pytest.fixture(scope="module")
def qwen2():
  config = config_lib.tiny_qwen2()
  return config, random_params(config, seed=22)


def test_name_mapping_table():
  config = config_lib.tiny_qwen2()
  cases = {
      ("model.embed_tokens.weight", (384, 64)): ("embedder", "embedding"),
      ("lm_head.weight", (384, 64)): ("lm_head",),
      ("model.norm.weight", (64,)): ("final_norm", "scale"),
      ("model.layers.1.input_layernorm.weight", (64,)): ("layers", 1, "attn_norm", "scale"),
      ("model.layers.0.self_attn.q_proj.weight", (64, 64)): ("layers", 0, "attn", "q_proj"),
      ("model.layers.0.self_attn.k_proj.weight", (16, 64)): ("layers", 0, "attn", "k_proj"),
      ("model.layers.0.self_attn.v_proj.weight", (16, 64)): ("layers", 0, "attn", "v_proj"),
      ("model.layers.0.self_attn.o_proj.weight", (64, 64)): ("layers", 0, "attn", "o_proj"),
      ("model.layers.0.self_attn.q_proj.bias", (64,)): ("layers", 0, "attn", "q_bias"),
      ("model.layers.0.self_attn.k_proj.bias", (16,)): ("layers", 0, "attn", "k_bias"),
      ("model.layers.0.self_attn.v_proj.bias", (16,)): ("layers", 0, "attn", "v_bias"),
      ("model.layers.1.post_attention_layernorm.weight", (64,)):
          ("layers", 1, "mlp_norm", "scale"),
      ("model.layers.1.mlp.gate_proj.weight", (96, 64)): ("layers", 1, "mlp", "gate_proj"),
      ("model.layers.1.mlp.up_proj.weight", (96, 64)): ("layers", 1, "mlp", "up_proj"),
      ("model.layers.1.mlp.down_proj.weight", (64, 96)): ("layers", 1, "mlp", "down_proj"),
  }
  for (name, shape), path in cases.items():
    assert hf_checkpoint.hf_param_path(name, shape, config) == path, name
  assert {p[2:] if p[0] == "layers" else p for p in cases.values()} == {
      p[2:] if p[0] == "layers" else p for p in params_lib.param_shapes(config)}


def test_name_mapping_skips_unused_tensors():
  tied = config_lib.tiny_llama()
  assert hf_checkpoint.hf_param_path("lm_head.weight", (320, 64), tied) is None
  name = "model.layers.0.self_attn.rotary_emb.inv_freq"
  assert hf_checkpoint.hf_param_path(name, (4,), tied) is None


@pytest.mark.parametrize(
    "name, shape, message",
    [
        ("model.layers.0.self_attn.qkv_proj.weight", (96, 64),
         "Unknown checkpoint tensor 'model.layers.0.self_attn.qkv_proj.weight'"),
        ("model.layers.5.mlp.up_proj.weight", (96, 64),
         "belongs to layer 5, but config.json declares 2 layers"),
        ("model.norm.weight", (65,), r"has shape \(65,\); config.json implies \(64,\)"),
    ],
)
def test_name_mapping_rejects_bad_tensors(name, shape, message):
  with pytest.raises(ValueError, match=message):
    hf_checkpoint.hf_param_path(name, shape, config_lib.tiny_qwen2())


def test_unsharded_tied_llama_gives_identical_logits(tmp_path, llama):
  config, params = llama
  folder = write_checkpoint(tmp_path / "llama", config, params, "llama")
  loaded_config, loaded = hf_checkpoint.read_hf_checkpoint(folder)
  assert loaded_config == config
  assert loaded_config.tie_embeddings
  np.testing.assert_array_equal(logits_of(loaded_config, loaded), logits_of(config, params))


def test_sharded_untied_qwen2_gives_identical_logits(tmp_path, qwen2):
  config, params = qwen2
  folder = write_checkpoint(tmp_path / "qwen2", config, params, "qwen2", shards=3)
  assert len(list(folder.glob("model-*-of-00003.safetensors"))) == 3
  loaded_config, loaded = hf_checkpoint.read_hf_checkpoint(folder)
  assert loaded_config == config
  assert loaded_config.attention_bias
  assert not loaded_config.tie_embeddings
  np.testing.assert_array_equal(logits_of(loaded_config, loaded), logits_of(config, params))


def test_tied_checkpoint_with_saved_lm_head(tmp_path, llama):
  config, params = llama
  # Some tied checkpoints also save the output matrix and the RoPE frequencies.
  extra = {
      "lm_head.weight": np.asarray(params[("embedder", "embedding")]),
      "model.layers.0.self_attn.rotary_emb.inv_freq": np.ones(4, np.float32),
  }
  folder = write_checkpoint(tmp_path / "llama", config, params, "llama", extra_tensors=extra)
  loaded_config, loaded = hf_checkpoint.read_hf_checkpoint(folder)
  assert ("lm_head",) not in loaded
  np.testing.assert_array_equal(logits_of(loaded_config, loaded), logits_of(config, params))


def test_bfloat16_checkpoint_loads(tmp_path, qwen2):
  config, params = qwen2
  folder = write_checkpoint(tmp_path / "bf16", config, params, "qwen2",
                            dtype=ml_dtypes.bfloat16)
  model = hf_checkpoint.load_hf_decoder(folder, param_dtype="bfloat16")
  assert model.layers[0].attn.q_proj[...].dtype == jnp.bfloat16
  logits = np.asarray(forward(model, jnp.asarray(TOKENS)))
  expected = logits_of(config, params)
  assert np.corrcoef(logits.ravel(), expected.ravel())[0, 1] > 0.999


def test_missing_lm_head_is_reported(tmp_path, qwen2):
  config, params = qwen2
  without_head = {path: value for path, value in params.items() if path != ("lm_head",)}
  folder = write_checkpoint(tmp_path / "qwen2", config, without_head, "qwen2")
  with pytest.raises(ValueError, match=r"missing \[\('lm_head',\)\]"):
    hf_checkpoint.load_hf_decoder(folder)


def test_missing_files_are_reported(tmp_path, llama):
  config, params = llama
  with pytest.raises(FileNotFoundError, match="No config.json in"):
    hf_checkpoint.read_hf_checkpoint(tmp_path)

  (tmp_path / "config.json").write_text(json.dumps(hf_config(config, "llama")))
  with pytest.raises(FileNotFoundError, match="No model.safetensors or "
                                              "model.safetensors.index.json in"):
    hf_checkpoint.read_hf_checkpoint(tmp_path)

  folder = write_checkpoint(tmp_path / "sharded", config, params, "llama", shards=2)
  (folder / "model-00002-of-00002.safetensors").unlink()
  with pytest.raises(FileNotFoundError, match="lists shards that are missing"):
    hf_checkpoint.read_hf_checkpoint(folder)


@pytest.mark.parametrize(
    "change, message",
    [
        ({"model_type": "gpt2"}, "Unsupported model_type 'gpt2'"),
        ({"rope_scaling": {"rope_type": "llama3", "factor": 8.0}},
         "RoPE scaling 'llama3', which is not supported"),
        ({"hidden_act": "gelu"}, "hidden_act 'gelu' is not supported"),
        ({"num_key_value_heads": 3}, r"num_heads \(8\) must be a multiple of num_kv_heads \(3\)"),
    ],
)
def test_config_rejects_unsupported_variants(change, message):
  values = {**hf_config(config_lib.tiny_llama(), "llama"), **change}
  with pytest.raises(ValueError, match=message):
    hf_checkpoint.config_from_hf(values)


def test_config_reads_nested_rope_parameters():
  values = hf_config(config_lib.tiny_llama(), "llama")
  del values["rope_theta"]
  values["rope_parameters"] = {"rope_type": "default", "rope_theta": 500000.0}
  assert hf_checkpoint.config_from_hf(values).rope_theta == 500000.0


def test_invalid_hub_spec_is_rejected():
  with pytest.raises(ValueError, match="use hf:ORG/NAME"):
    hf_checkpoint.download_hf_checkpoint("hf:no-organisation")


def test_offline_hub_spec_raises_clear_error(tmp_path):
  # huggingface_hub reads HF_HUB_OFFLINE when imported, so the check runs in a fresh process
  # with an empty cache; offline mode sends no request.
  script = (
      "from ec_jax.weights import hf_checkpoint\n"
      "try:\n"
      "  hf_checkpoint.load_hf_decoder('hf:example-org/tiny-model')\n"
      "except hf_checkpoint.HubDownloadError as error:\n"
      "  print(error)\n"
  )
  env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf_home"),
         "PYTHONPATH": str(REPO_ROOT), "JAX_PLATFORMS": "cpu"}
  result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                          text=True, timeout=120, check=False)
  assert result.returncode == 0, result.stderr
  assert "Cannot get 'example-org/tiny-model'" in result.stdout
  assert "offline mode is on (HF_HUB_OFFLINE=1)" in result.stdout
  assert "not in the local cache" in result.stdout
