"""Multi-process start-up of JAX, and moving data between processes.

A run spans one process per host (or several processes on one machine in tests). Every process
calls `initialize()` before it touches a device. The mode comes from the `mode` argument or the
environment variable EC_JAX_DISTRIBUTED:

  auto      (default) `explicit` when EC_JAX_COORDINATOR is set; `slurm` inside a SLURM job
            step of more than one task (SLURM_JOB_ID, SLURM_NTASKS > 1, SLURM_PROCID);
            otherwise one process, without `jax.distributed.initialize`.
  off       one process; never calls `jax.distributed.initialize`.
  explicit  coordinator address, process count and process id from the arguments or from
            EC_JAX_COORDINATOR, EC_JAX_NUM_PROCESSES and EC_JAX_PROCESS_ID.
  slurm     process count and id from SLURM_NTASKS and SLURM_PROCID; the coordinator from
            EC_JAX_COORDINATOR (launch/slurm_gpu.sh sets it to the job's first node). Every
            local device stays visible, for one process per host.
  tpu       a Cloud TPU pod slice: JAX reads the workers from the TPU VM metadata server.
            Auto mode does not detect it; launch/tpu_pod.sh sets EC_JAX_DISTRIBUTED=tpu.

Timeouts, in whole seconds: EC_JAX_INIT_TIMEOUT_S (connecting to the coordinator, default
300), EC_JAX_HEARTBEAT_TIMEOUT_S (after this long without heartbeats a process counts as dead
and JAX terminates the others, default 100) and EC_JAX_SHUTDOWN_TIMEOUT_S (default 300).

Failures are not caught. A bad setting raises ValueError. When JAX cannot reach the
coordinator, or a peer dies, JAX terminates the process with a fatal log that names the
coordination-service error (and a dead peer as `Task <id>` when the coordinator notices it).
"""

from __future__ import annotations

import dataclasses
import os
import platform
from collections.abc import Callable
from typing import Any, Mapping, TypeVar

from absl import logging
import flax
import jax
from jax.experimental import multihost_utils
import jaxlib
import numpy as np

ENV_MODE = "EC_JAX_DISTRIBUTED"
ENV_COORDINATOR = "EC_JAX_COORDINATOR"
ENV_NUM_PROCESSES = "EC_JAX_NUM_PROCESSES"
ENV_PROCESS_ID = "EC_JAX_PROCESS_ID"
ENV_INIT_TIMEOUT = "EC_JAX_INIT_TIMEOUT_S"
ENV_HEARTBEAT_TIMEOUT = "EC_JAX_HEARTBEAT_TIMEOUT_S"
ENV_SHUTDOWN_TIMEOUT = "EC_JAX_SHUTDOWN_TIMEOUT_S"

MODES = ("auto", "off", "explicit", "slurm", "tpu")

_T = TypeVar("_T")

# The defaults of jax.distributed.initialize in jax 0.10.2.
DEFAULT_INIT_TIMEOUT_S = 300
DEFAULT_HEARTBEAT_TIMEOUT_S = 100
DEFAULT_SHUTDOWN_TIMEOUT_S = 300


@dataclasses.dataclass(frozen=True)
class StartupPlan:
  """Start-up settings of this process, resolved from arguments and environment variables.

  Attributes:
    mode: `single` (no jax.distributed), `explicit`, `slurm` or `tpu`.
    coordinator_address: host:port of process 0's coordination service; None in `single` and
      `tpu` modes.
    num_processes: number of processes; None in `single` and `tpu` modes.
    process_id: this process's index in [0, num_processes); None in `single` and `tpu` modes.
    initialization_timeout_s: seconds to keep trying to reach the coordinator.
    heartbeat_timeout_s: seconds without heartbeats after which a process counts as dead.
    shutdown_timeout_s: seconds a finishing process waits for the others at shutdown.
  """

  mode: str
  coordinator_address: str | None = None
  num_processes: int | None = None
  process_id: int | None = None
  initialization_timeout_s: int = DEFAULT_INIT_TIMEOUT_S
  heartbeat_timeout_s: int = DEFAULT_HEARTBEAT_TIMEOUT_S
  shutdown_timeout_s: int = DEFAULT_SHUTDOWN_TIMEOUT_S

  @property
  def is_distributed(self) -> bool:
    return self.mode != "single"


def _parse_int(name: str, value: Any, low: int) -> int:
  """Return value as an int >= low; `name` is the argument or variable in the error."""
  if isinstance(value, bool):
    raise ValueError(f"{name} must be an integer >= {low}, got {value!r}.")
  try:
    number = int(value)
  except (TypeError, ValueError):
    raise ValueError(f"{name} must be an integer >= {low}, got {value!r}.") from None
  if number < low or (isinstance(value, float) and value != number):
    raise ValueError(f"{name} must be an integer >= {low}, got {value!r}.")
  return number


def _pick(argument: Any, argument_name: str, environ: Mapping[str, str],
          variable: str) -> tuple[Any, str]:
  """Return (value, name for errors): the argument when given, else the environment variable."""
  if argument is not None:
    return argument, argument_name
  return environ.get(variable) or None, variable


def _is_slurm_multi_task(environ: Mapping[str, str]) -> bool:
  if not all(environ.get(name) for name in ("SLURM_JOB_ID", "SLURM_NTASKS", "SLURM_PROCID")):
    return False
  try:
    return int(environ["SLURM_NTASKS"]) > 1
  except ValueError:
    return False


def plan_startup(
    mode: str | None = None,
    *,
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    initialization_timeout_s: int | None = None,
    heartbeat_timeout_s: int | None = None,
    shutdown_timeout_s: int | None = None,
    environ: Mapping[str, str] | None = None,
) -> StartupPlan:
  """Resolve how this process starts; arguments take precedence over environment variables.

  Args:
    mode: one of MODES; default EC_JAX_DISTRIBUTED, else `auto`.
    coordinator_address: host:port of process 0; default EC_JAX_COORDINATOR.
    num_processes: default EC_JAX_NUM_PROCESSES (explicit mode) or SLURM_NTASKS (slurm mode).
    process_id: default EC_JAX_PROCESS_ID (explicit mode) or SLURM_PROCID (slurm mode).
    initialization_timeout_s: default EC_JAX_INIT_TIMEOUT_S, else 300.
    heartbeat_timeout_s: default EC_JAX_HEARTBEAT_TIMEOUT_S, else 100.
    shutdown_timeout_s: default EC_JAX_SHUTDOWN_TIMEOUT_S, else 300.
    environ: the environment to read; default os.environ.

  Raises:
    ValueError: an unknown mode, a missing or invalid setting, or a process id out of range.
  """
  environ = os.environ if environ is None else environ
  mode_value, mode_name = _pick(mode, "mode", environ, ENV_MODE)
  mode_value = (mode_value or "auto").strip().lower()
  if mode_value not in MODES:
    raise ValueError(f"{mode_name} must be one of {list(MODES)}, got {mode_value!r}.")

  timeouts = {}
  for key, argument, variable, default in (
      ("initialization_timeout_s", initialization_timeout_s, ENV_INIT_TIMEOUT,
       DEFAULT_INIT_TIMEOUT_S),
      ("heartbeat_timeout_s", heartbeat_timeout_s, ENV_HEARTBEAT_TIMEOUT,
       DEFAULT_HEARTBEAT_TIMEOUT_S),
      ("shutdown_timeout_s", shutdown_timeout_s, ENV_SHUTDOWN_TIMEOUT,
       DEFAULT_SHUTDOWN_TIMEOUT_S)):
    value, name = _pick(argument, key, environ, variable)
    timeouts[key] = default if value is None else _parse_int(name, value, 1)

  coordinator, coordinator_name = _pick(
      coordinator_address, "coordinator_address", environ, ENV_COORDINATOR)
  if mode_value == "auto":
    if coordinator:
      mode_value = "explicit"
    elif _is_slurm_multi_task(environ):
      mode_value = "slurm"
    else:
      mode_value = "off"
  if mode_value == "off":
    return StartupPlan(mode="single", **timeouts)
  if mode_value == "tpu":
    return StartupPlan(mode="tpu", **timeouts)

  if mode_value == "explicit":
    count, count_name = _pick(num_processes, "num_processes", environ, ENV_NUM_PROCESSES)
    index, index_name = _pick(process_id, "process_id", environ, ENV_PROCESS_ID)
  else:
    count, count_name = _pick(num_processes, "num_processes", environ, "SLURM_NTASKS")
    index, index_name = _pick(process_id, "process_id", environ, "SLURM_PROCID")
  if not coordinator:
    hint = ("launch/slurm_gpu.sh sets it to the first node of the job"
            if mode_value == "slurm" else "set it to process 0's host:port")
    raise ValueError(
        f"{mode_value} mode needs the coordinator address in {coordinator_name} (host:port); "
        f"{hint}.")
  host, _, port = str(coordinator).rpartition(":")
  if not host or not port.isdigit() or not 0 < int(port) < 65536:
    raise ValueError(
        f"{coordinator_name} must be host:port with a port in 1..65535, got {coordinator!r}.")
  for value, name in ((count, count_name), (index, index_name)):
    if value is None:
      raise ValueError(f"{mode_value} mode needs {name}; set it for every process.")
  count = _parse_int(count_name, count, 1)
  index = _parse_int(index_name, index, 0)
  if index >= count:
    raise ValueError(
        f"{index_name} = {index} is out of range for {count_name} = {count}; process ids run "
        f"from 0 to {count - 1}.")
  return StartupPlan(mode=mode_value, coordinator_address=str(coordinator),
                     num_processes=count, process_id=index, **timeouts)


# The plan of the first `initialize` call in this process.
_STARTED: StartupPlan | None = None


def initialize(mode: str | None = None, **settings: Any) -> StartupPlan:
  """Start JAX's distributed runtime when the plan requires it, then log the runtime.

  Call it first in a program, before any device use. The keyword arguments are those of
  `plan_startup`. A second call returns the plan of the first without starting again.

  Raises:
    ValueError: from `plan_startup`, on an invalid setting.
    RuntimeError: from JAX, when a backend was started before this call.
  """
  global _STARTED
  if _STARTED is not None:
    return _STARTED
  plan = plan_startup(mode, **settings)
  if plan.is_distributed:
    logging.info(
        "Starting jax.distributed (%s mode): coordinator %s, process %s of %s; initialization "
        "timeout %d s, heartbeat timeout %d s. If JAX then terminates with DEADLINE_EXCEEDED, "
        "process 0 did not start or the coordinator address is unreachable from this host.",
        plan.mode, plan.coordinator_address or "from the TPU metadata",
        plan.process_id if plan.process_id is not None else "(from the TPU metadata)",
        plan.num_processes or "(from the TPU metadata)",
        plan.initialization_timeout_s, plan.heartbeat_timeout_s)
    kwargs = dict(
        initialization_timeout=plan.initialization_timeout_s,
        heartbeat_timeout_seconds=plan.heartbeat_timeout_s,
        shutdown_timeout_seconds=plan.shutdown_timeout_s,
    )
    if plan.mode != "tpu":
      # With every address given, "deactivate" stops JAX's own SLURM detection, which would
      # otherwise make only device SLURM_LOCALID visible to each process.
      kwargs.update(coordinator_address=plan.coordinator_address,
                    num_processes=plan.num_processes, process_id=plan.process_id,
                    cluster_detection_method="deactivate")
    try:
      jax.distributed.initialize(**kwargs)
    except (RuntimeError, ValueError, TypeError) as error:
      logging.error("jax.distributed.initialize failed (%s mode, coordinator %s): %s",
                    plan.mode, plan.coordinator_address, error)
      raise
  _STARTED = plan
  log_runtime()
  return plan


def runtime_summary() -> dict[str, Any]:
  """Return versions, process index and count, and the local and global devices."""
  local = jax.local_devices()
  return {
      "python": platform.python_version(),
      "jax": jax.__version__,
      "jaxlib": jaxlib.__version__,
      "flax": flax.__version__,
      "numpy": np.__version__,
      "backend": jax.default_backend(),
      "process_index": jax.process_index(),
      "process_count": jax.process_count(),
      "local_devices": [str(device) for device in local],
      "local_device_count": len(local),
      "global_device_count": jax.device_count(),
      "device_kinds": sorted({device.device_kind for device in jax.devices()}),
  }


def log_runtime() -> None:
  """Log versions, the process index and count, and the local and global devices."""
  summary = runtime_summary()
  logging.info(
      "Runtime: python %s, jax %s, jaxlib %s, flax %s, numpy %s; backend %s.",
      summary["python"], summary["jax"], summary["jaxlib"], summary["flax"], summary["numpy"],
      summary["backend"])
  logging.info(
      "Process %d of %d; %d local devices %s; %d global devices of kind %s.",
      summary["process_index"], summary["process_count"], summary["local_device_count"],
      summary["local_devices"], summary["global_device_count"], summary["device_kinds"])


def is_primary() -> bool:
  """Return whether this is process 0, the one that writes files."""
  return jax.process_index() == 0


def local_row_slice(sharding: jax.sharding.Sharding, global_shape: tuple[int, ...]) -> slice:
  """Return the rows (axis 0) of a global array that this process's devices contain.

  With rows on `data`, this is the part of a global batch that each process passes to
  `global_array_from_local`.

  Raises:
    ValueError: the process's rows are not one contiguous range.
  """
  indices = sharding.addressable_devices_indices_map(tuple(global_shape))
  rows = set()
  for index in indices.values():
    row_slice = index[0] if index else slice(None)
    rows.update(range(*row_slice.indices(global_shape[0])))
  if not rows:
    return slice(0, 0)
  start, stop = min(rows), max(rows) + 1
  if len(rows) != stop - start:
    raise ValueError(
        f"This process's devices contain rows {sorted(rows)} of a global array of shape {global_shape}, "
        "which are not contiguous; order the mesh devices by process.")
  return slice(start, stop)


def global_array_from_local(
    local_data: np.ndarray | jax.Array,
    sharding: jax.sharding.Sharding,
    global_shape: tuple[int, ...] | None = None,
) -> jax.Array:
  """Assemble a global array from each process's rows (`jax.make_array_from_process_local_data`).

  Args:
    local_data: this process's part, e.g. rows `local_row_slice(sharding, global_shape)`.
    sharding: the global array's sharding.
    global_shape: the global shape; default inferred by JAX from the local shapes.

  Raises:
    ValueError: local_data does not have the rows of this process's devices under `sharding`.
  """
  if global_shape is not None:
    expected = local_row_slice(sharding, global_shape)
    rows = expected.stop - expected.start
    if np.shape(local_data)[0] != rows and np.shape(local_data)[0] != global_shape[0]:
      raise ValueError(
          f"Process {jax.process_index()} passed {np.shape(local_data)[0]} rows; under this "
          f"sharding it has rows [{expected.start}, {expected.stop}) of {global_shape}, so "
          f"pass those {rows} rows (or the whole array).")
  return jax.make_array_from_process_local_data(sharding, local_data, global_shape)


def gather_to_host(tree: Any) -> Any:
  """Return a pytree of NumPy arrays with every process's data, on every process.

  A global jax.Array comes back whole. A process-local leaf (a NumPy array or a fully
  addressable jax.Array) is concatenated along axis 0 in process order (process 0 first), so
  all processes must pass the same shapes. Uses `multihost_utils.process_allgather(tiled=True)`;
  every process must call it.
  """
  return multihost_utils.process_allgather(tree, tiled=True)


def broadcast_from_primary(value: Any) -> Any:
  """Return process 0's `value` on every process, e.g. how far a resumed run got.

  `value` is a pytree of numbers or NumPy arrays with the same shapes and dtypes on every
  process; every process must call this. Python scalars come back as Python scalars.
  """
  leaves, treedef = jax.tree.flatten(value)
  arrays = [np.asarray(leaf) for leaf in leaves]
  received = multihost_utils.broadcast_one_to_all(arrays)
  out = []
  for leaf, result in zip(leaves, received):
    result = np.asarray(result)
    out.append(result.item() if isinstance(leaf, (bool, int, float)) else result)
  return jax.tree.unflatten(treedef, out)


class PrimaryProcessError(RuntimeError):
  """Raised on the other processes when a step that only process 0 runs failed unexpectedly."""


# Outcome codes of `run_on_primary`: 0 is success, i + 1 is error_types[i], and this is any
# other exception.
_OTHER_ERROR = -1


def encode_outcome(error: BaseException | None,
                   error_types: tuple[type[Exception], ...]) -> tuple[int, bytes]:
  """Return (outcome code, UTF-8 message) of a step's error, or (0, b"") for success.

  An error of one of `error_types` gets code i + 1 for the first matching type i and its
  message. Any other error gets code -1 and `TypeName: message`.
  """
  if error is None:
    return 0, b""
  for index, error_type in enumerate(error_types):
    if isinstance(error, error_type):
      return index + 1, str(error).encode("utf-8")
  return _OTHER_ERROR, f"{type(error).__name__}: {error}".encode("utf-8")


def decode_outcome(code: int, message: bytes,
                   error_types: tuple[type[Exception], ...]) -> Exception | None:
  """Return the exception that `encode_outcome` encoded (None for success).

  Code i + 1 gives `error_types[i](message)`, so each of those types must take the message as
  its only argument. Code -1 gives a PrimaryProcessError that names process 0.
  """
  if code == 0:
    return None
  text = message.decode("utf-8", errors="replace")
  if 1 <= code <= len(error_types):
    return error_types[code - 1](text)
  return PrimaryProcessError(f"Process 0 failed in a step that only it runs: {text}")


def run_on_primary(step: Callable[[], _T],
                   error_types: tuple[type[Exception], ...] = ()) -> _T | None:
  """Run `step` on process 0 only, and raise its error on every process.

  The other processes wait for process 0's outcome, so an error on process 0 stops every
  process at once. Without this, the others would wait in their next collective until the
  heartbeat timeout. On process 0 the original exception is re-raised. On the other processes
  an error of one of `error_types` is raised as the same type with the same message, and any
  other exception as PrimaryProcessError. Every process must call this, because it calls
  `broadcast_from_primary` once or twice. With one process it only calls `step`.

  Returns:
    step's result on process 0, and None on the other processes.
  """
  if jax.process_count() == 1:
    return step()
  result, error = None, None
  if is_primary():
    try:
      result = step()
    except Exception as caught:  # pylint: disable=broad-exception-caught
      # Re-raised below, once the other processes know of it.
      error = caught
  code, message = encode_outcome(error, error_types)
  header = broadcast_from_primary(np.array([code, len(message)], np.int64))
  code, length = int(header[0]), int(header[1])
  payload = np.frombuffer(message, np.uint8) if is_primary() else np.zeros(length, np.uint8)
  if length:
    payload = broadcast_from_primary(payload)
  if error is not None:
    raise error
  failure = decode_outcome(code, np.asarray(payload, np.uint8).tobytes(), error_types)
  if failure is not None:
    raise failure
  return result
