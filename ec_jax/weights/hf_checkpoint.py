"""Read Hugging Face Llama and Qwen2 checkpoints (config.json + safetensors) into a decoder.

A checkpoint folder contains `config.json` and either `model.safetensors` or shards listed in
`model.safetensors.index.json`. A model specification `hf:ORG/NAME` is downloaded with
`huggingface_hub.snapshot_download` first, or found in its local cache when offline.
"""

from __future__ import annotations

import json
import os
import pathlib
import re
from collections.abc import Iterator
from typing import Any, Mapping

import jax
import numpy as np
import safetensors
from absl import logging

from ec_jax.model import params as params_lib
from ec_jax.model.config import ModelConfig
from ec_jax.model.decoder import Decoder

SUPPORTED_MODEL_TYPES = ("llama", "qwen2")
HF_PREFIX = "hf:"
INDEX_FILE = "model.safetensors.index.json"
SINGLE_FILE = "model.safetensors"

_GLOBAL_TENSORS = {
    "model.embed_tokens.weight": ("embedder", "embedding"),
    "model.norm.weight": ("final_norm", "scale"),
    "lm_head.weight": ("lm_head",),
}
_LAYER_TENSORS = {
    "input_layernorm.weight": ("attn_norm", "scale"),
    "self_attn.q_proj.weight": ("attn", "q_proj"),
    "self_attn.k_proj.weight": ("attn", "k_proj"),
    "self_attn.v_proj.weight": ("attn", "v_proj"),
    "self_attn.o_proj.weight": ("attn", "o_proj"),
    "self_attn.q_proj.bias": ("attn", "q_bias"),
    "self_attn.k_proj.bias": ("attn", "k_bias"),
    "self_attn.v_proj.bias": ("attn", "v_bias"),
    "post_attention_layernorm.weight": ("mlp_norm", "scale"),
    "mlp.gate_proj.weight": ("mlp", "gate_proj"),
    "mlp.up_proj.weight": ("mlp", "up_proj"),
    "mlp.down_proj.weight": ("mlp", "down_proj"),
}
# Buffers that older checkpoints saved although they are computed from the config.
_IGNORED_LAYER_TENSORS = ("self_attn.rotary_emb.inv_freq",)
_LAYER_NAME = re.compile(r"model\.layers\.(\d+)\.(.+)")


class HubDownloadError(RuntimeError):
  """A checkpoint named `hf:ORG/NAME` could not be downloaded or found in the local cache."""


def hf_param_path(
    name: str, shape: tuple[int, ...], config: ModelConfig) -> params_lib.ParamPath | None:
  """Map a safetensors tensor name to its decoder parameter path and check the tensor's shape.

  Returns None for tensors the decoder does not load: saved RoPE frequency buffers, and
  `lm_head.weight` when the config ties the output projection to the embedding.

  Raises:
    ValueError: the name is not a tensor of a Llama or Qwen2 decoder, names a layer beyond
      config.num_layers, or the shape does not match the config.
  """
  if name == "lm_head.weight" and config.tie_embeddings:
    return None
  if name in _GLOBAL_TENSORS:
    path = _GLOBAL_TENSORS[name]
  else:
    match = _LAYER_NAME.fullmatch(name)
    if match is not None and match.group(2) in _IGNORED_LAYER_TENSORS:
      return None
    if match is None or match.group(2) not in _LAYER_TENSORS:
      raise ValueError(
          f"Unknown checkpoint tensor {name!r}: not part of a Llama or Qwen2 decoder. Known "
          f"names: {sorted(_GLOBAL_TENSORS)} and model.layers.N."
          f"{{{', '.join(sorted(_LAYER_TENSORS))}}}.")
    layer = int(match.group(1))
    if layer >= config.num_layers:
      raise ValueError(
          f"Checkpoint tensor {name!r} belongs to layer {layer}, but config.json declares "
          f"{config.num_layers} layers.")
    path = ("layers", layer, *_LAYER_TENSORS[match.group(2)])
  expected = params_lib.checkpoint_shape(path, config)
  if tuple(shape) != expected:
    raise ValueError(
        f"Checkpoint tensor {name!r} has shape {tuple(shape)}; config.json implies {expected}.")
  return path


def _rope_theta(values: Mapping[str, Any]) -> float:
  """Return the RoPE base, rejecting RoPE scaling variants the decoder does not implement."""
  # Recent transformers releases write RoPE settings under rope_parameters (documented on its
  # "Utilities for Rotary Embedding" page). Older configs use rope_theta and rope_scaling.
  rope = values.get("rope_parameters") or values.get("rope_scaling") or {}
  rope_type = rope.get("rope_type", rope.get("type", "default"))
  if rope_type != "default":
    raise ValueError(
        f"config.json requests RoPE scaling {rope_type!r}, which is not supported; use a model "
        "without RoPE scaling.")
  return float(rope.get("rope_theta", values.get("rope_theta", 10000.0)))


def config_from_hf(values: Mapping[str, Any]) -> ModelConfig:
  """Build a ModelConfig (float32 dtypes) from the contents of a Hugging Face config.json.

  Raises:
    ValueError: the model type is unsupported, a required key is missing, or the config
      requests a variant this decoder does not implement.
  """
  model_type = values.get("model_type")
  if model_type not in SUPPORTED_MODEL_TYPES:
    raise ValueError(
        f"Unsupported model_type {model_type!r} in config.json; supported: "
        f"{list(SUPPORTED_MODEL_TYPES)}.")
  required = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
              "num_attention_heads")
  missing = [key for key in required if key not in values]
  if missing:
    raise ValueError(f"config.json is missing {missing}.")
  activation = values.get("hidden_act", "silu")
  if activation != "silu":
    raise ValueError(f"config.json hidden_act {activation!r} is not supported; only 'silu' is.")
  if values.get("mlp_bias", False):
    raise ValueError("config.json sets mlp_bias, which this decoder does not implement.")
  if values.get("use_sliding_window", False):
    raise ValueError("config.json enables sliding-window attention, which is not supported.")

  num_heads = values["num_attention_heads"]
  # Qwen2 always has q/k/v biases; Llama has them only when attention_bias is set.
  attention_bias = model_type == "qwen2" or bool(values.get("attention_bias", False))
  return ModelConfig(
      vocab_size=values["vocab_size"],
      hidden_size=values["hidden_size"],
      intermediate_size=values["intermediate_size"],
      num_layers=values["num_hidden_layers"],
      num_heads=num_heads,
      num_kv_heads=values.get("num_key_value_heads") or num_heads,
      head_dim=values.get("head_dim") or values["hidden_size"] // num_heads,
      rope_theta=_rope_theta(values),
      rms_norm_eps=float(values.get("rms_norm_eps", 1e-6)),
      tie_embeddings=bool(values.get("tie_word_embeddings", False)),
      attention_bias=attention_bias,
      max_position=values.get("max_position_embeddings", 2048),
  )


def _weight_files(directory: pathlib.Path) -> list[pathlib.Path]:
  """Return the safetensors files of a checkpoint folder, from its index when sharded."""
  index_path = directory / INDEX_FILE
  if index_path.is_file():
    weight_map = json.loads(index_path.read_text())["weight_map"]
    files = [directory / name for name in sorted(set(weight_map.values()))]
    absent = [str(path) for path in files if not path.is_file()]
    if absent:
      raise FileNotFoundError(f"{INDEX_FILE} lists shards that are missing: {absent}.")
    return files
  if (directory / SINGLE_FILE).is_file():
    return [directory / SINGLE_FILE]
  raise FileNotFoundError(
      f"No {SINGLE_FILE} or {INDEX_FILE} in {directory}; a checkpoint folder needs one of them "
      "next to config.json.")


def _read_config(directory: pathlib.Path) -> ModelConfig:
  config_path = directory / "config.json"
  if not config_path.is_file():
    raise FileNotFoundError(
        f"No config.json in {directory}; expected a Hugging Face checkpoint folder.")
  return config_from_hf(json.loads(config_path.read_text()))


def _iter_model_tensors(files: list[pathlib.Path], config: ModelConfig
                        ) -> Iterator[tuple[params_lib.ParamPath, np.ndarray]]:
  seen = set()
  for file in files:
    with safetensors.safe_open(str(file), framework="numpy") as tensors:
      for name in tensors.keys():
        shape = tuple(tensors.get_slice(name).get_shape())
        path = hf_param_path(name, shape, config)
        if path is None:
          logging.info("Skipping checkpoint tensor %s: the decoder does not use it.", name)
          continue
        if path in seen:
          raise ValueError(f"Checkpoint tensor {name!r} appears in more than one file.")
        seen.add(path)
        # No local name keeps the yielded array, so it is freed once the caller drops it.
        yield path, params_lib.from_checkpoint_layout(
            path, np.asarray(tensors.get_tensor(name)).astype(np.float32), config)


def open_hf_checkpoint(directory: str | os.PathLike[str]) -> tuple[
    ModelConfig, Iterator[tuple[params_lib.ParamPath, np.ndarray]]]:
  """Read a checkpoint folder's config, and return it with an iterator over its parameters.

  The iterator yields (path, float32 array in model layout) one tensor at a time, in file
  order. safetensors reads each tensor only when the iterator reaches it.

  Raises:
    FileNotFoundError: the folder, config.json or a weight file is missing (at once).
    ValueError: the config does not fit a Llama or Qwen2 decoder (at once), or a tensor does
      not (when the iterator reaches it).
  """
  directory = pathlib.Path(directory)
  config = _read_config(directory)
  return config, _iter_model_tensors(_weight_files(directory), config)


def read_hf_checkpoint(
    directory: str | os.PathLike[str],
) -> tuple[ModelConfig, dict[params_lib.ParamPath, np.ndarray]]:
  """Read a checkpoint folder into its config and float32 parameters in model layout.

  Raises:
    FileNotFoundError: the folder, config.json or a weight file is missing.
    ValueError: the config or a tensor does not fit a Llama or Qwen2 decoder.
  """
  config, tensors = open_hf_checkpoint(directory)
  params = dict(tensors)
  logging.info("Read %d tensors from %s: %s", len(params), directory, config)
  return config, params


def download_hf_checkpoint(spec: str) -> pathlib.Path:
  """Return the local folder of `hf:ORG/NAME`, downloading config and safetensors if needed.

  Raises:
    ValueError: spec does not have the form hf:ORG/NAME.
    HubDownloadError: the Hub cannot be reached (or offline mode is on) and the checkpoint
      is not in the local cache, or the Hub rejected the request.
  """
  if not spec.startswith(HF_PREFIX) or spec.count("/") != 1 or spec.endswith("/"):
    raise ValueError(f"Invalid Hugging Face model specification {spec!r}; use hf:ORG/NAME.")
  repo_id = spec[len(HF_PREFIX):]
  # Imported here because huggingface_hub reads HF_HUB_OFFLINE and its cache paths on import.
  import huggingface_hub  # pylint: disable=g-import-not-at-top
  from huggingface_hub import errors as hub_errors  # pylint: disable=g-import-not-at-top

  try:
    folder = huggingface_hub.snapshot_download(
        repo_id, allow_patterns=["config.json", "*.safetensors", INDEX_FILE])
  except hub_errors.LocalEntryNotFoundError as error:
    offline = huggingface_hub.constants.HF_HUB_OFFLINE
    reason = ("offline mode is on (HF_HUB_OFFLINE=1)" if offline
              else "the Hugging Face Hub could not be reached")
    raise HubDownloadError(
        f"Cannot get {repo_id!r}: {reason} and it is not in the local cache "
        f"{huggingface_hub.constants.HF_HUB_CACHE}. Download it where the Hub is reachable "
        f"(`hf download {repo_id}`), or pass the path of a local checkpoint folder.") from error
  except (hub_errors.HfHubHTTPError, OSError) as error:
    raise HubDownloadError(
        f"Downloading {repo_id!r} from the Hugging Face Hub failed: {error}") from error
  return pathlib.Path(folder)


def load_hf_decoder(
    source: str | os.PathLike[str],
    param_dtype: str = "float32",
    compute_dtype: str | None = None,
    shardings: Mapping[params_lib.ParamPath, jax.sharding.Sharding] | None = None,
) -> Decoder:
  """Build a decoder from a checkpoint folder or an `hf:ORG/NAME` specification."""
  if isinstance(source, str) and source.startswith(HF_PREFIX):
    source = download_hf_checkpoint(source)
  config, params = read_hf_checkpoint(source)
  config = config.with_dtypes(param_dtype, compute_dtype)
  return params_lib.decoder_from_params(config, params, shardings)
