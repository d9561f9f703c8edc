"""Streamed trace scoring: outputs of the one-call engine it replaced, and chunk independence.

tests/data/score_traces/expected/ contains what the previous engine, which scored every
trajectory in one `[rows, time]` call, wrote for three inputs (summary.json without `timing`
and `versions`). The streamed engine must write the same `selected.jsonl` and summary, and the
same `centroids.jsonl` except for the last bits of values that come from floating-point sums.
The previous engine's sums used XLA's reduction order, which depends on the whole array's shape.
The streamed engine's pairwise sums do not, so its own outputs are byte-identical for every
chunk layout.
"""

import json
import math
import pathlib

import pytest

from configs import score_traces as score_traces_config
from ec_jax.scoring import trace_scoring

REPO = pathlib.Path(__file__).resolve().parents[1]
EXPECTED = REPO / "tests" / "data" / "score_traces" / "expected"
# Relative tolerance of float values against the previous engine: a few units in the last place.
SUM_RTOL = 1e-15
# Keys whose values are floating-point sums over tokens, for inputs that carry their entropies.
# Thresholds and phase centroids are exact functions of the entropies. For vLLM-style traces the
# entropies themselves are sums over the top-k entries, so every float key may differ there.
SUM_KEYS = frozenset({
    "raw_entropy", "mean_entropy", "mean_entropy_topk", "mean_entropy_full",
    "mean_entropy_sampling", "self_certainty", "deepconf_tail", "deepconf_mean",
    "deepconf_lowest_window", "deepconf_bottom10",
})

# Each case: the config overrides the expected files were written with (paths relative to the
# repository root, as the summary records them), and whether all float keys may differ.
CASES = {
    "reference_sweep": ({
        "input": "tests/data/reference_traces_small.json",
        "labels": "tests/data/score_traces/reference_labels.json",
        "sweep": True,
    }, False),
    "vllm_entropy_mass": ({
        "input": "tests/data/score_traces/vllm_traces.jsonl",
        "sweep": True,
        "phase_mass": "entropy",
        "deepconf.window": 8,
        "deepconf.tail": 5,
    }, True),
    "run_folder_raw_entropy": ({
        "input": "tests/data/score_traces/run_folder",
        "selection_entropy": "full",
        "centroid_method": "raw_entropy",
        "deepconf.window": 8,
        "deepconf.tail": 5,
    }, False),
}


def make_config(overrides, output_dir):
  config = score_traces_config.get_config()
  config.output_dir = str(output_dir)
  config.bootstrap.samples = 200
  for key, value in overrides.items():
    *parents, last = key.split(".")
    target = config
    for part in parents:
      target = target[part]
    setattr(target, last, value)
  return config


def read_jsonl(path):
  with open(path, encoding="utf-8") as file:
    return [json.loads(line) for line in file]


def summary_text(path):
  """The summary without `timing` and `versions`, as canonical JSON text."""
  summary = json.loads(path.read_text(encoding="utf-8"))
  del summary["timing"]
  del summary["versions"]
  return json.dumps(summary, indent=2)


def run_case(name, output_dir, monkeypatch, **layout):
  overrides, _ = CASES[name]
  # The expected summaries record the input paths relative to the repository root.
  monkeypatch.chdir(REPO)
  return trace_scoring.run(make_config(overrides, output_dir), **layout)


@pytest.mark.parametrize("name", sorted(CASES))
def test_outputs_match_previous_engine(name, tmp_path, monkeypatch):
  out = tmp_path / "out"
  result = run_case(name, out, monkeypatch)
  expected = EXPECTED / name
  assert "versions" in result.summary

  assert (out / trace_scoring.SELECTED_FILE).read_bytes() == (
      expected / trace_scoring.SELECTED_FILE).read_bytes()
  assert summary_text(out / trace_scoring.SUMMARY_FILE) == (
      expected / trace_scoring.SUMMARY_FILE).read_text(encoding="utf-8").rstrip("\n")

  records = read_jsonl(out / trace_scoring.CENTROIDS_FILE)
  expected_records = read_jsonl(expected / trace_scoring.CENTROIDS_FILE)
  assert len(records) == len(expected_records)
  _, any_float_may_differ = CASES[name]
  centroid_is_sum = CASES[name][0].get("centroid_method") == "raw_entropy"
  for record, expected_record in zip(records, expected_records):
    label = f"{expected_record['problem_id']}/{expected_record['trajectory_index']}"
    assert list(record) == list(expected_record), label
    for key, value in expected_record.items():
      got = record[key]
      if not isinstance(value, float) or got == value:
        assert got == value, f"{label} {key}: {got!r} != {value!r}"
        continue
      may_differ = (any_float_may_differ or key in SUM_KEYS
                    or (key == "centroid" and centroid_is_sum))
      assert may_differ, f"{label} {key}: {got!r} != {value!r} (an exact key)"
      assert got is not None, f"{label} {key}: expected {value!r}, got null"
      assert math.isclose(got, value, rel_tol=SUM_RTOL, abs_tol=0.0), (
          f"{label} {key}: {got!r} != {value!r}")


@pytest.mark.parametrize("name", ["reference_sweep"])
def test_chunk_layout_same_bytes(name, tmp_path, monkeypatch):
  first = run_case(name, tmp_path / "default", monkeypatch)
  # Chunks of 4 rows padded to 2048 positions (one compilation), scored in the calling thread.
  second = run_case(name, tmp_path / "small", monkeypatch, max_rows=4, min_time=2048,
                    overlap=False)
  for file_name in (trace_scoring.CENTROIDS_FILE, trace_scoring.SELECTED_FILE):
    assert (first.output_dir / file_name).read_bytes() == (
        second.output_dir / file_name).read_bytes(), file_name
  assert summary_text(first.output_dir / trace_scoring.SUMMARY_FILE) == summary_text(
      second.output_dir / trace_scoring.SUMMARY_FILE)
  assert set(first.summary["timing"]) == {"read_seconds", "score_wait_seconds",
                                          "select_seconds", "total_seconds",
                                          "trajectories_per_second", "tokens_per_second"}


def test_empty_input_rejected(tmp_path):
  trace = tmp_path / "entropy_results.json"
  trace.write_text("[]")
  config = make_config({"input": str(trace)}, tmp_path / "out")
  with pytest.raises(trace_scoring.TraceScoringError, match="contains no trajectories"):
    trace_scoring.run(config)
  assert not (tmp_path / "out").exists()


def test_long_trajectory_without_x64(tmp_path):
  length = 65409
  record = {"original_id": "p", "trajectory_index": 0,
            "entropy_sequence": [{"entropy": 0.5}] * length}
  trace = tmp_path / "entropy_results.json"
  trace.write_text(json.dumps([record]))
  config = make_config({"input": str(trace), "x64": False}, tmp_path / "out")
  with pytest.raises(trace_scoring.TraceScoringError, match="Set --config.x64=True"):
    trace_scoring.run(config)
  assert not (tmp_path / "out").exists()
