"""Start-up planning and the single-process behaviour of the gathering helpers."""

import os
import subprocess
import sys
import textwrap

import jax
import numpy as np
import pytest

from ec_jax import parallel
from ec_jax.parallel import distributed

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_plan_without_environment_is_single():
  plan = parallel.plan_startup(environ={})
  assert plan.mode == "single"
  assert not plan.is_distributed
  assert plan.initialization_timeout_s == 300
  assert plan.heartbeat_timeout_s == 100


def test_plan_explicit_from_environment():
  environ = {"EC_JAX_COORDINATOR": "10.0.0.1:1234", "EC_JAX_NUM_PROCESSES": "4",
             "EC_JAX_PROCESS_ID": "3", "EC_JAX_INIT_TIMEOUT_S": "30",
             "EC_JAX_HEARTBEAT_TIMEOUT_S": "7"}
  plan = parallel.plan_startup(environ=environ)
  assert plan == parallel.StartupPlan(
      mode="explicit", coordinator_address="10.0.0.1:1234", num_processes=4, process_id=3,
      initialization_timeout_s=30, heartbeat_timeout_s=7, shutdown_timeout_s=300)


def test_plan_arguments_override_environment():
  environ = {"EC_JAX_COORDINATOR": "10.0.0.1:1234", "EC_JAX_NUM_PROCESSES": "4",
             "EC_JAX_PROCESS_ID": "3", "EC_JAX_HEARTBEAT_TIMEOUT_S": "7"}
  plan = parallel.plan_startup(coordinator_address="localhost:99", num_processes=2,
                               process_id=0, heartbeat_timeout_s=5, environ=environ)
  assert plan.coordinator_address == "localhost:99"
  assert plan.num_processes == 2
  assert plan.process_id == 0
  assert plan.heartbeat_timeout_s == 5


def test_plan_mode_off_ignores_environment():
  environ = {"EC_JAX_DISTRIBUTED": "off", "EC_JAX_COORDINATOR": "10.0.0.1:1234"}
  assert parallel.plan_startup(environ=environ).mode == "single"


def test_plan_slurm_multi_task():
  environ = {"SLURM_JOB_ID": "77", "SLURM_NTASKS": "2", "SLURM_PROCID": "1",
             "EC_JAX_COORDINATOR": "node01:20077", "EC_JAX_DISTRIBUTED": "slurm"}
  plan = parallel.plan_startup(environ=environ)
  assert (plan.mode, plan.num_processes, plan.process_id) == ("slurm", 2, 1)
  assert plan.coordinator_address == "node01:20077"


def test_plan_auto_detects_slurm_step():
  environ = {"SLURM_JOB_ID": "77", "SLURM_NTASKS": "2", "SLURM_PROCID": "0"}
  with pytest.raises(ValueError) as error:
    parallel.plan_startup(environ=environ)
  assert "slurm mode needs the coordinator address in EC_JAX_COORDINATOR" in str(error.value)
  assert "launch/slurm_gpu.sh" in str(error.value)


def test_plan_single_task_slurm_job_is_single():
  environ = {"SLURM_JOB_ID": "77", "SLURM_NTASKS": "1", "SLURM_PROCID": "0"}
  assert parallel.plan_startup(environ=environ).mode == "single"


def test_plan_tpu():
  plan = parallel.plan_startup(environ={"EC_JAX_DISTRIBUTED": "tpu"})
  assert plan.mode == "tpu"
  assert plan.coordinator_address is None
  assert plan.is_distributed


@pytest.mark.parametrize("environ,fragments", [
    ({"EC_JAX_DISTRIBUTED": "mpi"}, ["EC_JAX_DISTRIBUTED must be one of", "'mpi'"]),
    ({"EC_JAX_COORDINATOR": "a:1", "EC_JAX_NUM_PROCESSES": "2", "EC_JAX_PROCESS_ID": "2"},
     ["EC_JAX_PROCESS_ID = 2 is out of range", "EC_JAX_NUM_PROCESSES = 2", "0 to 1"]),
    ({"EC_JAX_COORDINATOR": "a", "EC_JAX_NUM_PROCESSES": "2", "EC_JAX_PROCESS_ID": "0"},
     ["EC_JAX_COORDINATOR must be host:port", "'a'"]),
    ({"EC_JAX_COORDINATOR": "a:99999", "EC_JAX_NUM_PROCESSES": "2", "EC_JAX_PROCESS_ID": "0"},
     ["port in 1..65535"]),
    ({"EC_JAX_COORDINATOR": "a:1", "EC_JAX_PROCESS_ID": "0"},
     ["explicit mode needs EC_JAX_NUM_PROCESSES"]),
    ({"EC_JAX_COORDINATOR": "a:1", "EC_JAX_NUM_PROCESSES": "two", "EC_JAX_PROCESS_ID": "0"},
     ["EC_JAX_NUM_PROCESSES must be an integer >= 1", "'two'"]),
    ({"EC_JAX_HEARTBEAT_TIMEOUT_S": "0"}, ["EC_JAX_HEARTBEAT_TIMEOUT_S must be an integer >= 1"]),
    ({"EC_JAX_DISTRIBUTED": "explicit"}, ["explicit mode needs the coordinator address"]),
])
def test_plan_errors(environ, fragments):
  with pytest.raises(ValueError) as error:
    parallel.plan_startup(environ=environ)
  for fragment in fragments:
    assert fragment in str(error.value)


def test_plan_argument_error_names_argument():
  with pytest.raises(ValueError, match="heartbeat_timeout_s must be an integer >= 1"):
    parallel.plan_startup(heartbeat_timeout_s=-2, environ={})


def test_import_starts_no_backend():
  code = textwrap.dedent("""
      import ec_jax, ec_jax.parallel, ec_jax.parallel.memory
      from jax._src import xla_bridge
      assert not xla_bridge.backends_are_initialized(), xla_bridge._backends
      print("no backend")
  """)
  result = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True,
                          text=True, timeout=120, check=False)
  assert result.returncode == 0, result.stderr
  assert "no backend" in result.stdout


def test_initialize_single_process(monkeypatch, caplog):
  monkeypatch.setattr(distributed, "_STARTED", None)
  with caplog.at_level("INFO"):
    plan = parallel.initialize(environ={})
  assert plan.mode == "single"
  assert "Process 0 of 1" in caplog.text
  assert "jax 0.10.2" in caplog.text
  assert parallel.initialize(environ={"EC_JAX_DISTRIBUTED": "tpu"}) is plan


def test_runtime_summary():
  summary = parallel.runtime_summary()
  assert summary["process_count"] == 1
  assert summary["global_device_count"] == 8
  assert summary["local_device_count"] == 8
  assert summary["jax"] == jax.__version__


def test_is_primary_single_process():
  assert parallel.is_primary()


def test_global_array_from_local_round_trip():
  mesh = parallel.make_mesh(data=4, model=2)
  sharding = parallel.batch_sharding(mesh, 2)
  rows = np.arange(24, dtype=np.float32).reshape(8, 3)
  own = parallel.local_row_slice(sharding, rows.shape)
  assert own == slice(0, 8)
  array = parallel.global_array_from_local(rows[own], sharding, rows.shape)
  assert array.sharding == sharding
  np.testing.assert_array_equal(parallel.gather_to_host(array), rows)


def test_global_array_from_local_wrong_rows():
  mesh = parallel.make_mesh(data=4, model=2)
  sharding = parallel.batch_sharding(mesh, 2)
  with pytest.raises(ValueError) as error:
    parallel.global_array_from_local(np.zeros((5, 3), np.float32), sharding, (8, 3))
  assert "passed 5 rows" in str(error.value)
  assert "[0, 8)" in str(error.value)


def test_gather_to_host_tree():
  mesh = parallel.make_mesh(data=8, model=1)
  values = jax.device_put(np.arange(16, dtype=np.int32).reshape(8, 2),
                          parallel.batch_sharding(mesh, 2))
  gathered = parallel.gather_to_host({"values": values, "local": np.array([3, 4])})
  assert isinstance(gathered["values"], np.ndarray)
  np.testing.assert_array_equal(gathered["values"], np.arange(16).reshape(8, 2))
  np.testing.assert_array_equal(gathered["local"], [3, 4])


def test_broadcast_from_primary_keeps_python_scalars():
  value = {"completed_batches": 5, "fraction": 0.5, "rows": np.arange(3, dtype=np.int32)}
  received = parallel.broadcast_from_primary(value)
  assert received["completed_batches"] == 5
  assert isinstance(received["completed_batches"], int)
  assert isinstance(received["fraction"], float)
  np.testing.assert_array_equal(received["rows"], [0, 1, 2])


def test_initialize_after_backend_start_raises(monkeypatch, caplog):
  jax.devices()  # The test process has started its backend; make sure of it.
  monkeypatch.setattr(distributed, "_STARTED", None)
  environ = {"EC_JAX_COORDINATOR": "127.0.0.1:1", "EC_JAX_NUM_PROCESSES": "2",
             "EC_JAX_PROCESS_ID": "1"}
  with pytest.raises(RuntimeError, match="must be called before"):
    parallel.initialize(environ=environ)
  assert "jax.distributed.initialize failed (explicit mode, coordinator 127.0.0.1:1)" in (
      caplog.text)
  assert distributed._STARTED is None


class _FolderError(ValueError):
  """A user error type, like RunFolderError."""


class _FakeChannel:
  """Replays process 0's broadcasts on a simulated process 1 of a 2-process run."""

  def __init__(self):
    self.sent = []

  def install(self, monkeypatch, process_index: int) -> None:
    monkeypatch.setattr(jax, "process_count", lambda: 2)
    monkeypatch.setattr(jax, "process_index", lambda: process_index)
    monkeypatch.setattr(distributed, "broadcast_from_primary",
                        self._send if process_index == 0 else self._receive)

  def _send(self, value):
    self.sent.append(np.array(value))
    return value

  def _receive(self, value):
    assert self.sent, "process 1 made more broadcast calls than process 0"
    sent = self.sent.pop(0)
    assert np.shape(value) == sent.shape
    assert np.asarray(value).dtype == sent.dtype
    return sent


def _failing_step():
  raise _FolderError("output_dir runs/x contains a run with another config")


def test_run_on_primary_raises_error_everywhere(monkeypatch):
  channel = _FakeChannel()
  with monkeypatch.context() as patch:
    channel.install(patch, process_index=0)
    with pytest.raises(_FolderError, match="contains a run with another config"):
      parallel.run_on_primary(_failing_step, (_FolderError,))
  assert len(channel.sent) == 2

  calls = []
  with monkeypatch.context() as patch:
    channel.install(patch, process_index=1)
    with pytest.raises(_FolderError) as error:
      parallel.run_on_primary(lambda: calls.append("step"), (_FolderError,))
  assert str(error.value) == "output_dir runs/x contains a run with another config"
  assert calls == []
  assert channel.sent == []


def test_run_on_primary_other_error_names_type(monkeypatch):
  channel = _FakeChannel()

  def step():
    raise OSError("Permission denied: 'runs/x/config.json'")

  with monkeypatch.context() as patch:
    channel.install(patch, process_index=0)
    with pytest.raises(OSError, match="Permission denied"):
      parallel.run_on_primary(step, (_FolderError,))
  with monkeypatch.context() as patch:
    channel.install(patch, process_index=1)
    with pytest.raises(parallel.PrimaryProcessError) as error:
      parallel.run_on_primary(step, (_FolderError,))
  assert "Process 0 failed" in str(error.value)
  assert "OSError: Permission denied: 'runs/x/config.json'" in str(error.value)


def test_run_on_primary_success_returns_result(monkeypatch):
  channel = _FakeChannel()
  with monkeypatch.context() as patch:
    channel.install(patch, process_index=0)
    assert parallel.run_on_primary(lambda: "finished", (_FolderError,)) == "finished"
  # Success sends only the header, without a message.
  assert len(channel.sent) == 1
  with monkeypatch.context() as patch:
    channel.install(patch, process_index=1)
    assert parallel.run_on_primary(lambda: "finished", (_FolderError,)) is None
  assert channel.sent == []


def test_run_on_primary_single_process():
  assert parallel.run_on_primary(lambda: 3) == 3
  with pytest.raises(_FolderError, match="another config"):
    parallel.run_on_primary(_failing_step, (_FolderError,))


@pytest.mark.parametrize("error,code,message", [
    (None, 0, b""),
    (_FolderError("caf\u00e9 folder"), 2, "caf\u00e9 folder".encode()),
    (KeyError("x"), -1, b"KeyError: 'x'"),
])
def test_outcome_round_trip(error, code, message):
  error_types = (TypeError, _FolderError)
  assert distributed.encode_outcome(error, error_types) == (code, message)
  decoded = distributed.decode_outcome(code, message, error_types)
  if error is None:
    assert decoded is None
  elif code > 0:
    assert type(decoded) is _FolderError
    assert str(decoded) == str(error)
  else:
    assert isinstance(decoded, parallel.PrimaryProcessError)
