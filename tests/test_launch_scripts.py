"""Launch scripts: syntax and shellcheck for all, and the local launcher's process handling.

The pod and cluster scripts need gcloud or SLURM, so only their syntax, lint and argument
checks run here. The local launcher runs a small Python worker without JAX, so these tests
are fast; the JAX runs through it are in test_parallel_multiprocess.py.
"""

import json
import os
import pathlib
import shutil
import subprocess
import sys
import textwrap
import time

import pytest

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent
LAUNCH = REPO_ROOT / "launch"
SCRIPTS = ["local_multiprocess.sh", "tpu_pod.sh", "slurm_gpu.sh"]

WORKER = textwrap.dedent("""
    import json, os, pathlib, sys, time

    index = int(os.environ["EC_JAX_PROCESS_ID"])
    folder = pathlib.Path(sys.argv[1])
    names = ("EC_JAX_COORDINATOR", "EC_JAX_NUM_PROCESSES", "EC_JAX_PROCESS_ID",
             "JAX_NUM_CPU_DEVICES", "JAX_PLATFORMS", "EC_JAX_HEARTBEAT_TIMEOUT_S")
    (folder / f"env_{index}.json").write_text(json.dumps({n: os.environ.get(n) for n in names}))
    (folder / f"pid_{index}").write_text(str(os.getpid()))
    print(f"worker {index} started", flush=True)
    mode = sys.argv[2]
    if mode == "fail" and index == 1:
      time.sleep(0.5)
      sys.exit(3)
    if mode in ("fail", "sleep"):
      time.sleep(120)
""")


@pytest.mark.parametrize("script", SCRIPTS)
def test_script_syntax(script):
  result = subprocess.run(["bash", "-n", str(LAUNCH / script)], capture_output=True, text=True,
                          check=False)
  assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("script", SCRIPTS)
def test_script_shellcheck(script):
  if shutil.which("shellcheck") is None:
    pytest.skip("shellcheck is not installed (apt-get install shellcheck)")
  result = subprocess.run(["shellcheck", str(LAUNCH / script)], capture_output=True, text=True,
                          check=False)
  assert result.returncode == 0, result.stdout


def test_tpu_pod_usage_error():
  result = subprocess.run(["bash", str(LAUNCH / "tpu_pod.sh"), "my-tpu"], capture_output=True,
                          text=True, check=False)
  assert result.returncode == 2
  assert "Usage: launch/tpu_pod.sh TPU_NAME ZONE CONFIG" in result.stderr


def test_slurm_script_outside_job():
  environ = {name: value for name, value in os.environ.items()
             if not name.startswith("SLURM_")}
  result = subprocess.run(["bash", str(LAUNCH / "slurm_gpu.sh"), "configs/x.py"], env=environ,
                          capture_output=True, text=True, check=False)
  assert result.returncode == 2
  assert "submit this script with sbatch" in result.stderr


def _alive(pid: int) -> bool:
  """Return whether pid runs (a zombie left to a non-reaping init counts as ended)."""
  try:
    state = pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
  except (FileNotFoundError, ProcessLookupError):
    return False
  return state not in ("Z", "X")


def _launch(tmp_path, mode, *options):
  (tmp_path / "fake_worker.py").write_text(WORKER)
  environ = dict(os.environ, PYTHON=sys.executable, PYTHONPATH=str(tmp_path))
  return subprocess.run(
      ["bash", str(LAUNCH / "local_multiprocess.sh"), *options, "fake_worker", str(tmp_path),
       mode],
      env=environ, capture_output=True, text=True, timeout=60, check=False)


def _worker_pids(tmp_path, count):
  return [int((tmp_path / f"pid_{index}").read_text()) for index in range(count)]


def test_local_launcher_success(tmp_path):
  result = _launch(tmp_path, "ok", "-n", "3", "-d", "4", "-t", "30")
  assert result.returncode == 0, result.stderr
  assert "all 3 processes exited with status 0" in result.stderr
  environs = [json.loads((tmp_path / f"env_{index}.json").read_text()) for index in range(3)]
  coordinators = {environ["EC_JAX_COORDINATOR"] for environ in environs}
  assert len(coordinators) == 1
  assert coordinators.pop().startswith("127.0.0.1:")
  assert [environ["EC_JAX_PROCESS_ID"] for environ in environs] == ["0", "1", "2"]
  for environ in environs:
    assert environ["EC_JAX_NUM_PROCESSES"] == "3"
    assert environ["JAX_NUM_CPU_DEVICES"] == "4"
    assert environ["JAX_PLATFORMS"] == "cpu"
    assert environ["EC_JAX_HEARTBEAT_TIMEOUT_S"] == "10"
  for index in range(3):
    assert f"[process {index}] worker {index} started" in result.stdout


def test_local_launcher_failure_stops_others(tmp_path):
  result = _launch(tmp_path, "fail", "-t", "30")
  assert result.returncode == 3
  assert "process 1 (pid" in result.stderr
  assert "exited with status 3" in result.stderr
  time.sleep(0.5)
  for pid in _worker_pids(tmp_path, 2):
    assert not _alive(pid), pid


def test_local_launcher_timeout(tmp_path):
  result = _launch(tmp_path, "sleep", "-t", "3")
  assert result.returncode == 124
  assert "timed out after 3s" in result.stderr
  time.sleep(0.5)
  for pid in _worker_pids(tmp_path, 2):
    assert not _alive(pid), pid


@pytest.mark.parametrize("options,message", [
    (["-n", "0"], "-n must be a positive integer, got '0'"),
    (["-d", "x"], "-d must be a positive integer, got 'x'"),
    (["-q"], "unknown option -q"),
])
def test_local_launcher_bad_options(tmp_path, options, message):
  result = _launch(tmp_path, "ok", *options)
  assert result.returncode == 2
  assert message in result.stderr
