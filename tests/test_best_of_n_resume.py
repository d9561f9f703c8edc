"""A best_of_n run killed with SIGKILL and resumed writes the same files as an uninterrupted one."""

import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
NUM_SAMPLES = 4
BATCH_PROBLEMS = 2
RECORDS_PER_BATCH = NUM_SAMPLES * BATCH_PROBLEMS


def command(output_dir):
  return [sys.executable, "-m", "experiments.best_of_n", "--config=configs/best_of_n.py:tiny",
          f"--config.output_dir={output_dir}", "--config.num_problems=10",
          f"--config.num_samples={NUM_SAMPLES}", f"--config.batch_problems={BATCH_PROBLEMS}",
          "--config.max_new_tokens=12", "--config.prompt_bucket=512", "--config.greedy=True"]


def run_to_end(output_dir):
  result = subprocess.run(command(output_dir), cwd=REPO, capture_output=True, text=True,
                          timeout=600, env=dict(os.environ))
  assert result.returncode == 0, result.stderr[-3000:]
  return result


def count_lines(path):
  try:
    return path.read_bytes().count(b"\n")
  except FileNotFoundError:
    return 0


def start_and_kill(output_dir):
  """Start a run and SIGKILL it as soon as the first batch's records are written."""
  process = subprocess.Popen(command(output_dir), cwd=REPO, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL, env=dict(os.environ))
  records = output_dir / "trajectories.jsonl"
  deadline = time.monotonic() + 600
  try:
    while count_lines(records) < RECORDS_PER_BATCH:
      assert process.poll() is None, "the run ended before its first batch was written"
      assert time.monotonic() < deadline, "no batch was written within 600 s"
      time.sleep(0.02)
  finally:
    process.send_signal(signal.SIGKILL)
    process.wait()


def files_of(folder):
  return {path.relative_to(folder): path for path in sorted(folder.rglob("*")) if path.is_file()}


@pytest.mark.slow
def test_killed_run_resumes_to_identical_files(tmp_path):
  reference = tmp_path / "reference"
  run_to_end(reference)

  resumed = tmp_path / "resumed"
  start_and_kill(resumed)
  assert not (resumed / "summary.json").exists(), "the run finished before it was killed"
  finished_lines = count_lines(resumed / "trajectories.jsonl")
  # Leave a partly written next batch and a torn last line, as a kill during an append can.
  reference_lines = (reference / "trajectories.jsonl").read_bytes().splitlines(keepends=True)
  next_batch = finished_lines - finished_lines % RECORDS_PER_BATCH
  with open(resumed / "trajectories.jsonl", "r+b") as file:
    file.seek(sum(len(line) for line in reference_lines[:next_batch]))
    file.truncate()
    file.write(b"".join(reference_lines[next_batch:next_batch + 3]))
    file.write(reference_lines[next_batch + 3][:25])
  run_to_end(resumed)

  expected, found = files_of(reference), files_of(resumed)
  assert sorted(found) == sorted(expected)
  assert len([name for name in found if name.suffix == ".png"]) == 3
  for name, path in expected.items():
    if name.name == "summary.json":
      first, second = json.loads(path.read_text()), json.loads(found[name].read_text())
      first.pop("timing")
      second.pop("timing")
      assert first == second
    elif name.name == "config.json":
      first, second = json.loads(path.read_text()), json.loads(found[name].read_text())
      assert first.pop("output_dir") != second.pop("output_dir")
      assert first == second
    elif name.suffix == ".npz":
      with np.load(path) as first, np.load(found[name]) as second:
        assert first.files == second.files
        for key in first.files:
          np.testing.assert_array_equal(first[key], second[key], err_msg=f"{name} {key}")
      assert path.read_bytes() == found[name].read_bytes(), name
    else:
      assert path.read_bytes() == found[name].read_bytes(), name
