"""Read `llama` and `qwen2` GGUF files into a ModelConfig and decoder parameters.

Tensors are dequantized to float32 with the `gguf` package's own routines. llama.cpp's
converter reorders the query and key rows of `llama`-architecture files for its interleaved
RoPE; `read_gguf` undoes that, so the decoder's rotate-half RoPE applies. `qwen2` files are
stored in rotate-half order already.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from typing import Any, Mapping

import gguf
import jax
import numpy as np
from absl import logging

from ec_jax.model import params as params_lib
from ec_jax.model.config import ModelConfig
from ec_jax.model.decoder import Decoder

SUPPORTED_ARCHITECTURES = ("llama", "qwen2")

QuantType = gguf.GGMLQuantizationType
SUPPORTED_TYPES = frozenset({
    QuantType.F32, QuantType.F16, QuantType.BF16, QuantType.Q8_0, QuantType.Q4_0,
    QuantType.Q4_1, QuantType.Q5_0, QuantType.Q5_1, QuantType.Q4_K, QuantType.Q5_K,
    QuantType.Q6_K,
})

# GGUF tensor names outside the blocks, and inside block N (after "blk.N.").
_GLOBAL_TENSORS = {
    "token_embd.weight": ("embedder", "embedding"),
    "output_norm.weight": ("final_norm", "scale"),
    "output.weight": ("lm_head",),
}
_BLOCK_TENSORS = {
    "attn_norm.weight": ("attn_norm", "scale"),
    "attn_q.weight": ("attn", "q_proj"),
    "attn_k.weight": ("attn", "k_proj"),
    "attn_v.weight": ("attn", "v_proj"),
    "attn_output.weight": ("attn", "o_proj"),
    "attn_q.bias": ("attn", "q_bias"),
    "attn_k.bias": ("attn", "k_bias"),
    "attn_v.bias": ("attn", "v_bias"),
    "ffn_norm.weight": ("mlp_norm", "scale"),
    "ffn_gate.weight": ("mlp", "gate_proj"),
    "ffn_up.weight": ("mlp", "up_proj"),
    "ffn_down.weight": ("mlp", "down_proj"),
}
_BLOCK_NAME = re.compile(r"blk\.(\d+)\.(.+)")
_MISSING = object()


def gguf_param_path(
    name: str, shape: tuple[int, ...], config: ModelConfig) -> params_lib.ParamPath:
  """Map a GGUF tensor name to its decoder parameter path and check the tensor's shape.

  Args:
    name: GGUF tensor name, such as "blk.3.attn_q.weight".
    shape: the tensor's shape in NumPy order (GGUF's dimension list reversed), which is the
      PyTorch [out_features, in_features] order.
    config: the model config read from the same file.

  Raises:
    ValueError: the name is not a tensor of a Llama or Qwen2 decoder, names a block beyond
      config.num_layers, or the shape does not match the config.
  """
  if name == "rope_freqs.weight":
    raise ValueError(
        "GGUF tensor 'rope_freqs.weight' contains Llama 3 RoPE frequency scaling factors, which "
        "this decoder does not implement; use a model without RoPE scaling.")
  if name in _GLOBAL_TENSORS:
    path = _GLOBAL_TENSORS[name]
  else:
    match = _BLOCK_NAME.fullmatch(name)
    if match is None or match.group(2) not in _BLOCK_TENSORS:
      raise ValueError(
          f"Unknown GGUF tensor {name!r}: not part of a Llama or Qwen2 decoder. Known names: "
          f"{sorted(_GLOBAL_TENSORS)} and blk.N.{{{', '.join(sorted(_BLOCK_TENSORS))}}}.")
    layer = int(match.group(1))
    if layer >= config.num_layers:
      raise ValueError(
          f"GGUF tensor {name!r} belongs to block {layer}, but the file's metadata declares "
          f"{config.num_layers} blocks.")
    path = ("layers", layer, *_BLOCK_TENSORS[match.group(2)])
  expected = params_lib.checkpoint_shape(path, config)
  if tuple(shape) != expected:
    raise ValueError(
        f"GGUF tensor {name!r} has shape {tuple(shape)}; the file's metadata implies "
        f"{expected}.")
  return path


def unpermute_rope_rows(weight: np.ndarray, num_heads: int) -> np.ndarray:
  """Undo llama.cpp's query/key row order for interleaved RoPE, giving rotate-half order.

  Within each head of head_dim rows, llama.cpp's converter stores row j * head_dim / 2 + i
  (j in {0, 1}) at row 2 * i + j, so that each rotated pair is adjacent. This returns the
  rows to their rotate-half positions.

  Args:
    weight: [num_heads * head_dim, ...] query or key weight (or bias) in GGUF row order.
    num_heads: query heads for the query weight, key/value heads for the key weight.
  """
  rows = weight.shape[0]
  if rows % (2 * num_heads):
    raise ValueError(
        f"Cannot split {rows} rows into {num_heads} heads of an even width for RoPE.")
  half = rows // num_heads // 2
  grouped = weight.reshape(num_heads, half, 2, *weight.shape[1:])
  return np.swapaxes(grouped, 1, 2).reshape(weight.shape)


def _field(reader: gguf.GGUFReader, key: str, default: Any = _MISSING) -> Any:
  field = reader.get_field(key)
  if field is None:
    if default is _MISSING:
      raise ValueError(f"GGUF metadata key {key!r} is missing; the file is not a complete "
                       "model file.")
    return default
  return field.contents()


def _int_field(reader: gguf.GGUFReader, key: str, default: Any = _MISSING) -> int:
  value = _field(reader, key, default)
  if isinstance(value, list):
    raise ValueError(
        f"GGUF metadata {key!r} is a per-layer list {value}; only one value for all layers "
        "is supported.")
  return int(value)


def _float_field(reader: gguf.GGUFReader, key: str, default: Any = _MISSING) -> float:
  """Return a float32 metadata value as the shortest decimal that rounds to it.

  GGUF stores 1e-5 as float32 9.99999975e-06; this returns 1e-05, the value the source
  config had, so configs compare equal across formats.
  """
  return float(str(np.float32(_field(reader, key, default))))


def _architecture(reader: gguf.GGUFReader) -> str:
  architecture = _field(reader, "general.architecture")
  if architecture not in SUPPORTED_ARCHITECTURES:
    raise ValueError(
        f"Unsupported GGUF architecture {architecture!r}; supported: "
        f"{list(SUPPORTED_ARCHITECTURES)}.")
  return architecture


def config_from_gguf(reader: gguf.GGUFReader) -> ModelConfig:
  """Build the ModelConfig (float32 dtypes) from a GGUF file's metadata and tensor list.

  Raises:
    ValueError: the architecture is unsupported, a required key is missing, or the metadata
      describes a variant this decoder does not implement (RoPE scaling, partial rotary
      dimensions, differing key and value widths).
  """
  arch = _architecture(reader)
  tensors = {tensor.name: tensor for tensor in reader.tensors}
  if "token_embd.weight" not in tensors:
    raise ValueError("GGUF file has no 'token_embd.weight' tensor; it is not a model file.")

  hidden_size = _int_field(reader, f"{arch}.embedding_length")
  num_heads = _int_field(reader, f"{arch}.attention.head_count")
  num_kv_heads = _int_field(reader, f"{arch}.attention.head_count_kv", num_heads)
  head_dim = _int_field(reader, f"{arch}.attention.key_length", hidden_size // num_heads)
  value_dim = _int_field(reader, f"{arch}.attention.value_length", head_dim)
  if value_dim != head_dim:
    raise ValueError(
        f"GGUF key width {head_dim} differs from value width {value_dim}; this decoder needs "
        "equal widths.")
  rope_dims = _int_field(reader, f"{arch}.rope.dimension_count", head_dim)
  if rope_dims != head_dim:
    raise ValueError(
        f"GGUF rope.dimension_count {rope_dims} differs from the head width {head_dim}; "
        "partial rotary embeddings are not supported.")
  scaling = _field(reader, f"{arch}.rope.scaling.type", "none")
  if scaling != "none":
    raise ValueError(
        f"GGUF RoPE scaling {scaling!r} is not supported; use a model without RoPE scaling.")

  # NumPy order of the embedding is [vocab, embed]; GGUF lists dimensions reversed.
  vocab_size = int(tensors["token_embd.weight"].shape[-1])
  declared_vocab = _int_field(reader, f"{arch}.vocab_size", vocab_size)
  if declared_vocab != vocab_size:
    raise ValueError(
        f"GGUF {arch}.vocab_size is {declared_vocab} but token_embd.weight has {vocab_size} "
        "rows.")

  return ModelConfig(
      vocab_size=vocab_size,
      hidden_size=hidden_size,
      intermediate_size=_int_field(reader, f"{arch}.feed_forward_length"),
      num_layers=_int_field(reader, f"{arch}.block_count"),
      num_heads=num_heads,
      num_kv_heads=num_kv_heads,
      head_dim=head_dim,
      rope_theta=_float_field(reader, f"{arch}.rope.freq_base", 10000.0),
      rms_norm_eps=_float_field(reader, f"{arch}.attention.layer_norm_rms_epsilon"),
      tie_embeddings="output.weight" not in tensors,
      attention_bias="blk.0.attn_q.bias" in tensors,
      max_position=_int_field(reader, f"{arch}.context_length"),
  )


def dequantize_tensor(tensor: gguf.ReaderTensor) -> np.ndarray:
  """Return a GGUF tensor as float32 in NumPy order.

  Raises:
    ValueError: the tensor's type is not in SUPPORTED_TYPES.
  """
  if tensor.tensor_type not in SUPPORTED_TYPES:
    supported = sorted(quant_type.name for quant_type in SUPPORTED_TYPES)
    raise ValueError(
        f"GGUF tensor {tensor.name!r} has unsupported type {tensor.tensor_type.name}; "
        f"supported types: {supported}.")
  values = gguf.quants.dequantize(tensor.data, tensor.tensor_type)
  shape = tuple(int(size) for size in reversed(tensor.shape.tolist()))
  return np.asarray(values, np.float32).reshape(shape)


def _model_layout_tensor(tensor: gguf.ReaderTensor, param_path: params_lib.ParamPath,
                         arch: str, config: ModelConfig) -> np.ndarray:
  """Dequantize one GGUF tensor and return it in the model layout of `param_path` (float32)."""
  values = dequantize_tensor(tensor)
  if arch == "llama" and param_path[-1] in ("q_proj", "q_bias"):
    values = unpermute_rope_rows(values, config.num_heads)
  elif arch == "llama" and param_path[-1] in ("k_proj", "k_bias"):
    values = unpermute_rope_rows(values, config.num_kv_heads)
  return params_lib.from_checkpoint_layout(param_path, values, config)


def _iter_model_tensors(reader: gguf.GGUFReader, arch: str, config: ModelConfig
                        ) -> Iterator[tuple[params_lib.ParamPath, np.ndarray]]:
  for tensor in reader.tensors:
    shape = tuple(int(size) for size in reversed(tensor.shape.tolist()))
    param_path = gguf_param_path(tensor.name, shape, config)
    # No local name keeps the yielded array, so it is freed once the caller drops it.
    yield param_path, _model_layout_tensor(tensor, param_path, arch, config)


def _open(path: str | os.PathLike[str]) -> tuple[gguf.GGUFReader, str, ModelConfig]:
  """Open a GGUF file and return its reader, architecture and config."""
  path = os.fspath(path)
  if not os.path.isfile(path):
    raise FileNotFoundError(f"GGUF file not found: {path}")
  reader = gguf.GGUFReader(path)
  return reader, _architecture(reader), config_from_gguf(reader)


def open_gguf(path: str | os.PathLike[str]) -> tuple[
    ModelConfig, Iterator[tuple[params_lib.ParamPath, np.ndarray]]]:
  """Read a GGUF file's config, and return it with an iterator over its parameters.

  The iterator yields (path, float32 array in model layout) one tensor at a time, in file
  order. GGUFReader maps the file into memory, so only the tensor being converted is read.

  Raises:
    FileNotFoundError: the file does not exist.
    ValueError: at once when the file is not a supported model (see `config_from_gguf`).
      When the iterator reaches a tensor that is not supported (see `gguf_param_path` and
      `dequantize_tensor`).
  """
  reader, arch, config = _open(path)
  return config, _iter_model_tensors(reader, arch, config)


def read_gguf(path: str | os.PathLike[str]) -> tuple[ModelConfig, dict[params_lib.ParamPath,
                                                                          np.ndarray]]:
  """Read a GGUF model file into its config and float32 parameters in model layout.

  Raises:
    FileNotFoundError: the file does not exist.
    ValueError: the file is not a supported model (see `config_from_gguf`,
      `gguf_param_path` and `dequantize_tensor`).
  """
  reader, arch, config = _open(path)
  params = dict(_iter_model_tensors(reader, arch, config))
  logging.info("Read %d tensors of a %s model from %s: %s", len(params), arch, path, config)
  return config, params


def load_gguf_decoder(
    path: str | os.PathLike[str],
    param_dtype: str = "float32",
    compute_dtype: str | None = None,
    shardings: Mapping[params_lib.ParamPath, jax.sharding.Sharding] | None = None,
) -> Decoder:
  """Read a GGUF model file and build the decoder with the given dtypes and shardings."""
  config, params = read_gguf(path)
  config = config.with_dtypes(param_dtype, compute_dtype)
  return params_lib.decoder_from_params(config, params, shardings)
