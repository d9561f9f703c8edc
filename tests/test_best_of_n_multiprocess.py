"""best_of_n in 2 JAX processes x 2 CPU devices writes the files of one process with 4 devices."""

import os
import pathlib
import subprocess
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
LAUNCHER = REPO / "launch" / "local_multiprocess.sh"
SAME_FILES = ("trajectories.jsonl", "greedy.jsonl", "selected.jsonl",
              "arrays/batch_0.npz", "arrays/batch_1.npz", "plots/centroid_distributions.png",
              "plots/accuracy_vs_n.png", "plots/token_entropy.png")


def environment(devices):
  environ = {name: value for name, value in os.environ.items()
             if not name.startswith(("EC_JAX_", "SLURM_"))}
  environ.update(JAX_PLATFORMS="cpu", JAX_NUM_CPU_DEVICES=str(devices), PYTHON=sys.executable)
  return environ


def arguments(output_dir):
  return ["experiments.best_of_n", "--config=configs/best_of_n.py:tiny",
          f"--config.output_dir={output_dir}", "--config.prompt_bucket=512",
          "--config.greedy=True"]


@pytest.mark.multiprocess
def test_two_processes_match_one(tmp_path):
  single = subprocess.run([sys.executable, "-m", *arguments(tmp_path / "single")], cwd=REPO,
                          env=environment(4), capture_output=True, text=True, timeout=600)
  assert single.returncode == 0, single.stderr[-3000:]

  multi = subprocess.run(["bash", str(LAUNCHER), "-n", "2", "-d", "2", "-t", "500", "--",
                          *arguments(tmp_path / "multi")],
                         env=environment(2), capture_output=True, text=True, timeout=600)
  assert multi.returncode == 0, multi.stdout[-3000:] + multi.stderr[-3000:]

  for name in SAME_FILES:
    first = (tmp_path / "single" / name).read_bytes()
    second = (tmp_path / "multi" / name).read_bytes()
    assert first == second, name
