"""Parameter paths and layouts of the decoder, and building a decoder from given weights.

A parameter path is the tuple of attribute names and layer indices from the `Decoder` to the
parameter, for example ('layers', 3, 'attn', 'q_proj'). Model layouts put the contracted axis
first and split heads out: q_proj is [embed, heads, head_dim].

Hugging Face safetensors and GGUF files both store linear layers as PyTorch matrices
[out_features, in_features] (GGUF lists its dimensions in reverse, so its NumPy view has the
same order). `from_checkpoint_layout` and `to_checkpoint_layout` convert between that common
checkpoint layout and the model layout; the name mapping of each format lives in its reader.
"""

from __future__ import annotations

from typing import Any, Mapping

import jax
import numpy as np
from flax import nnx, traverse_util

from ec_jax.model.config import ModelConfig
from ec_jax.model.decoder import Decoder

ParamPath = tuple[str | int, ...]


def abstract_decoder(config: ModelConfig) -> tuple[nnx.GraphDef, nnx.State]:
  """Return the graph definition and the abstract state (shapes only) of a decoder."""
  abstract = nnx.eval_shape(lambda: Decoder(config, rngs=nnx.Rngs(0)))
  return nnx.split(abstract)


def flatten_params(state: nnx.State | Mapping[Any, Any]) -> dict[ParamPath, Any]:
  """Return {path: value} for an nnx.State or a nested dict of the same structure."""
  if isinstance(state, nnx.State):
    state = nnx.to_pure_dict(state)
  return traverse_util.flatten_dict(state)


def unflatten_params(params: Mapping[ParamPath, Any]) -> dict[Any, Any]:
  """Return the nested dict (as `nnx.to_pure_dict` builds) of {path: value}."""
  return traverse_util.unflatten_dict(dict(params))


def param_shapes(config: ModelConfig) -> dict[ParamPath, tuple[int, ...]]:
  """Return the model-layout shape of every parameter of a decoder with this config."""
  _, state = abstract_decoder(config)
  return {path: tuple(value.shape) for path, value in flatten_params(state).items()}


def logical_axes(config: ModelConfig) -> dict[ParamPath, tuple[str, ...]]:
  """Return the logical axis names of every parameter (its `out_sharding` metadata)."""
  _, state = abstract_decoder(config)
  axes = {}
  for path, variable in nnx.to_flat_state(state):
    axes[tuple(path)] = tuple(variable.get_metadata()["out_sharding"])
  return axes


def _head_split(config: ModelConfig, name: str) -> int:
  return config.num_heads if name.startswith("q") or name == "o_proj" else config.num_kv_heads


def checkpoint_shape(path: ParamPath, config: ModelConfig) -> tuple[int, ...]:
  """Return the shape a parameter has in the PyTorch checkpoint layout."""
  name = path[-1]
  embed, head_dim, mlp = config.hidden_size, config.head_dim, config.intermediate_size
  if name in ("embedding", "lm_head"):
    return (config.vocab_size, embed)
  if name == "scale":
    return (embed,)
  if name in ("q_proj", "k_proj", "v_proj"):
    return (_head_split(config, name) * head_dim, embed)
  if name == "o_proj":
    return (embed, config.num_heads * head_dim)
  if name in ("q_bias", "k_bias", "v_bias"):
    return (_head_split(config, name) * head_dim,)
  if name in ("gate_proj", "up_proj"):
    return (mlp, embed)
  if name == "down_proj":
    return (embed, mlp)
  raise ValueError(f"Unknown decoder parameter path {path}.")


def from_checkpoint_layout(path: ParamPath, array: np.ndarray, config: ModelConfig) -> np.ndarray:
  """Convert a tensor from the PyTorch checkpoint layout to the model layout of `path`.

  Raises:
    ValueError: the tensor's shape is not `checkpoint_shape(path, config)`.
  """
  expected = checkpoint_shape(path, config)
  if tuple(array.shape) != expected:
    raise ValueError(
        f"Tensor for parameter {path} has shape {tuple(array.shape)}; expected {expected} for "
        "this model config. The checkpoint does not match its own config metadata.")
  name = path[-1]
  head_dim, embed = config.head_dim, config.hidden_size
  if name in ("q_proj", "k_proj", "v_proj"):
    return array.reshape(-1, head_dim, embed).transpose(2, 0, 1)
  if name == "o_proj":
    return array.reshape(embed, config.num_heads, head_dim).transpose(1, 2, 0)
  if name in ("q_bias", "k_bias", "v_bias"):
    return array.reshape(-1, head_dim)
  if name in ("gate_proj", "up_proj", "down_proj"):
    return array.T
  return array


def to_checkpoint_layout(path: ParamPath, array: np.ndarray, config: ModelConfig) -> np.ndarray:
  """Convert a tensor from the model layout of `path` to the PyTorch checkpoint layout."""
  name = path[-1]
  if name in ("q_proj", "k_proj", "v_proj"):
    embed, heads, head_dim = array.shape
    return array.transpose(1, 2, 0).reshape(heads * head_dim, embed)
  if name == "o_proj":
    heads, head_dim, embed = array.shape
    return array.transpose(2, 0, 1).reshape(embed, heads * head_dim)
  if name in ("q_bias", "k_bias", "v_bias"):
    return array.reshape(-1)
  if name in ("gate_proj", "up_proj", "down_proj"):
    return array.T
  checkpoint_shape(path, config)  # Rejects unknown paths.
  return array


def check_params(config: ModelConfig, params: Mapping[ParamPath, Any]) -> None:
  """Raise ValueError unless params has exactly the decoder's paths, each with its shape."""
  expected = param_shapes(config)
  missing = sorted(set(expected) - set(params), key=str)
  unexpected = sorted(set(params) - set(expected), key=str)
  if missing or unexpected:
    raise ValueError(
        f"Weights do not match the decoder: missing {missing}, unexpected {unexpected}.")
  for path, shape in expected.items():
    if tuple(params[path].shape) != shape:
      raise ValueError(
          f"Parameter {path} has shape {tuple(params[path].shape)}; the decoder expects "
          f"{shape}.")


def decoder_from_params(
    config: ModelConfig,
    params: Mapping[ParamPath, Any],
    shardings: Mapping[ParamPath, jax.sharding.Sharding] | None = None,
) -> Decoder:
  """Build a decoder whose parameters are `params` in model layout, cast to config.param_dtype.

  Args:
    config: the model config.
    params: {path: array}, exactly the decoder's parameters.
    shardings: optional {path: sharding} to place each parameter with `jax.device_put`.

  Raises:
    ValueError: a parameter is missing, unexpected or has the wrong shape.
  """
  check_params(config, params)
  graphdef, state = abstract_decoder(config)
  dtype = config.param_jnp_dtype
  values = {}
  for path, value in params.items():
    if not isinstance(value, jax.Array):
      # Casting on the host first avoids a float32 copy on the device.
      value = np.asarray(value).astype(dtype, copy=False)
    sharding = None if shardings is None else shardings[path]
    values[path] = jax.device_put(value, sharding).astype(dtype)
  nnx.replace_by_pure_dict(state, unflatten_params(values))
  return nnx.merge(graphdef, state)
