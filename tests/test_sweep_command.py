"""The `python -m experiments.sweep` command: a run, its files against an in-process run, errors."""

import json
import os
import pathlib
import subprocess
import sys

import test_sweep
from ec_jax.scoring import sweep

REPO = pathlib.Path(__file__).resolve().parents[1]
# One pass (top-k entropy, length mass) keeps the command short.
QUICK_FLAGS = ("--config.entropies=topk", "--config.phase_masses=length",
               "--config.bootstrap.samples=200", "--config.num_samples_grid=(1, 4)")


def run_command(*flags: str) -> subprocess.CompletedProcess:
  """Run `python -m experiments.sweep` from the repository root."""
  return subprocess.run(
      [sys.executable, "-m", "experiments.sweep", "--config=configs/sweep.py", *flags],
      cwd=REPO, capture_output=True, text=True, timeout=600, check=False)


def error_line(result: subprocess.CompletedProcess) -> str:
  return result.stderr.strip().splitlines()[-1]


def test_command_matches_in_process_run(tmp_path):
  trace = test_sweep.write_labelled_input(tmp_path / "input")
  out = tmp_path / "command"
  result = run_command(f"--config.input={trace}", f"--config.output_dir={out}", *QUICK_FLAGS)
  assert result.returncode == 0, result.stderr[-4000:]
  assert sorted(os.listdir(out)) == test_sweep.EXPECTED_FILES

  config = test_sweep.make_config(trace, tmp_path / "in_process", entropies=("topk",),
                                  phase_masses=("length",), num_samples_grid=(1, 4))
  sweep.run(config)
  # Figures and tables are the same bytes in another process.
  test_sweep.assert_same_files(out, tmp_path / "in_process")
  report = json.loads((out / sweep.SWEEP_FILE).read_text(encoding="utf-8"))
  assert [row["entropy"] for row in report["ablations"]["entropy"]] == ["topk"]


def test_unknown_key(tmp_path):
  result = run_command(f"--config.input={tmp_path}", f"--config.output_dir={tmp_path / 'out'}",
                       "--config.centroid_method_list=moment")
  assert result.returncode == 1
  assert error_line(result).startswith("sweep: error: unknown config key:")
  assert "centroid_method_list" in error_line(result)
  assert os.listdir(tmp_path) == []


def test_invalid_config_one_line_per_key(data_dir, tmp_path):
  out = tmp_path / "out"
  result = run_command(f"--config.input={data_dir / 'reference_traces_small.json'}",
                       f"--config.output_dir={out}", "--config.centroid_methods=centroid",
                       "--config.num_samples_grid=(0,)")
  assert result.returncode == 1
  lines = result.stderr.strip().splitlines()
  assert lines[-3] == "sweep: error: Invalid config (2 problems):"
  assert lines[-2].strip().startswith("centroid_methods = ('centroid',) is invalid")
  assert lines[-1].strip().startswith("num_samples_grid[0] = 0 is invalid")
  assert not out.exists()


def test_unquoted_tuple_gets_a_hint(data_dir, tmp_path):
  result = run_command(f"--config.input={data_dir / 'reference_traces_small.json'}",
                       f"--config.output_dir={tmp_path / 'out'}",
                       "--config.entropies=(topk, full)")
  assert result.returncode == 1
  assert "--config.entropies=\"('topk', 'sampling')\"" in error_line(result)


def test_malformed_input(tmp_path):
  trace = tmp_path / "entropy_results.json"
  trace.write_text('[{"original_id": "p", "trajectory_index": 0, "entropy_sequence": '
                   '[{"entropy": "high"}]}]', encoding="utf-8")
  out = tmp_path / "out"
  result = run_command(f"--config.input={trace}", f"--config.output_dir={out}", *QUICK_FLAGS)
  assert result.returncode == 1
  line = error_line(result)
  assert line.startswith(f"sweep: error: {trace}")
  assert "entropy_sequence[0].entropy" in line
  assert sorted(os.listdir(tmp_path)) == ["entropy_results.json"]
