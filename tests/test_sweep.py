"""The sweep engine on the reference traces: agreement with score_traces, an oracle, reruns.

These call `sweep.run` in-process. tests/test_sweep_inputs.py covers run folders and invalid
configs, and tests/test_sweep_command.py the command line.
"""

import json
import math
import os
import pathlib
import shutil

import numpy as np
import pytest

import scoring_oracle
from configs import score_traces as score_traces_config
from configs import sweep as sweep_config
from ec_jax import config_checks
from ec_jax.report import ablation
from ec_jax.scoring import results_folder
from ec_jax.scoring import settings as settings_lib
from ec_jax.scoring import sweep
from ec_jax.scoring import trace_scoring

DATA_DIR = pathlib.Path(__file__).parent / "data"
BOOTSTRAP_SAMPLES = 200
RESULT_KEYS = ("accuracy", "interval", "correct", "total", "unanswered", "unlabelled")
# Labels of the 3 x 4 reference trajectories. None marks a trajectory without an entry in the
# labels file, which leaves sample_00001 out of every accuracy.
CORRECT = {"sample_00000": [True, False, True, False], "sample_00001": [True, True, None, False],
           "sample_00002": [False, False, True, True]}
EXPECTED_FILES = sorted([sweep.SWEEP_FILE, sweep.ABLATIONS_FILE, sweep.CONFIG_FILE,
                         sweep.CURVE_FILE, *(sweep.heatmap_file(c) for c in (2, 3, 5))])


def write_labelled_input(folder):
  """Copy the reference traces into `folder` with an evaluation cache beside them."""
  folder.mkdir(parents=True, exist_ok=True)
  trace = folder / "entropy_results.json"
  shutil.copy(DATA_DIR / "reference_traces_small.json", trace)
  entries = {}
  for problem, labels in CORRECT.items():
    for index, label in enumerate(labels):
      if label is not None:
        entries[f"{problem}_traj_{index}"] = {
            "is_correct": label, "extracted_answer": "right" if label else f"wrong{index % 2}",
            "original_id": problem}
  (folder / "evaluation_cache.json").write_text(
      json.dumps({"version": 2, "trajectories": entries}), encoding="utf-8")
  return trace


def make_config(trace, output_dir, variant=None, **overrides):
  """The sweep config for `trace`, with dotted-key overrides such as phases__top_percent."""
  config = sweep_config.get_config(variant)
  config.input = str(trace)
  config.output_dir = str(output_dir)
  config.bootstrap.samples = BOOTSTRAP_SAMPLES
  for key, value in overrides.items():
    *parents, last = key.split("__")
    target = config
    for part in parents:
      target = target[part]
    setattr(target, last, value)
  return config


@pytest.fixture(scope="module")
def labelled_input(tmp_path_factory):
  return write_labelled_input(tmp_path_factory.mktemp("input"))


@pytest.fixture(scope="module")
def reference_sweep(labelled_input, tmp_path_factory):
  out = tmp_path_factory.mktemp("sweep") / "out"
  config = make_config(labelled_input, out)
  return config, sweep.run(config)


@pytest.fixture(scope="module")
def score_traces_summary(labelled_input, tmp_path_factory):
  """summary.json of `score_traces --config.sweep` on the same input and labels."""
  config = score_traces_config.get_config("sweep")
  config.input = str(labelled_input)
  config.output_dir = str(tmp_path_factory.mktemp("score_traces") / "out")
  config.bootstrap.samples = BOOTSTRAP_SAMPLES
  return trace_scoring.run(config).summary


def result_part(row):
  return {key: row[key] for key in RESULT_KEYS}


def rows_by_axes(rows, axes):
  return {tuple(row[axis] for axis in axes): row for row in rows}


# ---------------------------------------------------------------------------------------------
# Agreement with score_traces.


def test_grid_matches_score_traces(reference_sweep, score_traces_summary):
  _, result = reference_sweep
  methods = score_traces_summary["methods"]
  grid = result.report["ablations"]["threshold_grid"]
  assert len(grid) == 27
  rows = rows_by_axes(grid, ablation.SETTING_AXES)

  # The configured setting equals score_traces' headline lowest_centroid.
  assert result_part(rows[(1.0, 80.0, 2)]) == result_part(methods["lowest_centroid"])
  assert result_part(rows[(5.0, 50.0, 3)]) == result_part(methods["lowest_centroid@5/50/3"])
  assert result_part(rows[(3.0, 30.0, 5)]) == result_part(methods["lowest_centroid@3/30/5"])
  for setting in settings_lib.sweep_grid():
    row = rows[(setting.top_percent, setting.bottom_percent, setting.consecutive_low)]
    assert result_part(row) == result_part(methods["lowest_centroid" + setting.suffix]), (
        setting.suffix)
  assert rows[(1.0, 80.0, 2)]["total"] == 2
  assert rows[(1.0, 80.0, 2)]["unlabelled"] == 1


def test_curve_at_n_matches_score_traces(reference_sweep, score_traces_summary):
  _, result = reference_sweep
  methods = score_traces_summary["methods"]
  rows = rows_by_axes(result.report["ablations"]["num_samples"], ("method", "num_samples"))
  assert sorted({n for _, n in rows}) == [1, 2, 3, 4]
  for method in sweep.CURVE_METHODS:
    row = rows[(method, 4)]
    assert row["accuracy"] == pytest.approx(methods[method]["accuracy"], rel=1e-12), method
    assert row["total"] == methods[method]["total"], method
    assert row["estimate"] is False, method
  # With one trajectory per problem, every method picks it: the expectation is pass@1.
  for method in ("lowest_centroid", "majority_vote", "pass@n"):
    assert rows[(method, 1)]["correct"] == pytest.approx(rows[("pass@1", 1)]["correct"]), method


# ---------------------------------------------------------------------------------------------
# Agreement with the plain-Python oracle.


def reference_entropies():
  with open(DATA_DIR / "reference_traces_small.json", encoding="utf-8") as file:
    records = json.load(file)
  return {(r["original_id"], r["trajectory_index"]): [e["entropy"] for e in r["entropy_sequence"]]
          for r in records}


def oracle_counts(centroid_of):
  """Return (correct, unanswered) of the lowest centroid over the labelled problems."""
  entropies = reference_entropies()
  correct = unanswered = 0
  for problem, labels in CORRECT.items():
    if None in labels:
      continue
    values = [centroid_of(entropies[(problem, index)]) for index in range(len(labels))]
    candidates = [(value, index) for index, value in enumerate(values) if value is not None]
    if not candidates:
      unanswered += 1
      continue
    correct += labels[min(candidates)[1]]
  return correct, unanswered


@pytest.mark.parametrize("method", settings_lib.CENTROID_METHODS)
def test_centroid_method_matches_oracle(reference_sweep, method):
  _, result = reference_sweep
  rows = rows_by_axes(result.report["ablations"]["centroid_method"], ("centroid_method",))

  def centroid_of(entropies):
    if method == "raw_entropy":
      return scoring_oracle.raw_entropy_centroid(entropies)
    return scoring_oracle.score(entropies, 1.0, 80.0, 2)[method]

  correct, unanswered = oracle_counts(centroid_of)
  row = rows[(method,)]
  assert row["correct"] == correct
  assert row["unanswered"] == unanswered
  assert row["total"] == 2
  assert row["accuracy"] == correct / 2


@pytest.mark.parametrize("mass", settings_lib.PHASE_MASSES)
def test_phase_mass_matches_oracle(reference_sweep, mass):
  _, result = reference_sweep
  rows = rows_by_axes(result.report["ablations"]["phase_mass"], ("phase_mass",))
  correct, unanswered = oracle_counts(
      lambda entropies: scoring_oracle.score(entropies, 1.0, 80.0, 2, mass)[
          "weighted_average_center"])
  assert rows[(mass,)]["correct"] == correct
  assert rows[(mass,)]["unanswered"] == unanswered


def test_imported_traces_lack_full_entropy(reference_sweep):
  config, result = reference_sweep
  rows = result.report["ablations"]["entropy"]
  assert [row["entropy"] for row in rows] == ["topk", "full", "sampling"]
  assert "accuracy" in rows[0]
  for row in rows[1:]:
    assert set(row) == {"entropy", "unavailable"}
    assert "top-k" in row["unavailable"]
  passes = result.report["scoring"]["passes"]
  assert passes == [{"entropy": "topk", "phase_mass": "length", "settings": 28},
                    {"entropy": "topk", "phase_mass": "entropy", "settings": 1}]
  text = (pathlib.Path(config.output_dir) / sweep.ABLATIONS_FILE).read_text(encoding="utf-8")
  assert "- entropy full: full entropy is unavailable" in text
  assert "- entropy sampling: sampling entropy is unavailable" in text


# ---------------------------------------------------------------------------------------------
# Files, reruns and the results-folder rule.


def without_timing(path):
  report = json.loads(path.read_text(encoding="utf-8"))
  assert "timing" in report
  del report["timing"]
  return report


def assert_same_files(first, second):
  assert sorted(os.listdir(first)) == sorted(os.listdir(second))
  for name in sorted(os.listdir(first)):
    if name == sweep.SWEEP_FILE:
      assert without_timing(first / name) == without_timing(second / name)
      continue
    if name == sweep.CONFIG_FILE:
      # The folders differ in output_dir only.
      first_config = json.loads((first / name).read_text(encoding="utf-8"))
      second_config = json.loads((second / name).read_text(encoding="utf-8"))
      assert results_folder.config_differences(first_config, second_config) == []
      continue
    assert (first / name).read_bytes() == (second / name).read_bytes(), name


def test_files_written(reference_sweep):
  config, result = reference_sweep
  out = pathlib.Path(config.output_dir)
  assert sorted(os.listdir(out)) == EXPECTED_FILES
  assert sorted(os.listdir(out.parent)) == ["out"], "temporary folders were left behind"
  report = json.loads((out / sweep.SWEEP_FILE).read_text(encoding="utf-8"))
  assert list(report["ablations"]) == list(sweep.ABLATIONS)
  assert report["counts"]["num_samples"] == 4
  assert report["labels"]["unlabelled_problems"] == 1
  assert json.loads((out / sweep.CONFIG_FILE).read_text()) == results_folder.config_json(config)
  for name in EXPECTED_FILES:
    if name.endswith(".png"):
      assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
  text = (out / sweep.ABLATIONS_FILE).read_text(encoding="utf-8")
  for heading in ("## Threshold grid", "## Centroid method", "## Entropy", "## Phase mass",
                  "## Accuracy with n of the N trajectories"):
    assert heading in text


def test_rerun_is_identical(reference_sweep, tmp_path):
  config, _ = reference_sweep
  first = pathlib.Path(config.output_dir)
  copy = tmp_path / "first"
  shutil.copytree(first, copy)

  # The same config replaces the results in the same folder and writes the same files into a
  # new one.
  sweep.run(config)
  assert_same_files(copy, first)
  other = tmp_path / "second"
  config_copy = make_config(config.input, other)
  sweep.run(config_copy)
  assert_same_files(copy, other)


def test_other_config_rejected(reference_sweep):
  config, _ = reference_sweep
  out = pathlib.Path(config.output_dir)
  before = {name: (out / name).read_bytes() for name in os.listdir(out)}
  other = make_config(config.input, out, centroid_methods=("moment",))
  with pytest.raises(results_folder.OutputFolderError, match="centroid_methods"):
    sweep.run(other)
  assert {name: (out / name).read_bytes() for name in os.listdir(out)} == before


def test_n_above_num_samples_writes_nothing(labelled_input, tmp_path):
  out = tmp_path / "out"
  config = make_config(labelled_input, out, num_samples_grid=(1, 5))
  with pytest.raises(config_checks.ConfigError, match=r"num_samples_grid\[1\] = 5.*N = 4"):
    sweep.run(config)
  assert not out.exists()
  assert os.listdir(tmp_path) == []


def test_without_labels(labelled_input, tmp_path):
  out = tmp_path / "out"
  config = make_config(labelled_input, out, labels="none", num_samples_grid=(1, 4),
                       centroid_methods=("weighted_average_center",), phase_masses=("length",),
                       entropies=("topk",))
  report = sweep.run(config).report
  for name in ("threshold_grid", "centroid_method", "entropy", "phase_mass", "num_samples"):
    for row in report["ablations"][name]:
      if "unavailable" in row:
        continue
      assert row["accuracy"] is None, name
      assert row["interval"] is None, name
      assert row["unlabelled"] == 3, name
  # No answers without a labels file: the vote has no rows.
  votes = [row for row in report["ablations"]["num_samples"] if row["method"] == "majority_vote"]
  assert votes == [{"method": "majority_vote", "unavailable": sweep._NO_ANSWERS}]
  assert sorted(os.listdir(out)) == EXPECTED_FILES
  assert report["scoring"]["passes"] == [
      {"entropy": "topk", "phase_mass": "length", "settings": 28}]


def test_reference_setting_variant(labelled_input, tmp_path):
  config = make_config(labelled_input, tmp_path / "out", "reference", num_samples_grid=(4,),
                       phase_masses=("length",), entropies=("topk",))
  report = sweep.run(config).report
  grid = rows_by_axes(report["ablations"]["threshold_grid"], ablation.SETTING_AXES)
  headline = report["ablations"]["centroid_method"][0]
  assert headline["centroid_method"] == "weighted_average_center"
  assert result_part(headline) == result_part(grid[(5.0, 50.0, 3)])
  assert report["scoring"]["setting"] == "5/50/3"
  assert math.isclose(
      next(row["accuracy"] for row in report["ablations"]["num_samples"]
           if row["method"] == "lowest_centroid"), headline["accuracy"], rel_tol=1e-12)
  assert np.isfinite(headline["accuracy"])
