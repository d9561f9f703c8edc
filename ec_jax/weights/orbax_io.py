"""Save converted decoder weights with Orbax once, and restore them onto given shardings.

A saved folder contains `model_config.json` (the ModelConfig) and `params/`, an Orbax checkpoint of
the nested parameter dict that `nnx.to_pure_dict` gives for a `Decoder`. Restoring reads each
array straight into its target sharding and dtype, so converting a GGUF or safetensors file
happens once.
"""

from __future__ import annotations

import json
import os
import pathlib
from typing import Any, Mapping

import jax
import orbax.checkpoint as ocp
from absl import logging
from flax import nnx

from ec_jax.model import params as params_lib
from ec_jax.model.config import ModelConfig
from ec_jax.model.decoder import Decoder

CONFIG_FILE = "model_config.json"
PARAMS_DIR = "params"


def save_params(
    directory: str | os.PathLike[str],
    config: ModelConfig,
    params: Mapping[params_lib.ParamPath, Any],
) -> pathlib.Path:
  """Save a config and its {path: array} parameters (model layout) in a new folder.

  Raises:
    FileExistsError: the folder already exists; Orbax does not overwrite checkpoints.
    ValueError: the parameters do not match the config.
  """
  directory = pathlib.Path(directory).absolute()
  if directory.exists():
    raise FileExistsError(f"{directory} already exists; choose a new folder or remove it.")
  params_lib.check_params(config, params)
  directory.mkdir(parents=True)
  with ocp.StandardCheckpointer() as checkpointer:
    checkpointer.save(directory / PARAMS_DIR, params_lib.unflatten_params(params))
  (directory / CONFIG_FILE).write_text(json.dumps(config.to_dict(), indent=2) + "\n")
  logging.info("Saved %d parameters to %s", len(params), directory)
  return directory


def save_decoder(directory: str | os.PathLike[str], model: Decoder) -> pathlib.Path:
  """Save a decoder's config and parameters in a new folder (see `save_params`)."""
  _, state = nnx.split(model)
  return save_params(directory, model.config, params_lib.flatten_params(state))


def read_config(directory: str | os.PathLike[str]) -> ModelConfig:
  """Read the ModelConfig of a folder written by `save_params`."""
  path = pathlib.Path(directory) / CONFIG_FILE
  if not path.is_file():
    raise FileNotFoundError(
        f"No {CONFIG_FILE} in {directory}; expected a folder written by save_params.")
  return ModelConfig.from_dict(json.loads(path.read_text()))


def abstract_params(
    config: ModelConfig,
    shardings: Mapping[params_lib.ParamPath, jax.sharding.Sharding] | None = None,
) -> dict[Any, Any]:
  """Return the nested dict of `jax.ShapeDtypeStruct` targets: shape, config.param_dtype and
  the sharding of each path (default: unsharded on the default device)."""
  targets = {}
  for path, shape in params_lib.param_shapes(config).items():
    sharding = None if shardings is None else shardings[path]
    targets[path] = jax.ShapeDtypeStruct(shape, config.param_jnp_dtype, sharding=sharding)
  return params_lib.unflatten_params(targets)


def restore_params(directory: str | os.PathLike[str], targets: Any) -> Any:
  """Restore saved parameters into targets, a tree of ShapeDtypeStruct with shardings.

  Each array is read directly into its target's sharding and cast to its dtype.
  """
  params_dir = pathlib.Path(directory).absolute() / PARAMS_DIR
  if not params_dir.is_dir():
    raise FileNotFoundError(
        f"No {PARAMS_DIR}/ checkpoint in {directory}; expected a folder written by "
        "save_params.")
  with ocp.StandardCheckpointer() as checkpointer:
    return checkpointer.restore(params_dir, targets)


def restore_decoder(
    directory: str | os.PathLike[str],
    param_dtype: str | None = None,
    compute_dtype: str | None = None,
    shardings: Mapping[params_lib.ParamPath, jax.sharding.Sharding] | None = None,
) -> Decoder:
  """Restore a decoder saved by `save_params` or `save_decoder`.

  Args:
    directory: the saved folder.
    param_dtype: dtype name of the restored parameters; default the saved config's.
    compute_dtype: dtype name of activations; default param_dtype.
    shardings: optional {path: sharding} of every parameter.
  """
  config = read_config(directory)
  if param_dtype is not None:
    config = config.with_dtypes(param_dtype, compute_dtype)
  elif compute_dtype is not None:
    config = config.with_dtypes(config.param_dtype, compute_dtype)
  restored = restore_params(directory, abstract_params(config, shardings))
  graphdef, state = params_lib.abstract_decoder(config)
  nnx.replace_by_pure_dict(state, restored)
  return nnx.merge(graphdef, state)
