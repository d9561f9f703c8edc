"""Real multi-process JAX runs on this machine: 2 processes x 2 CPU devices each.

Every process started here is stopped in a `finally` block, so a failing test leaves none
behind.
"""

import json
import os
import pathlib
import re
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

pytestmark = pytest.mark.multiprocess

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent
LAUNCHER = REPO_ROOT / "launch" / "local_multiprocess.sh"


def _free_port() -> int:
  with socket.socket() as probe:
    probe.bind(("127.0.0.1", 0))
    return probe.getsockname()[1]


def _base_environ(devices: int) -> dict[str, str]:
  environ = dict(os.environ)
  for name in list(environ):
    if name.startswith("EC_JAX_") or name.startswith("SLURM_"):
      del environ[name]
  environ.update(JAX_PLATFORMS="cpu", JAX_NUM_CPU_DEVICES=str(devices), PYTHONUNBUFFERED="1")
  return environ


def _stop(processes: list[subprocess.Popen]) -> None:
  for process in processes:
    if process.poll() is None:
      os.killpg(process.pid, signal.SIGKILL)
      process.wait(timeout=30)


def _wait_for_text(path: pathlib.Path, text: str, process: subprocess.Popen,
                   timeout_s: float) -> None:
  deadline = time.monotonic() + timeout_s
  while time.monotonic() < deadline:
    if text in path.read_text(errors="replace"):
      return
    if process.poll() is not None:
      raise AssertionError(f"Process exited with {process.returncode} before printing {text!r}:"
                           f"\n{path.read_text(errors='replace')[-3000:]}")
    time.sleep(0.2)
  raise AssertionError(f"No {text!r} within {timeout_s} s:\n"
                       f"{path.read_text(errors='replace')[-3000:]}")


def test_selfcheck_two_processes_match_one(tmp_path):
  multi_output = tmp_path / "two_processes.json"
  environ = _base_environ(devices=2)
  environ["PYTHON"] = sys.executable
  launched = subprocess.run(
      ["bash", str(LAUNCHER), "-n", "2", "-d", "2", "-t", "240", "ec_jax.parallel.selfcheck",
       "--mesh_model=2", f"--output={multi_output}"],
      env=environ, capture_output=True, text=True, timeout=300, check=False)
  assert launched.returncode == 0, launched.stderr[-5000:]
  assert "all 2 processes exited with status 0" in launched.stderr
  assert '[process 1] {"passed": true' in launched.stdout + launched.stderr

  single_output = tmp_path / "one_process.json"
  single = subprocess.run(
      [sys.executable, "-m", "ec_jax.parallel.selfcheck", "--mesh_model=2",
       f"--output={single_output}"],
      cwd=REPO_ROOT, env=_base_environ(devices=4), capture_output=True, text=True,
      timeout=300, check=False)
  assert single.returncode == 0, single.stderr[-5000:]

  multi_result = json.loads(multi_output.read_text())
  single_result = json.loads(single_output.read_text())
  assert multi_result["process_count"] == 2
  assert single_result["process_count"] == 1
  assert multi_result["startup_mode"] == "explicit"
  assert multi_result["mesh"] == single_result["mesh"] == {"data": 2, "model": 2}
  # Both runs give every device the same shapes, so XLA computes the same values.
  for key in ("token_logprob", "top_values"):
    np.testing.assert_allclose(multi_result[key], single_result[key], rtol=0, atol=1e-6,
                               err_msg=key)
  assert multi_result["top_ids"] == single_result["top_ids"]


@pytest.mark.parametrize("victim,pattern", [
    (1, r"Task 1 heartbeat timeout|stopped sending heartbeats\):\s*1\b"),
    (0, r"leader task was preempted/died"),
], ids=["worker_killed", "coordinator_killed"])
def test_killed_process_stops_peer(tmp_path, victim, pattern):
  port = _free_port()
  processes, logs = [], []
  try:
    for index in range(2):
      environ = _base_environ(devices=2)
      environ.update(EC_JAX_COORDINATOR=f"127.0.0.1:{port}", EC_JAX_NUM_PROCESSES="2",
                     EC_JAX_PROCESS_ID=str(index), EC_JAX_HEARTBEAT_TIMEOUT_S="5",
                     EC_JAX_INIT_TIMEOUT_S="60", EC_JAX_SHUTDOWN_TIMEOUT_S="10")
      log = tmp_path / f"process_{index}.log"
      with log.open("w") as stream:
        processes.append(subprocess.Popen(
            [sys.executable, "-m", "ec_jax.parallel.selfcheck", "--repeat_seconds=300"],
            cwd=REPO_ROOT, env=environ, stdout=stream, stderr=subprocess.STDOUT,
            start_new_session=True))
      logs.append(log)
    for process, log in zip(processes, logs):
      _wait_for_text(log, "Repeating the sharded computation", process, timeout_s=180)

    os.killpg(processes[victim].pid, signal.SIGKILL)
    survivor = 1 - victim
    try:
      status = processes[survivor].wait(timeout=60)
    except subprocess.TimeoutExpired:
      pytest.fail(f"Process {survivor} still runs 60 s after process {victim} was killed:\n"
                  f"{logs[survivor].read_text(errors='replace')[-3000:]}")
    output = logs[survivor].read_text(errors="replace")
    assert status != 0, output[-3000:]
    assert re.search(pattern, output), output[-3000:]
  finally:
    _stop(processes)


def test_unreachable_coordinator_fails(tmp_path):
  port = _free_port()  # Nothing listens on it.
  environ = _base_environ(devices=2)
  environ.update(EC_JAX_COORDINATOR=f"127.0.0.1:{port}", EC_JAX_NUM_PROCESSES="2",
                 EC_JAX_PROCESS_ID="1", EC_JAX_INIT_TIMEOUT_S="3")
  result = subprocess.run([sys.executable, "-m", "ec_jax.parallel.selfcheck"], cwd=REPO_ROOT,
                          env=environ, capture_output=True, text=True, timeout=120,
                          check=False)
  output = result.stdout + result.stderr
  assert result.returncode != 0, output[-3000:]
  assert f"Starting jax.distributed (explicit mode): coordinator 127.0.0.1:{port}" in output
  assert "DEADLINE_EXCEEDED" in output, output[-3000:]
