"""Save converted decoder weights with Orbax once, and restore them onto given shardings.

A saved folder contains `model_config.json` (the ModelConfig) and `params/`, an Orbax checkpoint of
the nested parameter dict that `nnx.to_pure_dict` gives for a `Decoder`. `convert.convert` adds the
tokenizer files that `ec_jax.text.save_tokenizer` writes. `save_tensors` writes the
checkpoint from an iterator, a group of tensors at a time, so converting a large GGUF or
safetensors file keeps about one group in host memory rather than the whole model. Restoring
reads each array straight into its target sharding and dtype: each process reads only the shards
of its own devices.
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil
from collections.abc import Iterable
from typing import Any, Mapping

import jax
import numpy as np
import orbax.checkpoint as ocp
from absl import logging
from flax import nnx

from ec_jax.model import params as params_lib
from ec_jax.model.config import ModelConfig
from ec_jax.model.decoder import Decoder

# embedded.CONVERTED_CONFIG_FILE and CONVERTED_PARAMS_DIR repeat these names.
CONFIG_FILE = "model_config.json"
PARAMS_DIR = "params"
# Tensors are collected until their bytes reach this, then written with one Orbax partial save.
# Each partial save lists the earlier ones, so one save per tensor would cost time quadratic in
# the tensor count. Groups keep the count of saves near model bytes / group bytes.
DEFAULT_GROUP_BYTES = 1 << 30


def _check_tensor(path: params_lib.ParamPath, array: Any,
                  shapes: Mapping[params_lib.ParamPath, tuple[int, ...]],
                  saved: set[params_lib.ParamPath]) -> None:
  """Raise ValueError unless `path` is a decoder parameter of its shape, not seen before."""
  if path not in shapes:
    raise ValueError(f"Parameter {path} is not a parameter of this decoder config.")
  if path in saved:
    raise ValueError(f"Parameter {path} appears twice in the tensors to save.")
  if tuple(np.shape(array)) != shapes[path]:
    raise ValueError(
        f"Parameter {path} has shape {tuple(np.shape(array))}; the decoder expects "
        f"{shapes[path]}.")


def _write_group(params_dir: pathlib.Path, group: dict[params_lib.ParamPath, np.ndarray]) -> None:
  ocp.v1.partial.save(params_dir, params_lib.unflatten_params(group))


def save_tensors(
    directory: str | os.PathLike[str],
    config: ModelConfig,
    tensors: Iterable[tuple[params_lib.ParamPath, Any]],
    dtype: str | None = None,
    group_bytes: int = DEFAULT_GROUP_BYTES,
) -> pathlib.Path:
  """Save a config and its parameters, read from an iterator, in a new folder.

  The iterator yields (path, array in model layout) pairs in any order. Arrays are cast to
  `dtype` and collected until they reach `group_bytes`, then written with
  `orbax.checkpoint.v1.partial.save` and dropped. So host memory contains one group (about
  twice its size while Orbax writes it) plus the tensor being converted, and one tensor when
  group_bytes is 0. Call it from one process.

  Args:
    directory: the new folder.
    config: the decoder config; its param_dtype becomes `dtype`.
    tensors: (path, array) of every decoder parameter, each once.
    dtype: dtype name of the stored arrays (a key of `ec_jax.model.config.DTYPES`); default
      config.param_dtype.
    group_bytes: bytes of cast arrays written together.

  Raises:
    FileExistsError: the folder already exists; Orbax does not overwrite checkpoints.
    ValueError: a tensor is not a parameter of the config, has the wrong shape or appears
      twice, or a parameter is missing. The partly written folder is removed.
  """
  directory = pathlib.Path(directory).absolute()
  if directory.exists():
    raise FileExistsError(f"{directory} already exists; choose a new folder or remove it.")
  if dtype is not None:
    config = config.with_dtypes(dtype)
  shapes = params_lib.param_shapes(config)
  params_dir = directory / PARAMS_DIR
  directory.mkdir(parents=True)
  try:
    saved = _write_groups(params_dir, config, tensors, shapes, group_bytes)
    missing = sorted(set(shapes) - saved, key=str)
    if missing:
      raise ValueError(f"Weights do not match the decoder: missing {missing}.")
    ocp.v1.partial.finalize(params_dir)
  except BaseException:
    # The partial saves write beside params_dir, inside the new folder.
    shutil.rmtree(directory, ignore_errors=True)
    raise
  (directory / CONFIG_FILE).write_text(json.dumps(config.to_dict(), indent=2) + "\n")
  logging.info("Saved %d parameters (%s) to %s", len(saved), config.param_dtype, directory)
  return directory


def _write_groups(params_dir: pathlib.Path, config: ModelConfig,
                  tensors: Iterable[tuple[params_lib.ParamPath, Any]],
                  shapes: Mapping[params_lib.ParamPath, tuple[int, ...]],
                  group_bytes: int) -> set[params_lib.ParamPath]:
  """Cast and write the tensors in groups of about group_bytes; return the saved paths."""
  dtype = config.param_jnp_dtype
  saved: set[params_lib.ParamPath] = set()
  group: dict[params_lib.ParamPath, np.ndarray] = {}
  size = 0
  for path, array in tensors:
    _check_tensor(path, array, shapes, saved)
    saved.add(path)
    group[path] = np.ascontiguousarray(np.asarray(array), dtype)
    size += group[path].nbytes
    # Without this reference, writing the group frees the array.
    del array
    if size >= group_bytes:
      _write_group(params_dir, group)
      logging.info("Wrote %d tensors (%.1f MiB); %d of %d parameters saved.", len(group),
                   size / 2**20, len(saved), len(shapes))
      group, size = {}, 0
  if group:
    _write_group(params_dir, group)
  return saved


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
  return save_tensors(directory, config, params.items())


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
  the sharding of each path (default: this process's first device)."""
  default = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
  targets = {}
  for path, shape in params_lib.param_shapes(config).items():
    sharding = default if shardings is None else shardings[path]
    targets[path] = jax.ShapeDtypeStruct(shape, config.param_jnp_dtype, sharding=sharding)
  return params_lib.unflatten_params(targets)


def restore_params(directory: str | os.PathLike[str], targets: Any) -> Any:
  """Restore saved parameters into targets, a tree of ShapeDtypeStruct with shardings.

  Each array is read directly into its target's sharding and cast to its dtype, so a process
  reads and holds only the shards of its own devices. Every process must call this.

  Raises:
    FileNotFoundError: the folder has no params/ checkpoint.
    ValueError: from Orbax, when a target has no sharding.
  """
  params_dir = pathlib.Path(directory).absolute() / PARAMS_DIR
  if not params_dir.is_dir():
    raise FileNotFoundError(
        f"No {PARAMS_DIR}/ checkpoint in {directory}; expected a folder written by "
        "save_params.")
  # orbax.checkpoint.v1 reads the checkpoints of save_tensors and the single-save checkpoints
  # that earlier versions of save_params wrote (StandardCheckpointer).
  return ocp.v1.load(params_dir, targets)


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
