"""Ablation rows, Markdown tables and heat-map grids on the reference parity centroids."""

import json
import math

import numpy as np
import pytest

from ec_jax.report import ablation
from ec_jax.report import statistics
from ec_jax.scoring import selection
from ec_jax.scoring import settings as settings_lib

EXPECTED_FILE = "reference_traces_small.expected.jsonl"
GRID_KEYS = ("weighted_average_center", "weighted_average_center@5/50/3",
             "weighted_average_center@3/30/5")
# Labels chosen for these tests (the parity file has none): 3 problems x 4 trajectories.
LABELS = {
    "sample_00000": [True, False, False, True],
    "sample_00001": [False, True, True, False],
    "sample_00002": [True, True, False, True],
}
BOOTSTRAP = dict(bootstrap_samples=500, bootstrap_seed=3)


@pytest.fixture
def records(data_dir):
  with open(data_dir / EXPECTED_FILE, encoding="utf-8") as file:
    return [json.loads(line) for line in file]


def _correct(problem_ids, labels=LABELS):
  return [labels[problem_id] for problem_id in problem_ids]


def _lowest_centroid_oracle(records, key, labels=LABELS):
  """Return {problem_id: correct or None (unanswered)} by a plain-Python argmin over records."""
  outcome = {}
  for problem_id in labels:
    candidates = [(r[key], r["trajectory_index"]) for r in records
                  if r["problem_id"] == problem_id and r[key] is not None]
    if not candidates:
      outcome[problem_id] = None
      continue
    _, index = min(candidates)
    outcome[problem_id] = labels[problem_id][index]
  return outcome


def test_tables_from_records(records):
  tables = ablation.tables_from_records(records, ["weighted_average_center", "moment"])
  assert tables.problem_ids == ("sample_00000", "sample_00001", "sample_00002")
  assert tables.present.shape == (3, 4)
  assert tables.present.all()
  # Trajectory 1 of sample_00000 has no tokens, so no centroid.
  assert math.isnan(tables.tables["weighted_average_center"][0, 1])
  assert tables.tables["moment"][0, 0] == records[0]["moment"]
  assert tables.tables["weighted_average_center"][2, 3] == records[11]["weighted_average_center"]


def test_threshold_grid_rows(records):
  tables = ablation.tables_from_records(records, GRID_KEYS)
  entries = [(ablation.setting_axes(settings_lib.PhaseSetting()),
              tables.tables["weighted_average_center"])]
  entries += ablation.threshold_grid_entries(tables.tables)
  correct = _correct(tables.problem_ids)
  rows = ablation.ablation_rows(entries, correct, present=tables.present, **BOOTSTRAP)

  assert [(r["top_percent"], r["bottom_percent"], r["consecutive_low"]) for r in rows] == [
      (1.0, 80.0, 2), (5.0, 50.0, 3), (3.0, 30.0, 5)]
  for row, key in zip(rows, GRID_KEYS):
    oracle = _lowest_centroid_oracle(records, key)
    hits = [float(bool(oracle[p])) for p in tables.problem_ids]
    assert row["accuracy"] == pytest.approx(sum(hits) / 3), key
    assert row["correct"] == sum(hits), key
    assert row["total"] == 3
    assert row["unanswered"] == 0
    assert row["unlabelled"] == 0
    interval = statistics.bootstrap_interval(hits, samples=500, seed=3)
    assert row["interval"] == list(interval), key


def test_rows_match_evaluate_methods(records):
  tables = ablation.tables_from_records(records, ["weighted_average_center"])
  centroids = tables.tables["weighted_average_center"]
  correct = _correct(tables.problem_ids)
  (row,) = ablation.ablation_rows([({"phase_mass": "length"}, centroids)], correct, **BOOTSTRAP)
  evaluation = selection.evaluate_methods(tables.present, correct, problem_uids=[1, 2, 3],
                                          centroids=centroids)
  summary = evaluation.summaries["lowest_centroid"]
  for key in ("accuracy", "correct", "total", "unanswered", "unlabelled"):
    assert row[key] == summary[key], key


def test_centroid_method_rows_and_table(records):
  methods = settings_lib.CENTROID_METHODS
  tables = ablation.tables_from_records(records, methods)
  labels = dict(LABELS, sample_00001=[False, None, True, False])
  correct = _correct(tables.problem_ids, labels)
  entries = ablation.axis_entries("centroid_method", {m: tables.tables[m] for m in methods})
  rows = ablation.ablation_rows(entries, correct, **BOOTSTRAP)

  assert [row["centroid_method"] for row in rows] == list(methods)
  for row in rows:
    assert row["total"] == 2
    assert row["unlabelled"] == 1
    oracle = _lowest_centroid_oracle(records, row["centroid_method"], labels)
    expected = sum(bool(oracle[p]) for p in ("sample_00000", "sample_00002")) / 2
    assert row["accuracy"] == pytest.approx(expected), row["centroid_method"]

  text = ablation.format_ablation_table(rows)
  lines = text.splitlines()
  assert lines[0] == ("| centroid_method | accuracy % | 95 % interval | correct / total | "
                      "unanswered | unlabelled |")
  assert len(lines) == 2 + len(methods)
  for line, row in zip(lines[2:], rows):
    assert line.startswith(f"| {row['centroid_method']} | {100 * row['accuracy']:.1f} | ")
    assert line.endswith(f"| {row['correct']} / 2 | 0 | 1 |")


def test_num_samples_rows(records):
  tables = ablation.tables_from_records(records, ["weighted_average_center"])
  centroids = tables.tables["weighted_average_center"]
  correct = _correct(tables.problem_ids)
  rows = ablation.num_samples_rows(correct, centroids=centroids, **BOOTSTRAP)
  (full,) = ablation.ablation_rows([({"num_samples": 4}, centroids)], correct, **BOOTSTRAP)

  assert [row["num_samples"] for row in rows] == [1, 2, 3, 4]
  assert all(row["method"] == "lowest_centroid" for row in rows)
  assert all(row["estimate"] is False for row in rows)
  assert rows[-1]["accuracy"] == pytest.approx(full["accuracy"])
  # With one trajectory, it is chosen when it has a centroid.
  labels = np.array(correct)
  with_centroid = labels & np.isfinite(centroids)
  assert rows[0]["accuracy"] == pytest.approx(with_centroid.mean())
  assert rows[0]["unanswered"] == pytest.approx(0.25)
  table = ablation.format_ablation_table(rows)
  assert table.splitlines()[0].startswith("| method | num_samples | accuracy % |")


def test_heatmap_data_grid(records):
  methods = settings_lib.CENTROID_METHODS
  tables = ablation.tables_from_records(records, methods)
  correct = _correct(tables.problem_ids)
  rows = []
  for method in methods:
    for row in ablation.num_samples_rows(correct, centroids=tables.tables[method], **BOOTSTRAP):
      rows.append({"centroid_method": method, **row})

  data = ablation.heatmap_data(rows, "centroid_method", "num_samples")
  assert data.row_values == methods
  assert data.column_values == (1, 2, 3, 4)
  assert data.accuracy.shape == (4, 4)
  assert data.fixed == {"method": "lowest_centroid"}
  for row in rows:
    i = methods.index(row["centroid_method"])
    assert data.accuracy[i, row["num_samples"] - 1] == row["accuracy"]


def test_heatmap_data_needs_fixed_axes(records):
  tables = ablation.tables_from_records(records, GRID_KEYS)
  entries = ablation.threshold_grid_entries(tables.tables)
  rows = ablation.ablation_rows(entries, _correct(tables.problem_ids), **BOOTSTRAP)
  with pytest.raises(ValueError, match="consecutive_low"):
    ablation.heatmap_data(rows, "top_percent", "bottom_percent")
  data = ablation.heatmap_data(rows, "top_percent", "bottom_percent", {"consecutive_low": 3})
  assert data.row_values == (5.0,)
  assert data.column_values == (50.0,)
  assert data.accuracy[0, 0] == rows[0]["accuracy"]
  with pytest.raises(ValueError, match="Unknown axis"):
    ablation.heatmap_data(rows, "top_percent", "entropy")
  with pytest.raises(ValueError, match="No row"):
    ablation.heatmap_data(rows, "top_percent", "bottom_percent", {"consecutive_low": 4})


def test_heatmap_data_missing_and_duplicate_cells():
  rows = [{"top_percent": t, "bottom_percent": b, "accuracy": a, "interval": None}
          for t, b, a in [(3.0, 80.0, 0.5), (1.0, 80.0, 0.25), (1.0, 30.0, None)]]
  data = ablation.heatmap_data(rows, "top_percent", "bottom_percent")
  assert data.row_values == (1.0, 3.0)
  assert data.column_values == (30.0, 80.0)
  np.testing.assert_array_equal(data.accuracy, [[np.nan, 0.25], [np.nan, 0.5]])
  with pytest.raises(ValueError, match="share the cell"):
    ablation.heatmap_data(rows + [rows[0]], "top_percent", "bottom_percent")


@pytest.mark.parametrize("key, name, setting", [
    ("weighted_average_center@5/50/3", "weighted_average_center", (5.0, 50.0, 3)),
    ("lowest_centroid@1/80/2", "lowest_centroid", (1.0, 80.0, 2)),
    ("moment@2.5/30/5", "moment", (2.5, 30.0, 5)),
])
def test_parse_setting_key(key, name, setting):
  parsed_name, parsed = ablation.parse_setting_key(key)
  assert parsed_name == name
  assert (parsed.top_percent, parsed.bottom_percent, parsed.consecutive_low) == setting
  assert name + parsed.suffix == key


@pytest.mark.parametrize("key, message", [
    ("weighted_average_center", "Invalid setting key"),
    ("moment@1/80", "Invalid setting key"),
    ("moment@a/80/2", "must be numbers"),
    ("moment@1/80/2.5", "consecutive_low must be an integer"),
    ("moment@1/180/2", "bottom_percent"),
])
def test_parse_setting_key_rejects(key, message):
  with pytest.raises(ValueError, match=message):
    ablation.parse_setting_key(key)


@pytest.mark.parametrize("records, message", [
    ([{"problem_id": "p", "trajectory_index": 0}], "no 'x' key"),
    ([{"problem_id": "p", "trajectory_index": 0, "x": 1.0},
      {"problem_id": "p", "trajectory_index": 0, "x": 2.0}], "repeats"),
    ([{"problem_id": "p", "trajectory_index": -1, "x": 1.0}], "trajectory_index"),
    ([{"problem_id": "p", "trajectory_index": 0, "x": "0.5"}], "expected a number"),
])
def test_tables_from_records_rejects(records, message):
  with pytest.raises(ValueError, match=message):
    ablation.tables_from_records(records, ["x"])


def test_rows_reject_mismatched_entries():
  table = np.array([[0.1, 0.2]])
  with pytest.raises(ValueError, match="same axes"):
    ablation.ablation_rows([({"a": 1}, table), ({"b": 1}, table)], [[True, False]])
  with pytest.raises(ValueError, match="result keys"):
    ablation.ablation_rows([({"accuracy": 1}, table)], [[True, False]])
  with pytest.raises(ValueError, match="shape"):
    ablation.ablation_rows([({"a": 1}, table), ({"a": 2}, table[:, :1])], [[True, False]])
