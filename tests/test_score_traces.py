"""The score_traces command end to end: parity with the reference values, errors, reruns."""

import json
import math
import os
import pathlib
import subprocess
import sys

import numpy as np

from configs import score_traces as score_traces_config
from ec_jax.scoring import selection
from ec_jax.scoring import settings as settings_lib
from ec_jax.scoring import trace_scoring

REPO = pathlib.Path(__file__).resolve().parents[1]
# Relative tolerance for centroids against the reference implementation's values.
RTOL = 1e-12


def run_command(*flags: str) -> subprocess.CompletedProcess:
  """Run `python -m experiments.score_traces` from the repository root."""
  return subprocess.run(
      [sys.executable, "-m", "experiments.score_traces", "--config=configs/score_traces.py",
       *flags],
      cwd=REPO, capture_output=True, text=True, timeout=600, check=False)


def read_jsonl(path):
  with open(path, encoding="utf-8") as file:
    return [json.loads(line) for line in file]


def assert_matches(got, expected, label):
  if expected is None:
    assert got is None, f"{label}: expected null, got {got!r}"
  elif isinstance(expected, float):
    assert got is not None, f"{label}: expected {expected!r}, got null"
    assert math.isclose(got, expected, rel_tol=RTOL, abs_tol=0.0), f"{label}: {got!r} != {expected!r}"
  else:
    assert got == expected, f"{label}: {got!r} != {expected!r}"


def without_timing(path):
  summary = json.loads(path.read_text(encoding="utf-8"))
  assert "timing" in summary
  del summary["timing"]
  return summary


def test_reference_traces_reproduce_expected(data_dir, tmp_path):
  trace = data_dir / "reference_traces_small.json"
  out = tmp_path / "scores"
  result = run_command(f"--config.input={trace}", f"--config.output_dir={out}", "--config.sweep")
  assert result.returncode == 0, result.stderr[-4000:]
  assert sorted(os.listdir(out)) == sorted(trace_scoring.OUTPUT_FILES)
  assert sorted(os.listdir(tmp_path)) == ["scores"], "temporary folders were left behind"

  # Every key of the expected file, for every trajectory.
  records = read_jsonl(out / trace_scoring.CENTROIDS_FILE)
  expected = read_jsonl(data_dir / "reference_traces_small.expected.jsonl")
  assert len(records) == len(expected)
  by_key = {(r["problem_id"], r["trajectory_index"]): r for r in records}
  for row in expected:
    record = by_key[(row["problem_id"], row["trajectory_index"])]
    label = f"{row['problem_id']}/{row['trajectory_index']}"
    for key, value in row.items():
      assert key in record, f"{label}: {key} missing"
      assert_matches(record[key], value, f"{label} {key}")
    assert record["centroid"] == record["weighted_average_center"], label
    assert record["num_phases"] == len(row["phases"]), label

  # Sweep keys for every grid setting.
  grid = settings_lib.sweep_grid()
  for record in records:
    for setting in grid:
      for name in ("weighted_average_center", "high_threshold", "low_threshold", "num_phases"):
        assert name + setting.suffix in record
    # The grid contains the configured setting, which must agree with the plain keys.
    assert record["weighted_average_center@1/80/2"] == record["weighted_average_center"]
    assert record["num_phases@1/80/2"] == record["num_phases"]

  empty = by_key[("sample_00000", 1)]
  assert empty["num_tokens"] == 0
  assert empty["high_threshold"] is None
  assert empty["mean_entropy"] is None
  for problem in ("sample_00000", "sample_00001", "sample_00002"):
    assert by_key[(problem, 2)]["num_invalid"] == 1, problem
  for record in records:
    assert record["self_certainty"] is None
    assert record["mean_entropy_full"] is None
    assert record["mean_entropy_topk"] == record["mean_entropy"]
    if record["num_tokens"]:
      assert record["deepconf_mean"] is not None

  summary = json.loads((out / trace_scoring.SUMMARY_FILE).read_text())
  methods = summary["methods"]
  for name in ("pass@1", "pass@2", "pass@n", "random", *selection.CENTROID_SELECTION_METHODS,
               *selection.VOTE_METHODS, *selection.SCORE_METHOD_DIRECTIONS):
    assert name in methods, name
  for setting in grid:
    assert "lowest_centroid" + setting.suffix in methods
  assert "unavailable" in methods["self_certainty"]
  assert "unavailable" in methods["lowest_mean_entropy_full"]
  assert "unavailable" in methods["lowest_mean_entropy_sampling"]
  # Without labels nothing is scored, and every problem counts as unlabelled.
  assert methods["lowest_centroid"]["total"] == 0
  assert methods["lowest_centroid"]["unlabelled"] == 3
  assert methods["lowest_centroid"]["accuracy"] is None
  assert summary["paired_difference"]["difference"] is None
  counts = summary["counts"]
  assert counts["problems"] == 3
  assert counts["trajectories"] == 12
  assert counts["missing_positions"] == 3
  assert counts["nan_positions"] == 0
  assert counts["empty_trajectories"] == 1
  assert counts["trajectories_without_centroid"] == 1
  assert counts["problems_without_centroid"] == 0
  assert summary["labels"]["file"] is None
  assert "jax" in summary["versions"]

  # lowest_centroid picks the smallest expected centroid of each problem.
  selected = read_jsonl(out / trace_scoring.SELECTED_FILE)
  chosen = {r["problem_id"]: r["trajectory_index"] for r in selected
            if r["method"] == "lowest_centroid"}
  for problem in chosen:
    rows = [r for r in expected if r["problem_id"] == problem
            and r["weighted_average_center"] is not None]
    best = min(rows, key=lambda r: (r["weighted_average_center"], r["trajectory_index"]))
    assert chosen[problem] == best["trajectory_index"], problem
  assert {r["method"] for r in selected} >= {"lowest_centroid", "random", "deepconf_tail",
                                              "lowest_centroid@5/50/3"}

  # A second run of the same config (here in-process) replaces the folder with identical files.
  before = {name: (out / name).read_bytes() for name in trace_scoring.OUTPUT_FILES}
  config = score_traces_config.get_config()
  config.input = str(trace)
  config.output_dir = str(out)
  config.sweep = True
  trace_scoring.run(config)
  for name in (trace_scoring.CENTROIDS_FILE, trace_scoring.SELECTED_FILE,
               trace_scoring.CONFIG_FILE):
    assert (out / name).read_bytes() == before[name], name
  first = json.loads(before[trace_scoring.SUMMARY_FILE])
  del first["timing"]
  assert without_timing(out / trace_scoring.SUMMARY_FILE) == first


def test_malformed_trace_one_line_error(tmp_path):
  records = [{"original_id": "p", "trajectory_index": 0,
              "entropy_sequence": [{"entropy": 0.5}, {"entropy": "high"}]}]
  trace = tmp_path / "entropy_results.json"
  trace.write_text(json.dumps(records))
  out = tmp_path / "out"
  result = run_command(f"--config.input={trace}", f"--config.output_dir={out}")
  assert result.returncode == 1
  assert "Traceback" not in result.stderr
  last_line = result.stderr.strip().splitlines()[-1]
  assert last_line.startswith("score_traces: error: ")
  assert str(trace) in last_line
  assert "record index 0" in last_line
  assert "entropy_sequence[1].entropy" in last_line
  assert not out.exists()
  assert sorted(os.listdir(tmp_path)) == ["entropy_results.json"]


def test_invalid_config_one_line_error(data_dir, tmp_path):
  out = tmp_path / "out"
  result = run_command(f"--config.input={data_dir / 'reference_traces_small.json'}",
                       f"--config.output_dir={out}", "--config.phases.top_percent=120")
  assert result.returncode == 1
  assert "Traceback" not in result.stderr
  last_line = result.stderr.strip().splitlines()[-1]
  assert last_line.startswith("score_traces: error: Invalid config: phases.top_percent = 120.0")
  assert not out.exists()


def test_unknown_key_one_line_error(tmp_path):
  result = run_command("--config.inptu=traces.json", f"--config.output_dir={tmp_path / 'out'}")
  assert result.returncode == 1
  assert "Traceback" not in result.stderr
  last_line = result.stderr.strip().splitlines()[-1]
  assert last_line.startswith("score_traces: error: unknown config key: inptu.")
  assert 'Did you mean "input"' in last_line


def test_equal_centroids_pick_lowest_index(data_dir, tmp_path):
  # One problem holding the same four traces twice: each centroid appears twice.
  records = json.loads((data_dir / "reference_traces_small.json").read_text())
  problem = [r for r in records if r["original_id"] == "sample_00002"]
  duplicated = []
  for index, record in enumerate(problem + problem):
    duplicated.append({"original_id": "tie", "trajectory_index": index,
                       "entropy_sequence": record["entropy_sequence"]})
  trace = tmp_path / "ties.json"
  trace.write_text(json.dumps(duplicated))
  config = score_traces_config.get_config()
  config.input = str(trace)
  config.output_dir = str(tmp_path / "out")
  config.bootstrap.samples = 10
  result = trace_scoring.run(config)
  assert result.summary["scoring"]["exact_tie_key"] is True
  selected = read_jsonl(tmp_path / "out" / trace_scoring.SELECTED_FILE)
  pick = {r["method"]: r["trajectory_index"] for r in selected}
  centroids = [r["centroid"] for r in read_jsonl(tmp_path / "out" / trace_scoring.CENTROIDS_FILE)]
  lowest = int(np.nanargmin(np.array(centroids, dtype=float)))
  # The first of the two equal lowest centroids wins.
  assert pick["lowest_centroid"] == lowest
  assert lowest < len(problem)
