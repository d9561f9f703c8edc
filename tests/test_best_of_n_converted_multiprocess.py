"""best_of_n in 2 JAX processes x 2 CPU devices from a converted folder, against its source.

The test process writes the tiny Hugging Face checkpoint of test_best_of_n_converted.py and
converts it. One process with 4 devices runs the job from the checkpoint, and 2 processes with
2 devices each run it from the converted folder through launch/local_multiprocess.sh. Both use a
mesh of data = 2, model = 2, so every process restores the weights split over its own 2 devices.
The records, selections and arrays must be bitwise equal.

tests/test_weights_orbax_multiprocess.py restores a folder across processes on model = 4.
"""

import os
import pathlib
import subprocess
import sys

import pytest

from ec_jax.weights import convert
from test_best_of_n_converted import write_tiny_source

pytestmark = pytest.mark.multiprocess

REPO = pathlib.Path(__file__).resolve().parents[1]
LAUNCHER = REPO / "launch" / "local_multiprocess.sh"
SAME_FILES = ("trajectories.jsonl", "greedy.jsonl", "selected.jsonl", "arrays/batch_0.npz",
              "arrays/batch_1.npz")
TIMEOUT_S = 600


def environment(devices: int) -> dict[str, str]:
  environ = {name: value for name, value in os.environ.items()
             if not name.startswith(("EC_JAX_", "SLURM_"))}
  environ.update(JAX_PLATFORMS="cpu", JAX_NUM_CPU_DEVICES=str(devices), PYTHON=sys.executable)
  return environ


def arguments(model: pathlib.Path, output_dir: pathlib.Path) -> list[str]:
  return ["experiments.best_of_n", "--config=configs/best_of_n.py:tiny",
          f"--config.model={model}", f"--config.output_dir={output_dir}",
          "--config.num_problems=4", "--config.batch_problems=2", "--config.mesh.data=2",
          "--config.mesh.model=2", "--config.prompt_bucket=512", "--config.greedy=True"]


def test_two_processes_match_source(tmp_path):
  source = write_tiny_source(tmp_path / "source")
  converted = convert.convert(source, tmp_path / "orbax")

  single = subprocess.run(
      [sys.executable, "-m", *arguments(source, tmp_path / "single")], cwd=REPO,
      env=environment(4), capture_output=True, text=True, timeout=TIMEOUT_S)
  assert single.returncode == 0, single.stderr[-3000:]

  multi = subprocess.run(
      ["bash", str(LAUNCHER), "-n", "2", "-d", "2", "-t", str(TIMEOUT_S - 60), "--",
       *arguments(converted, tmp_path / "multi")],
      env=environment(2), capture_output=True, text=True, timeout=TIMEOUT_S)
  assert multi.returncode == 0, multi.stdout[-3000:] + multi.stderr[-3000:]

  for name in SAME_FILES:
    first = (tmp_path / "single" / name).read_bytes()
    second = (tmp_path / "multi" / name).read_bytes()
    assert first == second, name
