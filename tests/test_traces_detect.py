"""Tests of trace format detection and `read_traces` on every supported input."""

import json
import shutil

import numpy as np
import pytest

from ec_jax import traces
from ec_jax.traces import detect

PARITY_FILE = "reference_traces_small.json"


def _reference_lines(data_dir, path):
  with open(data_dir / PARITY_FILE, encoding="utf-8") as file:
    records = json.load(file)
  path.write_text("".join(json.dumps(record) + "\n" for record in records))
  return path


def _vllm_file(path):
  logprobs = np.log(np.full(12, 1 / 12))
  entry = {str(i): float(value) for i, value in enumerate(logprobs)}
  path.write_text(json.dumps({"problem_id": "p", "logprobs": [entry, None]}) + "\n")
  return path


def test_detects_reference_array(data_dir):
  assert detect.detect_format(data_dir / PARITY_FILE) == "reference_json"


def test_detects_reference_lines(data_dir, tmp_path):
  path = _reference_lines(data_dir, tmp_path / "results.jsonl")
  assert detect.detect_format(path) == "reference_jsonl"
  assert len(traces.read_traces(path, format="reference", labels=None)) == 12


def test_detects_vllm(tmp_path):
  path = _vllm_file(tmp_path / "samples.jsonl")
  assert detect.detect_format(path) == "vllm"
  [trajectory] = traces.read_traces(path, k=12, labels=None)
  assert trajectory.num_tokens == 2
  np.testing.assert_array_equal(trajectory.missing, [False, True])


def test_folder_with_reference_file(data_dir, tmp_path):
  shutil.copy(data_dir / PARITY_FILE, tmp_path / "entropy_results.json")
  loaded = traces.load_traces(tmp_path)
  assert loaded.path == tmp_path / "entropy_results.json"
  assert loaded.detected_format == "reference_json"
  assert len(loaded.trajectories) == 12


def test_iter_traces_streams(data_dir):
  iterator = traces.iter_traces(data_dir / PARITY_FILE)
  first = next(iterator)
  assert first.key == ("sample_00000", 0)
  assert sum(1 for _ in iterator) == 11


@pytest.mark.parametrize("content, detail", [
    ("", "empty"),
    ("hello", "starts with 'h'"),
    ('{"question": "1+1", "answer": "2"}\n', "keys ['answer', 'question']"),
    ("{not json\n", "not valid JSON"),
])
def test_unknown_file_rejected(tmp_path, content, detail):
  path = tmp_path / "input.jsonl"
  path.write_text(content)
  with pytest.raises(traces.TraceFormatError) as info:
    traces.read_traces(path)
  assert detail in str(info.value)
  assert str(path) in str(info.value)


def test_unknown_folder_rejected(tmp_path):
  (tmp_path / "notes.txt").write_text("x")
  with pytest.raises(traces.TraceFormatError, match="contains neither trajectories.jsonl"):
    traces.read_traces(tmp_path)


def test_absent_path_rejected(tmp_path):
  with pytest.raises(FileNotFoundError, match="does not exist"):
    traces.read_traces(tmp_path / "absent.json")


def test_format_mismatch_rejected(data_dir, tmp_path):
  with pytest.raises(traces.TraceFormatError, match="format='vllm' was requested"):
    traces.read_traces(data_dir / PARITY_FILE, format="vllm")
  with pytest.raises(traces.TraceFormatError, match="format='reference' was requested"):
    traces.read_traces(_vllm_file(tmp_path / "v.jsonl"), format="reference")
  lines = _reference_lines(data_dir, tmp_path / "r.jsonl")
  with pytest.raises(traces.TraceFormatError, match="use format='reference'"):
    traces.read_traces(lines, format="vllm")


def test_unknown_format_name_rejected(data_dir):
  with pytest.raises(ValueError, match="format must be one of"):
    traces.read_traces(data_dir / PARITY_FILE, format="hf")


def test_run_records_without_arrays(tmp_path):
  path = tmp_path / "trajectories.jsonl"
  path.write_text(json.dumps({"problem_id": "a", "trajectory_index": 0, "num_tokens": 1}) + "\n")
  with pytest.raises(traces.TraceFormatError, match="no arrays/ subfolder"):
    traces.read_traces(path)
