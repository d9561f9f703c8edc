"""Tests of the GGUF reader on files written here with gguf.GGUFWriter, and on a real file."""

import os
import pathlib

import gguf
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from ec_jax.model import config as config_lib
from ec_jax.model import params as params_lib
from ec_jax.model.decoder import Decoder
from ec_jax.model.testing import random_params
from ec_jax.weights import gguf_reader

QuantType = gguf.GGMLQuantizationType
TOKENS = np.array([[5, 17, 42, 99, 3, 250, 7, 61]], np.int32)

# Model parameter path suffix -> GGUF name suffix, written independently of the reader's table.
GGUF_BLOCK_NAMES = {
    ("attn_norm", "scale"): "attn_norm.weight",
    ("attn", "q_proj"): "attn_q.weight",
    ("attn", "k_proj"): "attn_k.weight",
    ("attn", "v_proj"): "attn_v.weight",
    ("attn", "o_proj"): "attn_output.weight",
    ("attn", "q_bias"): "attn_q.bias",
    ("attn", "k_bias"): "attn_k.bias",
    ("attn", "v_bias"): "attn_v.bias",
    ("mlp_norm", "scale"): "ffn_norm.weight",
    ("mlp", "gate_proj"): "ffn_gate.weight",
    ("mlp", "up_proj"): "ffn_up.weight",
    ("mlp", "down_proj"): "ffn_down.weight",
}
GGUF_GLOBAL_NAMES = {
    ("embedder", "embedding"): "token_embd.weight",
    ("final_norm", "scale"): "output_norm.weight",
    ("lm_head",): "output.weight",
}


def gguf_name(path: tuple) -> str:
  if path in GGUF_GLOBAL_NAMES:
    return GGUF_GLOBAL_NAMES[path]
  return f"blk.{path[1]}.{GGUF_BLOCK_NAMES[path[2:]]}"


def interleave_rope_rows(weight: np.ndarray, num_heads: int) -> np.ndarray:
  """Apply llama.cpp's converter permutation: in each head, rotate-half row j * half + i
  moves to row 2 * i + j, so the rows of each rotated pair become adjacent."""
  head_dim = weight.shape[0] // num_heads
  half = head_dim // 2
  out = np.empty_like(weight)
  for head in range(num_heads):
    for j in range(2):
      for i in range(half):
        out[head * head_dim + 2 * i + j] = weight[head * head_dim + j * half + i]
  return out


def write_gguf(
    path: pathlib.Path,
    config: config_lib.ModelConfig,
    params: dict,
    arch: str,
    matrix_type: QuantType = QuantType.F32,
    permute: bool | None = None,
    overrides: dict | None = None,
) -> pathlib.Path:
  """Write params (model layout) as a GGUF file the way llama.cpp's converter lays it out.

  Args:
    matrix_type: type of every 2-D tensor; 1-D tensors (norms, biases) stay F32 as llama.cpp
      keeps them.
    permute: interleave query/key rows; default true for `llama`.
    overrides: {gguf name: (uint8 block bytes, type)} written instead of the named tensors.
  """
  permute = arch == "llama" if permute is None else permute
  overrides = overrides or {}
  writer = gguf.GGUFWriter(str(path), arch)
  writer.add_block_count(config.num_layers)
  writer.add_context_length(config.max_position)
  writer.add_embedding_length(config.hidden_size)
  writer.add_feed_forward_length(config.intermediate_size)
  writer.add_head_count(config.num_heads)
  writer.add_head_count_kv(config.num_kv_heads)
  writer.add_rope_freq_base(config.rope_theta)
  writer.add_layer_norm_rms_eps(config.rms_norm_eps)
  writer.add_rope_dimension_count(config.head_dim)
  for param_path in sorted(params, key=str):
    name = gguf_name(param_path)
    if name in overrides:
      data, quant_type = overrides[name]
      writer.add_tensor(name, data, raw_dtype=quant_type)
      continue
    weight = np.ascontiguousarray(
        params_lib.to_checkpoint_layout(param_path, params[param_path], config), np.float32)
    if permute and param_path[-1] in ("q_proj", "q_bias"):
      weight = interleave_rope_rows(weight, config.num_heads)
    elif permute and param_path[-1] in ("k_proj", "k_bias"):
      weight = interleave_rope_rows(weight, config.num_kv_heads)
    quant_type = matrix_type if weight.ndim == 2 else QuantType.F32
    data = gguf.quants.quantize(weight, quant_type)
    writer.add_tensor(name, data, raw_dtype=quant_type if data.dtype == np.uint8 else None)
  writer.write_header_to_file()
  writer.write_kv_data_to_file()
  writer.write_tensors_to_file()
  writer.close()
  return path


@nnx.jit
def forward(model: Decoder, tokens):
  return model.forward(tokens)


def logits_of(config, params) -> np.ndarray:
  return np.asarray(forward(params_lib.decoder_from_params(config, params), jnp.asarray(TOKENS)))


@pytest.fixture(scope="module")
def llama():
  config = config_lib.tiny_llama()
  return config, random_params(config, seed=11)


@pytest.fixture(scope="module")
def qwen2():
  config = config_lib.tiny_qwen2()
  return config, random_params(config, seed=12)


def test_name_mapping_table():
  config = config_lib.tiny_qwen2()
  cases = {
      ("token_embd.weight", (384, 64)): ("embedder", "embedding"),
      ("output.weight", (384, 64)): ("lm_head",),
      ("output_norm.weight", (64,)): ("final_norm", "scale"),
      ("blk.1.attn_norm.weight", (64,)): ("layers", 1, "attn_norm", "scale"),
      ("blk.0.attn_q.weight", (64, 64)): ("layers", 0, "attn", "q_proj"),
      ("blk.0.attn_k.weight", (16, 64)): ("layers", 0, "attn", "k_proj"),
      ("blk.0.attn_v.weight", (16, 64)): ("layers", 0, "attn", "v_proj"),
      ("blk.0.attn_output.weight", (64, 64)): ("layers", 0, "attn", "o_proj"),
      ("blk.0.attn_q.bias", (64,)): ("layers", 0, "attn", "q_bias"),
      ("blk.0.attn_k.bias", (16,)): ("layers", 0, "attn", "k_bias"),
      ("blk.0.attn_v.bias", (16,)): ("layers", 0, "attn", "v_bias"),
      ("blk.1.ffn_norm.weight", (64,)): ("layers", 1, "mlp_norm", "scale"),
      ("blk.1.ffn_gate.weight", (96, 64)): ("layers", 1, "mlp", "gate_proj"),
      ("blk.1.ffn_up.weight", (96, 64)): ("layers", 1, "mlp", "up_proj"),
      ("blk.1.ffn_down.weight", (64, 96)): ("layers", 1, "mlp", "down_proj"),
  }
  for (name, shape), path in cases.items():
    assert gguf_reader.gguf_param_path(name, shape, config) == path, name
  # The table covers every parameter of the decoder.
  assert {p[2:] if p[0] == "layers" else p for p in cases.values()} == {
      p[2:] if p[0] == "layers" else p for p in params_lib.param_shapes(config)}


@pytest.mark.parametrize(
    "name, shape, message",
    [
        ("blk.0.attn_qkv.weight", (192, 64), "Unknown GGUF tensor 'blk.0.attn_qkv.weight'"),
        ("pos_embd.weight", (64, 64), "Unknown GGUF tensor 'pos_embd.weight'"),
        ("blk.2.ffn_up.weight", (96, 64), "belongs to block 2, but the file's metadata declares 2"),
        ("blk.0.attn_k.weight", (64, 64), r"has shape \(64, 64\); the file's metadata implies "
                                          r"\(16, 64\)"),
        ("rope_freqs.weight", (4,), "Llama 3 RoPE frequency scaling"),
    ],
)
def test_name_mapping_rejects_bad_tensors(name, shape, message):
  with pytest.raises(ValueError, match=message):
    gguf_reader.gguf_param_path(name, shape, config_lib.tiny_qwen2())


def test_unpermute_inverts_converter_order():
  # One head of width 4: rotate-half pairs are rows (0, 2) and (1, 3).
  hf_rows = np.arange(4 * 3, dtype=np.float32).reshape(4, 3)
  gguf_rows = hf_rows[[0, 2, 1, 3]]
  np.testing.assert_array_equal(interleave_rope_rows(hf_rows, 1), gguf_rows)
  np.testing.assert_array_equal(gguf_reader.unpermute_rope_rows(gguf_rows, 1), hf_rows)

  weight = np.random.default_rng(0).standard_normal((3 * 8, 5)).astype(np.float32)
  permuted = interleave_rope_rows(weight, 3)
  np.testing.assert_array_equal(gguf_reader.unpermute_rope_rows(permuted, 3), weight)


def interleaved_rope(x: np.ndarray, position: int, theta: float) -> np.ndarray:
  """RoPE as ggml applies it to `llama` files: rotate adjacent pairs (2i, 2i + 1)."""
  half = x.shape[-1] // 2
  angles = position * theta ** (-np.arange(half) * 2.0 / x.shape[-1])
  even, odd = x[..., 0::2], x[..., 1::2]
  out = np.empty_like(x)
  out[..., 0::2] = even * np.cos(angles) - odd * np.sin(angles)
  out[..., 1::2] = odd * np.cos(angles) + even * np.sin(angles)
  return out


def rotate_half_rope(x: np.ndarray, position: int, theta: float) -> np.ndarray:
  half = x.shape[-1] // 2
  angles = position * theta ** (-np.arange(half) * 2.0 / x.shape[-1])
  first, second = x[..., :half], x[..., half:]
  return np.concatenate(
      [first * np.cos(angles) - second * np.sin(angles),
       second * np.cos(angles) + first * np.sin(angles)], axis=-1)


def test_interleaved_rope_on_permuted_rows():
  rng = np.random.default_rng(1)
  head_dim, theta = 8, 10000.0
  w_query = rng.standard_normal((head_dim, 16))
  w_key = rng.standard_normal((head_dim, 16))
  x_query, x_key = rng.standard_normal(16), rng.standard_normal(16)

  def score(rope, w_q, w_k):
    return rope(w_q @ x_query, 9, theta) @ rope(w_k @ x_key, 4, theta)

  expected = score(rotate_half_rope, w_query, w_key)
  permuted = score(interleaved_rope, interleave_rope_rows(w_query, 1),
                   interleave_rope_rows(w_key, 1))
  assert permuted == pytest.approx(expected, rel=1e-12)
  # Without the permutation the two conventions disagree.
  assert score(interleaved_rope, w_query, w_key) != pytest.approx(expected, rel=1e-3)


def test_llama_f32_file_gives_identical_logits(tmp_path, llama):
  config, params = llama
  path = write_gguf(tmp_path / "llama.gguf", config, params, "llama")
  loaded_config, loaded = gguf_reader.read_gguf(path)
  assert loaded_config == config
  assert loaded_config.tie_embeddings
  np.testing.assert_array_equal(logits_of(loaded_config, loaded), logits_of(config, params))


def test_qwen2_f32_file_gives_identical_logits(tmp_path, qwen2):
  config, params = qwen2
  path = write_gguf(tmp_path / "qwen2.gguf", config, params, "qwen2")
  loaded_config, loaded = gguf_reader.read_gguf(path)
  assert loaded_config == config
  assert loaded_config.attention_bias
  assert not loaded_config.tie_embeddings
  np.testing.assert_array_equal(logits_of(loaded_config, loaded), logits_of(config, params))


def test_llama_file_without_permutation_differs(tmp_path, llama):
  config, params = llama
  path = write_gguf(tmp_path / "unpermuted.gguf", config, params, "llama", permute=False)
  loaded_config, loaded = gguf_reader.read_gguf(path)
  difference = np.abs(logits_of(loaded_config, loaded) - logits_of(config, params))
  assert difference.max() > 1e-2


# Per type: bound on the relative RMS error of every matrix, about twice the error measured
# with gguf 0.19's quantizers, and lower bound on the correlation of the logits with the
# original model's. Tiny random models amplify weight errors, so 4-bit logits drift far.
QUANTIZED_BOUNDS = {
    QuantType.F16: (5e-4, 0.9999),
    QuantType.BF16: (4e-3, 0.999),
    QuantType.Q8_0: (1.2e-2, 0.999),
    QuantType.Q5_0: (0.09, 0.95),
    QuantType.Q5_1: (0.09, 0.95),
    QuantType.Q4_0: (0.18, 0.85),
    QuantType.Q4_1: (0.18, 0.85),
}


@pytest.mark.parametrize("quant_type", list(QUANTIZED_BOUNDS), ids=lambda t: t.name)
def test_quantized_file_close_to_original(tmp_path, qwen2, quant_type):
  config, params = qwen2
  max_weight_error, min_correlation = QUANTIZED_BOUNDS[quant_type]
  path = write_gguf(tmp_path / "model.gguf", config, params, "qwen2", matrix_type=quant_type)
  types = {tensor.name: tensor.tensor_type for tensor in gguf.GGUFReader(path).tensors}
  assert types["blk.0.attn_q.weight"] == quant_type
  assert types["blk.0.attn_q.bias"] == QuantType.F32

  loaded_config, loaded = gguf_reader.read_gguf(path)
  for key, original in params.items():
    error = np.sqrt(np.mean((loaded[key] - original)**2) / np.mean(original**2))
    if len(params_lib.checkpoint_shape(key, config)) == 1:  # Norms and biases stay F32.
      assert error == 0, key
    else:
      assert 0 < error < max_weight_error, key

  expected = logits_of(config, params)
  logits = logits_of(loaded_config, loaded)
  assert np.corrcoef(logits.ravel(), expected.ravel())[0, 1] > min_correlation


def random_k_blocks(quant_type: QuantType, rows: int, columns: int, seed: int) -> np.ndarray:
  """Random K-quant bytes [rows, bytes per row] with small finite float16 super-block scales.

  Offsets of the float16 scales in each block follow ggml's block layout: Q4_K and Q5_K start
  with d and dmin; Q6_K ends with d.
  """
  block_size, type_size = gguf.GGML_QUANT_SIZES[quant_type]
  blocks = rows * columns // block_size
  data = np.random.default_rng(seed).integers(0, 256, (blocks, type_size), dtype=np.uint8)
  if quant_type == QuantType.Q6_K:
    data[:, -2:] = np.full((blocks, 1), 2e-5, np.float16).view(np.uint8)
  else:
    data[:, 0:4] = np.full((blocks, 2), 2e-4, np.float16).view(np.uint8)
  return data.reshape(rows, columns // block_size * type_size)


@pytest.mark.parametrize("quant_type", [QuantType.Q4_K, QuantType.Q5_K, QuantType.Q6_K],
                         ids=lambda t: t.name)
def test_k_quant_file_matches_dequantized_values(tmp_path, quant_type):
  # gguf 0.19 has no K-quant quantizer, so ffn_down gets random valid blocks; K blocks span
  # 256 values, hence intermediate_size 256.
  config = config_lib.tiny_llama(intermediate_size=256)
  params = random_params(config, seed=13)
  overrides = {}
  for layer in range(config.num_layers):
    data = random_k_blocks(quant_type, config.hidden_size, 256, seed=layer)
    overrides[f"blk.{layer}.ffn_down.weight"] = (data, quant_type)
    dense = gguf.quants.dequantize(data, quant_type)  # [embed, mlp]
    params[("layers", layer, "mlp", "down_proj")] = dense.T
  path = write_gguf(tmp_path / "k.gguf", config, params, "llama", overrides=overrides)

  loaded_config, loaded = gguf_reader.read_gguf(path)
  for layer in range(config.num_layers):
    key = ("layers", layer, "mlp", "down_proj")
    np.testing.assert_array_equal(loaded[key], params[key])
  np.testing.assert_array_equal(logits_of(loaded_config, loaded), logits_of(config, params))


def test_unsupported_type_names_tensor_and_type(tmp_path):
  config = config_lib.tiny_llama(intermediate_size=256)
  params = random_params(config, seed=14)
  data = random_k_blocks(QuantType.Q2_K, config.hidden_size, 256, seed=0)
  path = write_gguf(tmp_path / "q2k.gguf", config, params, "llama",
                    overrides={"blk.0.ffn_down.weight": (data, QuantType.Q2_K)})
  with pytest.raises(ValueError,
                     match="GGUF tensor 'blk.0.ffn_down.weight' has unsupported type Q2_K"):
    gguf_reader.read_gguf(path)


def test_unsupported_architecture_is_named(tmp_path, llama):
  config, params = llama
  path = write_gguf(tmp_path / "gpt2.gguf", config, params, "gpt2")
  with pytest.raises(ValueError, match="Unsupported GGUF architecture 'gpt2'"):
    gguf_reader.read_gguf(path)


def test_missing_file_is_reported(tmp_path):
  with pytest.raises(FileNotFoundError, match="GGUF file not found: .*absent.gguf"):
    gguf_reader.read_gguf(tmp_path / "absent.gguf")


def test_load_decoder_in_bfloat16(tmp_path, qwen2):
  config, params = qwen2
  path = write_gguf(tmp_path / "qwen2.gguf", config, params, "qwen2")
  model = gguf_reader.load_gguf_decoder(path, param_dtype="bfloat16")
  assert model.config.compute_dtype == "bfloat16"
  assert model.embedder.embedding[...].dtype == jnp.bfloat16
  logits = np.asarray(forward(model, jnp.asarray(TOKENS)))
  assert np.isfinite(logits).all()


SMOLLM2_ENV = "EC_JAX_SMOLLM2_GGUF"
SMOLLM2 = "smollm2-135m-instruct"


def smollm2_path() -> str:
  """The SmolLM2 file: $EC_JAX_SMOLLM2_GGUF, else the installed embedded model."""
  from ec_jax.weights import embedded
  path = os.environ.get(SMOLLM2_ENV)
  if path:
    return path
  if embedded.is_installed(SMOLLM2):
    return str(embedded.model_path(SMOLLM2))
  pytest.skip(f"{SMOLLM2} is not installed; run: {embedded.install_command(SMOLLM2)} "
              f"(or set {SMOLLM2_ENV} to its .gguf file).")


@pytest.mark.model
def test_smollm2_file_predicts_paris():
  path = smollm2_path()
  model = gguf_reader.load_gguf_decoder(path)
  assert model.config.num_layers == 30
  assert model.config.num_kv_heads == 3
  assert model.config.tie_embeddings
  vocabulary = gguf.GGUFReader(path).get_field("tokenizer.ggml.tokens").contents()
  token_ids = {token: index for index, token in enumerate(vocabulary)}
  # Byte-level BPE pieces of "The capital of France is"; "Ġ" marks a leading space.
  prompt = [token_ids[piece] for piece in ["The", "Ġcapital", "Ġof", "ĠFrance", "Ġis"]]
  logits = np.asarray(forward(model, jnp.asarray([prompt], jnp.int32)))
  assert np.isfinite(logits).all()
  assert vocabulary[int(np.argmax(logits[0, -1]))] == "ĠParis"
