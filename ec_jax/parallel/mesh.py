"""Device mesh with `data` and `model` axes, the logical-axis table and parameter shardings.

The mesh has two axes, both `AxisType.Auto`, so the compiler propagates shardings from
`NamedSharding` inputs and constraints:

  data   splits the rows of a batch (problems x samples); every data slice has a full model.
  model  splits attention heads, the SwiGLU width and the vocabulary (tensor parallelism).

Logical axis names are the ones `ec_jax.model` stores on each parameter and on the KV cache
layout (`CACHE_LOGICAL_AXES`). `LOGICAL_AXIS_RULES` maps them to mesh axes:

  batch          -> data
  heads          -> model   query heads
  kv_heads       -> model   key/value heads, so the KV cache is split along with them
  mlp            -> model   SwiGLU hidden width
  vocab          -> model   embedding rows, the untied output matrix and the logits
  embed, head_dim, cache_length -> replicated

Why `vocab` goes on `model`: the embedding and untied output matrices of large-vocabulary
models are big. For Qwen2.5-72B they hold 2 x 152064 x 8192 bfloat16 values (4.6 GiB), which
would otherwise be copied onto every chip. Splitting them also splits the [rows, vocab] logits of
each decode step. The price is a few collectives, which XLA inserts under Auto axes: the
embedding lookup combines partial rows over `model`, and top-k and log-sum-exp over the
vocabulary reduce across `model`.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

from absl import logging
import jax
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec
import numpy as np

from ec_jax.model import params as params_lib
from ec_jax.model.config import ModelConfig
from ec_jax.model.kv_cache import CACHE_LOGICAL_AXES

DATA_AXIS = "data"
MODEL_AXIS = "model"
MESH_AXES = (DATA_AXIS, MODEL_AXIS)

# (logical axis name, mesh axis or None for replicated), in the pair format that
# `flax.nnx.logical_axis_rules` also takes.
LogicalAxisRules = Sequence[tuple[str, str | None]]

LOGICAL_AXIS_RULES: tuple[tuple[str, str | None], ...] = (
    ("batch", DATA_AXIS),
    ("heads", MODEL_AXIS),
    ("kv_heads", MODEL_AXIS),
    ("mlp", MODEL_AXIS),
    ("vocab", MODEL_AXIS),
    ("embed", None),
    ("head_dim", None),
    ("cache_length", None),
)

# Logical axes whose split must be exact: attention assigns whole heads to devices.
_HEAD_AXES = ("heads", "kv_heads")


def resolve_mesh_shape(data: int, model: int, device_count: int) -> tuple[int, int]:
  """Return (data, model) sizes for `device_count` devices; data = -1 takes all the rest.

  Raises:
    ValueError: a size is not a positive integer (or -1 for data), or data x model is not the
      device count.
  """
  for name, value in (("mesh.data", data), ("mesh.model", model)):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
      raise ValueError(f"{name} must be an integer, got {value!r}.")
  data, model = int(data), int(model)
  if model < 1:
    raise ValueError(f"mesh.model must be a positive integer, got {model}.")
  if data == -1:
    if device_count % model:
      raise ValueError(
          f"mesh.model = {model} does not divide the device count {device_count}; set "
          f"mesh.model to a divisor of {device_count}.")
    return device_count // model, model
  if data < 1:
    raise ValueError(
        f"mesh.data must be a positive integer or -1 (all devices / mesh.model), got {data}.")
  if data * model != device_count:
    raise ValueError(
        f"mesh.data x mesh.model = {data} x {model} = {data * model}, but there are "
        f"{device_count} devices; set mesh.data = -1 or choose sizes whose product is "
        f"{device_count}.")
  return data, model


def make_mesh(data: int = -1, model: int = 1,
              devices: Sequence[jax.Device] | None = None) -> Mesh:
  """Build a ('data', 'model') mesh of Auto axes over `devices` (default: all devices).

  `jax.make_mesh` orders the devices so that neighbouring `model` positions are close in the
  interconnect where JAX has the platform's topology (TPU).

  Args:
    data: size of the data axis; -1 uses all devices / model.
    model: size of the model axis.
    devices: the devices to use; default `jax.devices()` (all processes' devices).

  Raises:
    ValueError: the sizes do not fit the device count.
  """
  if devices is None:
    devices = jax.devices()
  devices = list(devices)
  shape = resolve_mesh_shape(data, model, len(devices))
  mesh = jax.make_mesh(shape, MESH_AXES, (AxisType.Auto, AxisType.Auto), devices=devices)
  if model_axis_crosses_processes(mesh.devices):
    logging.warning(
        "The model axis (size %d) spans several processes, so tensor-parallel collectives go "
        "over the network between hosts. Prefer mesh.model <= the devices per process (%d).",
        shape[1], jax.local_device_count())
  return mesh


def mesh_from_config(config: Any, devices: Sequence[jax.Device] | None = None) -> Mesh:
  """Build the mesh from a config's `mesh.data` and `mesh.model` (defaults -1 and 1).

  `config` is an ml_collections ConfigDict or a mapping with an optional `mesh` group.
  """
  group = config.get("mesh") or {}
  return make_mesh(data=group.get("data", -1), model=group.get("model", 1), devices=devices)


def describe_mesh(mesh: Mesh) -> str:
  """Return a one-line description of the mesh shape, axis types and device kind."""
  sizes = ", ".join(f"{name}={size}" for name, size in mesh.shape.items())
  kinds = sorted({device.device_kind for device in mesh.devices.flat})
  return f"Mesh({sizes}; axis types {mesh.axis_types}; devices: {', '.join(kinds)})"


def model_axis_crosses_processes(devices: np.ndarray) -> bool:
  """Return whether some row of a [data, model] device array has devices of two processes."""
  for row in devices.reshape(-1, devices.shape[-1]):
    if len({device.process_index for device in row}) > 1:
      return True
  return False


def logical_to_spec(logical_axes: Sequence[str | None],
                    rules: LogicalAxisRules = LOGICAL_AXIS_RULES) -> PartitionSpec:
  """Map logical axis names (one per array dimension) to a PartitionSpec.

  A None entry stays replicated. Every other name must appear in `rules`.

  Raises:
    ValueError: a name is not in the rules, or one mesh axis would shard two dimensions.
  """
  table = dict(rules)
  mesh_axes = []
  first_use: dict[str, int] = {}
  for dim, name in enumerate(logical_axes):
    if name is None:
      mesh_axes.append(None)
      continue
    if name not in table:
      raise ValueError(
          f"Logical axis {name!r} (dimension {dim} of {tuple(logical_axes)}) has no rule; the "
          f"known names are {sorted(table)}. Add it to the logical-axis rules.")
    mesh_axis = table[name]
    if mesh_axis is not None:
      if mesh_axis in first_use:
        raise ValueError(
            f"Logical axes {tuple(logical_axes)} map mesh axis {mesh_axis!r} to dimensions "
            f"{first_use[mesh_axis]} and {dim}; a mesh axis can shard only one dimension of an "
            "array. Map one of these logical axes to another mesh axis or to None.")
      first_use[mesh_axis] = dim
    mesh_axes.append(mesh_axis)
  return PartitionSpec(*mesh_axes)


def logical_sharding(mesh: Mesh, logical_axes: Sequence[str | None],
                     rules: LogicalAxisRules = LOGICAL_AXIS_RULES) -> NamedSharding:
  """Return the NamedSharding on `mesh` of an array with these logical axes."""
  return NamedSharding(mesh, logical_to_spec(logical_axes, rules))


def check_model_axis(config: ModelConfig, model_size: int) -> None:
  """Raise ValueError unless `model_size` divides the query and key/value head counts.

  Attention gives each device whole heads, and the KV cache is split along `kv_heads`, so the
  model axis can be at most `num_kv_heads` wide.
  """
  for name, count in (("num_kv_heads", config.num_kv_heads), ("num_heads", config.num_heads)):
    if count % model_size:
      divisors = [d for d in range(1, config.num_kv_heads + 1)
                  if config.num_kv_heads % d == 0 and config.num_heads % d == 0]
      raise ValueError(
          f"mesh.model = {model_size} does not divide the model's {name} = {count}; "
          f"set mesh.model to one of {divisors}.")


def param_shardings(config: ModelConfig, mesh: Mesh,
                    rules: LogicalAxisRules = LOGICAL_AXIS_RULES
                    ) -> dict[params_lib.ParamPath, NamedSharding]:
  """Return {parameter path: NamedSharding} for a decoder with this config on `mesh`.

  Each parameter's logical axes come from `ec_jax.model.params.logical_axes`. A dimension that
  its mesh axis does not divide (an odd vocabulary size, say) is replicated, with a warning,
  because `jax.device_put` rejects uneven shards.

  Raises:
    ValueError: the model axis does not divide the head counts, or a rule is missing or
      collides.
  """
  model_size = mesh.shape.get(MODEL_AXIS, 1)
  check_model_axis(config, model_size)
  shapes = params_lib.param_shapes(config)
  shardings = {}
  for path, axes in params_lib.logical_axes(config).items():
    spec = list(logical_to_spec(axes, rules))
    for dim, mesh_axis in enumerate(spec):
      if mesh_axis is None:
        continue
      size, parts = shapes[path][dim], mesh.shape[mesh_axis]
      if size % parts == 0:
        continue
      if axes[dim] in _HEAD_AXES:
        raise ValueError(
            f"Parameter {path} dimension {dim} ({axes[dim]}) has size {size}, which mesh axis "
            f"{mesh_axis!r} of size {parts} does not divide; choose a mesh.model that divides "
            "it.")
      logging.warning(
          "Parameter %s: dimension %d (%s) of size %d is not divisible by mesh axis %r of "
          "size %d, so it is replicated on every device of that axis.",
          path, dim, axes[dim], size, mesh_axis, parts)
      spec[dim] = None
    shardings[path] = NamedSharding(mesh, PartitionSpec(*spec))
  return shardings


def cache_sharding(mesh: Mesh, rules: LogicalAxisRules = LOGICAL_AXIS_RULES) -> NamedSharding:
  """Return the sharding of one layer's cache array [batch, kv_heads, max_len, head_dim].

  The logical axes are `ec_jax.model.kv_cache.CACHE_LOGICAL_AXES`. The caller pads the batch
  to a multiple of the data axis (`pad_rows`), and `check_model_axis` guards the heads.
  """
  return logical_sharding(mesh, CACHE_LOGICAL_AXES, rules)


def batch_sharding(mesh: Mesh, ndim: int) -> NamedSharding:
  """Return the sharding of an array [batch, ...] of `ndim` dimensions: rows on `data`."""
  if ndim < 1:
    raise ValueError(f"A batch array needs at least one dimension, got ndim = {ndim}.")
  return logical_sharding(mesh, ("batch",) + (None,) * (ndim - 1))


def pad_rows(n_rows: int, data_size: int) -> tuple[int, np.ndarray]:
  """Return the row count padded to a multiple of `data_size`, and the mask of real rows.

  Returns:
    (padded, mask) where padded = ceil(n_rows / data_size) * data_size and mask is a
    [padded] bool array, true for the first n_rows rows.

  Raises:
    ValueError: n_rows is negative or data_size is not positive.
  """
  for name, value, low in (("n_rows", n_rows, 0), ("data_size", data_size, 1)):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
      raise ValueError(f"{name} must be an integer >= {low}, got {value!r}.")
  padded = math.ceil(n_rows / data_size) * data_size
  mask = np.arange(padded) < n_rows
  return padded, mask
