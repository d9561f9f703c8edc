"""Tests of `evaluation_cache.json` reading, label matching and label file discovery."""

import json
import logging
import pathlib
import shutil

import pytest

from ec_jax import traces
from ec_jax.traces import labels

PARITY_FILE = "reference_traces_small.json"


def _write_cache(path: pathlib.Path, entries: dict) -> pathlib.Path:
  path.write_text(json.dumps({"version": 2, "task_type": "math", "trajectories": entries}))
  return path


def _parity_cache_entries(skip=("sample_00001_traj_3",)) -> dict:
  """Entries for the parity file's 12 trajectories (correct when k is even), minus `skip`."""
  entries = {}
  for problem in range(3):
    for k in range(4):
      trajectory_id = f"sample_{problem:05d}_traj_{k}"
      if trajectory_id in skip:
        continue
      entries[trajectory_id] = {"is_correct": k % 2 == 0, "extracted_answer": str(k),
                                "ground_truth": str(problem), "original_id": f"sample_{problem:05d}"}
  return entries


def test_read_labels_maps_ids(tmp_path):
  path = _write_cache(tmp_path / "evaluation_cache.json", {
      "a_traj_0": {"is_correct": True},
      "a_traj_1": {"is_correct": False},
      "b": {"is_correct": None},
  })
  assert labels.read_labels(path) == {"a_traj_0": True, "a_traj_1": False}

  cache = labels.read_evaluation_cache(path)
  assert cache["a_traj_1"].problem_id == "a"
  assert cache["a_traj_1"].trajectory_index == 1
  assert cache["b"].problem_id == "b"
  assert cache["b"].trajectory_index == 0
  assert cache["b"].is_correct is None


def test_original_id_resolves_bare_ids(tmp_path):
  # A bare problem id that happens to end in `_traj_<k>` is still the problem's only trajectory.
  path = _write_cache(tmp_path / "c.json", {
      "run_traj_2": {"is_correct": True, "original_id": "run_traj_2"},
      "7_traj_1": {"is_correct": False, "original_id": 7},
  })
  cache = labels.read_evaluation_cache(path)
  assert (cache["run_traj_2"].problem_id, cache["run_traj_2"].trajectory_index) == ("run_traj_2", 0)
  assert (cache["7_traj_1"].problem_id, cache["7_traj_1"].trajectory_index) == ("7", 1)


def test_attach_counts_matches(data_dir, tmp_path):
  trajectories = traces.read_traces(data_dir / PARITY_FILE, labels=None)
  entries = _parity_cache_entries()
  entries["other_problem_traj_0"] = {"is_correct": True}
  cache = labels.read_evaluation_cache(_write_cache(tmp_path / "c.json", entries))

  labelled, match = labels.attach_labels(trajectories, cache)
  assert match.num_labelled == 11
  assert match.num_unlabelled == 1
  assert match.num_unused == 1
  assert match.unlabelled_examples == ("sample_00001_traj_3",)
  assert match.unused_examples == ("other_problem_traj_0",)
  for trajectory in labelled:
    if trajectory.key == ("sample_00001", 3):
      assert trajectory.label is None
      assert trajectory.answer is None
    else:
      assert trajectory.label == (trajectory.trajectory_index % 2 == 0)
      assert trajectory.answer == str(trajectory.trajectory_index)


def test_attach_accepts_bool_mapping(data_dir):
  trajectories = traces.read_traces(data_dir / PARITY_FILE, labels=None)
  labelled, match = labels.attach_labels(
      trajectories, {"sample_00000_traj_0": True, "sample_00002_traj_3": False})
  assert match.num_labelled == 2
  assert match.num_unlabelled == 10
  assert labelled[0].label is True
  assert labelled[11].label is False
  assert labelled[1].label is None


def test_unlabelled_is_logged(data_dir, tmp_path, caplog):
  trajectories = traces.read_traces(data_dir / PARITY_FILE, labels=None)
  cache = labels.read_evaluation_cache(_write_cache(tmp_path / "c.json", _parity_cache_entries()))
  with caplog.at_level(logging.INFO):
    labels.attach_labels(trajectories, cache, source="c.json")
  assert "1 trajectories have no label in c.json" in caplog.text
  assert "sample_00001_traj_3" in caplog.text


def test_file_next_to_traces_used(data_dir, tmp_path, caplog):
  shutil.copy(data_dir / PARITY_FILE, tmp_path / "entropy_results.json")
  cache_path = _write_cache(tmp_path / "evaluation_cache.json", _parity_cache_entries())

  with caplog.at_level(logging.INFO):
    loaded = traces.load_traces(tmp_path / "entropy_results.json")
  assert loaded.labels_path == cache_path
  assert f"Using labels from {cache_path}" in caplog.text
  assert loaded.label_match.num_labelled == 11
  assert sum(t.label is None for t in loaded.trajectories) == 1


def test_explicit_none_ignores_file(data_dir, tmp_path):
  shutil.copy(data_dir / PARITY_FILE, tmp_path / "entropy_results.json")
  _write_cache(tmp_path / "evaluation_cache.json", _parity_cache_entries())
  loaded = traces.load_traces(tmp_path / "entropy_results.json", labels=None)
  assert loaded.labels_path is None
  assert all(t.label is None for t in loaded.trajectories)


def test_explicit_path_used(data_dir, tmp_path):
  cache_path = _write_cache(tmp_path / "grading.json", _parity_cache_entries(skip=()))
  loaded = traces.load_traces(data_dir / PARITY_FILE, labels=cache_path)
  assert loaded.labels_path == cache_path
  assert loaded.label_match.num_unlabelled == 0
  assert [t.label for t in loaded.trajectories[:4]] == [True, False, True, False]


def test_absent_labels_file_rejected(data_dir, tmp_path):
  with pytest.raises(FileNotFoundError, match="does-not-exist.json"):
    traces.load_traces(data_dir / PARITY_FILE, labels=tmp_path / "does-not-exist.json")


def test_no_file_found_returns_none(tmp_path):
  (tmp_path / "t.json").write_text("[]")
  assert labels.find_labels_file(tmp_path / "t.json") is None


@pytest.mark.parametrize("entries, field, detail", [
    ({"a_traj_0": {"is_correct": "yes"}}, "field is_correct", "str 'yes'"),
    ({"a_traj_0": {"extracted_answer": "1"}}, "field is_correct", "missing"),
    ({"a_traj_0": True}, "trajectories['a_traj_0']", "bool True"),
    ({"a_traj_0": {"is_correct": True, "original_id": [1]}}, "field original_id", "list [1]"),
])
def test_malformed_entry_names_location(tmp_path, entries, field, detail):
  path = _write_cache(tmp_path / "c.json", entries)
  with pytest.raises(traces.TraceFormatError) as info:
    labels.read_evaluation_cache(path)
  message = str(info.value)
  assert str(path) in message
  assert "'a_traj_0'" in message
  assert field in message
  assert detail in message


def test_duplicate_keys_rejected(tmp_path):
  path = _write_cache(tmp_path / "c.json", {
      "a_traj_0": {"is_correct": True},
      "a": {"is_correct": False},
  })
  with pytest.raises(traces.TraceFormatError, match="both name problem 'a' trajectory 0"):
    labels.read_evaluation_cache(path)


def test_invalid_json_rejected(tmp_path):
  path = tmp_path / "c.json"
  path.write_text('{"trajectories": {')
  with pytest.raises(traces.TraceFormatError, match="invalid JSON"):
    labels.read_evaluation_cache(path)
