"""Tests of ec_jax's record files: JSONL appends, atomic JSON, npz shards and run folders."""

import json
import logging
import math
import os
import pathlib
import pickle
import signal
import subprocess
import sys
import textwrap
import time
import zipfile

import numpy as np
import pytest

from ec_jax import traces
from ec_jax.traces import records
from ec_jax.traces import run_folder
from ec_jax.traces import shards

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------------------------------------
# JSONL writer and reader.


def test_jsonl_round_trip(tmp_path):
  path = tmp_path / "out" / "trajectories.jsonl"
  with records.JsonlWriter(path) as writer:
    assert writer.write([{"a": 1, "b": [1.5, math.nan]}, {"a": np.int32(2)}]) == 2
    assert writer.write([]) == 0
    writer.write([{"c": np.array([1, 2]), "d": np.float32(0.5), "e": np.bool_(True)}])

  assert list(records.read_jsonl(path)) == [
      {"a": 1, "b": [1.5, None]}, {"a": 2}, {"c": [1, 2], "d": 0.5, "e": True}]
  text = path.read_text()
  assert "NaN" not in text
  assert text.count("\n") == 3


def test_json_value_conversion():
  assert records.to_json_value({"x": (math.inf, -math.inf, 1)}) == {"x": [None, None, 1]}
  assert records.to_json_value(np.array([[1.0, np.nan]])) == [[1.0, None]]
  with pytest.raises(TypeError, match="keys must be strings"):
    records.to_json_value({1: 2})
  with pytest.raises(TypeError, match="cannot write a set"):
    records.to_json_value({"x": {1}})


def test_failed_batch_writes_nothing(tmp_path):
  path = tmp_path / "t.jsonl"
  with records.JsonlWriter(path) as writer:
    writer.write([{"a": 1}])
    with pytest.raises(TypeError):
      writer.write([{"a": 2}, {"b": object()}])
  assert list(records.read_jsonl(path)) == [{"a": 1}]


def test_reopen_appends(tmp_path):
  path = tmp_path / "t.jsonl"
  with records.JsonlWriter(path) as writer:
    writer.write([{"i": 0}])
  with records.JsonlWriter(path) as writer:
    writer.write([{"i": 1}])
  assert [r["i"] for r in records.read_jsonl(path)] == [0, 1]


@pytest.mark.parametrize("tail", [
    b'{"i": 2, "text": "cut', b'{"i": 2}', b"\x00\x00\x00\n", b'{"i": 2, "text": "cut\n'])
def test_torn_tail_dropped(tmp_path, caplog, tail):
  path = tmp_path / "t.jsonl"
  intact = b'{"i": 0}\n{"i": 1}\n'
  path.write_bytes(intact + tail)

  with caplog.at_level(logging.WARNING):
    with records.JsonlWriter(path) as writer:
      writer.write([{"i": 3}])
  assert "Dropped a torn last line" in caplog.text
  assert path.read_bytes() == intact + b'{"i":3}\n'
  assert [r["i"] for r in records.read_jsonl(path)] == [0, 1, 3]


def test_torn_tail_long_line(tmp_path):
  # The last line is longer than the backwards search block, so the search spans blocks.
  path = tmp_path / "t.jsonl"
  intact = b'{"i": 0}\n'
  path.write_bytes(intact + b'{"text": "' + b"x" * 200_000)
  assert records.drop_torn_tail(path) == 200_010
  assert path.read_bytes() == intact


def test_intact_file_untouched(tmp_path):
  path = tmp_path / "t.jsonl"
  content = b'{"i": 0}\n{"text": "' + b"y" * 100_000 + b'"}\n'
  path.write_bytes(content)
  assert records.drop_torn_tail(path) == 0
  assert path.read_bytes() == content
  assert records.drop_torn_tail(tmp_path / "absent.jsonl") == 0


def test_single_torn_line_dropped(tmp_path):
  path = tmp_path / "t.jsonl"
  path.write_bytes(b'{"i": 0')
  assert records.drop_torn_tail(path) == 7
  assert path.read_bytes() == b""


def test_reader_skips_unfinished_line(tmp_path, caplog):
  path = tmp_path / "t.jsonl"
  path.write_bytes(b'{"i": 0}\n\n{"i": 1}')
  with caplog.at_level(logging.WARNING):
    assert list(records.read_jsonl(path)) == [{"i": 0}]
  assert "unfinished last line" in caplog.text


def test_reader_rejects_bad_line(tmp_path):
  path = tmp_path / "t.jsonl"
  path.write_bytes(b'{"i": 0}\nnot json\n{"i": 1}\n')
  with pytest.raises(traces.TraceFormatError) as info:
    list(records.read_jsonl(path))
  assert "line 2" in str(info.value)
  assert info.value.byte_offset == 9


_WRITER_SCRIPT = textwrap.dedent("""
    import sys
    from ec_jax.traces import records
    with records.JsonlWriter(sys.argv[1]) as writer:
      print("ready", flush=True)
      batch = 0
      while True:
        writer.write([{"batch": batch, "row": row, "text": "z" * 5000} for row in range(8)])
        batch += 1
""")


def test_killed_writer_recovers(tmp_path):
  path = tmp_path / "t.jsonl"
  process = subprocess.Popen(
      [sys.executable, "-c", _WRITER_SCRIPT, str(path)], cwd=REPO_ROOT,
      stdout=subprocess.PIPE, env={**os.environ, "PYTHONPATH": str(REPO_ROOT)})
  try:
    assert process.stdout.readline().strip() == b"ready"
    deadline = time.monotonic() + 30
    while path.stat().st_size < 2_000_000 and time.monotonic() < deadline:
      time.sleep(0.05)
  finally:
    process.send_signal(signal.SIGKILL)
    process.wait()
  # Cut the file at an arbitrary byte as a kill inside `write` would.
  with open(path, "r+b") as file:
    file.truncate(file.seek(0, os.SEEK_END) - 1234)

  with records.JsonlWriter(path) as writer:
    writer.write([{"batch": -1, "row": 0}])
  rows = list(records.read_jsonl(path))
  assert len(rows) > 10
  assert rows[-1] == {"batch": -1, "row": 0}
  assert all(set(row) == {"batch", "row", "text"} for row in rows[:-1])


# ---------------------------------------------------------------------------------------------
# Atomic JSON files.


def test_json_atomic_writes(tmp_path):
  path = tmp_path / "sub" / "summary.json"
  records.write_json_atomic(path, {"accuracy": math.nan, "n": np.int64(3), "names": ("a",)})
  assert json.loads(path.read_text()) == {"accuracy": None, "n": 3, "names": ["a"]}
  records.write_json_atomic(path, {"n": 4})
  assert json.loads(path.read_text()) == {"n": 4}
  assert sorted(p.name for p in path.parent.iterdir()) == ["summary.json"]


def test_json_atomic_keeps_old_on_error(tmp_path):
  path = tmp_path / "summary.json"
  records.write_json_atomic(path, {"n": 1})
  with pytest.raises(TypeError):
    records.write_json_atomic(path, {"n": object()})
  assert json.loads(path.read_text()) == {"n": 1}
  assert [p.name for p in tmp_path.iterdir()] == ["summary.json"]


# ---------------------------------------------------------------------------------------------
# npz shards.


def _shard_arrays(rng, problem_ids, indices, lengths, time_steps=16):
  rows = len(problem_ids)
  arrays = {
      "problem_id": np.asarray(problem_ids),
      "trajectory_index": np.asarray(indices, dtype=np.int32),
      "lengths": np.asarray(lengths, dtype=np.int32),
      "token_ids": rng.integers(0, 1000, size=(rows, time_steps)).astype(np.int32),
      "logprob": -rng.exponential(size=(rows, time_steps)).astype(np.float32),
      "entropy_topk": rng.uniform(0, math.log(10), size=(rows, time_steps)).astype(np.float32),
      "entropy_full": rng.uniform(0, 5, size=(rows, time_steps)).astype(np.float32),
      "entropy_sampling": rng.uniform(0, 2, size=(rows, time_steps)).astype(np.float32),
      "confidence": rng.uniform(0, 10, size=(rows, time_steps)).astype(np.float32),
      "self_certainty": rng.uniform(0, 10, size=(rows, time_steps)).astype(np.float32),
      "phase_id": rng.integers(-1, 3, size=(rows, time_steps)).astype(np.int32),
  }
  return arrays


def test_npz_bytes_reproducible(tmp_path):
  rng = np.random.default_rng(0)
  arrays = _shard_arrays(rng, ["a", "a", "bb"], [0, 1, 0], [16, 3, 0])
  first = shards.write_shard(tmp_path / "run1", 0, arrays)
  second = shards.write_shard(tmp_path / "run2", 0, dict(arrays))
  assert first == tmp_path / "run1" / "arrays" / "batch_0.npz"
  assert first.read_bytes() == second.read_bytes()

  with zipfile.ZipFile(first) as archive:
    assert archive.namelist() == [name + ".npy" for name in arrays]
    for info in archive.infolist():
      assert info.date_time == (1980, 1, 1, 0, 0, 0)

  loaded = shards.read_shard(first)
  assert list(loaded) == list(arrays)
  for name, values in arrays.items():
    np.testing.assert_array_equal(loaded[name], values)
    assert loaded[name].dtype == values.dtype
  assert [p.name for p in (tmp_path / "run1" / "arrays").iterdir()] == ["batch_0.npz"]


def test_npz_loads_with_numpy(tmp_path):
  path = tmp_path / "x.npz"
  shards.write_npz(path, {"a": np.arange(6).reshape(2, 3), "s": np.asarray(["x", "yz"])})
  with np.load(path) as archive:
    np.testing.assert_array_equal(archive["a"], np.arange(6).reshape(2, 3))
    assert archive["s"].tolist() == ["x", "yz"]


def test_npz_rejects_object_arrays(tmp_path):
  with pytest.raises(ValueError, match="dtype object"):
    shards.write_npz(tmp_path / "x.npz", {"a": np.array([{"k": 1}], dtype=object)})
  assert not (tmp_path / "x.npz").exists()


@pytest.mark.parametrize("change, message", [
    (lambda a: a.pop("lengths"), "lack \\['lengths'\\]"),
    (lambda a: a.update(logprob=a["logprob"][:, :5]), "'logprob' has shape \\(2, 5\\)"),
    (lambda a: a.update(trajectory_index=np.array([0])), "'trajectory_index' has shape"),
    (lambda a: a.update(lengths=np.array([3, 17])),
     "lengths must lie in \\[0, 16\\], got 17 in row 1"),
])
def test_shard_shape_errors(tmp_path, change, message):
  arrays = _shard_arrays(np.random.default_rng(1), ["a", "b"], [0, 0], [3, 4])
  change(arrays)
  with pytest.raises(ValueError, match=message):
    shards.write_shard(tmp_path, 0, arrays)


def test_list_shards_numeric_order(tmp_path):
  arrays = _shard_arrays(np.random.default_rng(2), ["a"], [0], [1])
  for batch_index in (10, 2, 0):
    shards.write_shard(tmp_path, batch_index, arrays)
  (tmp_path / "arrays" / "notes.txt").write_text("not a shard")
  assert [b for b, _ in shards.list_shards(tmp_path)] == [0, 2, 10]


# ---------------------------------------------------------------------------------------------
# Run folders.


def _write_run(folder: pathlib.Path, rng):
  """A run with 2 problems x 3 trajectories in two batches; returns the shard arrays."""
  batches = [
      _shard_arrays(rng, ["p0", "p0", "p0"], [0, 1, 2], [16, 5, 0]),
      _shard_arrays(rng, ["7", "7", "7"], [2, 0, 1], [9, 12, 1]),
  ]
  with records.JsonlWriter(folder / "trajectories.jsonl") as writer:
    for arrays in batches:
      lines = []
      for row in range(3):
        length = int(arrays["lengths"][row])
        lines.append({
            "problem_id": str(arrays["problem_id"][row]),
            "trajectory_index": int(arrays["trajectory_index"][row]),
            "token_ids": arrays["token_ids"][row, :length],
            "text": f"text {row}", "num_tokens": length, "finish_reason": "stop",
            "answer": str(row), "correct": [True, False, None][row], "centroid": 0.5,
            "num_phases": 0, "phases": [],
        })
      writer.write(lines)
  for batch_index, arrays in enumerate(batches):
    shards.write_shard(folder, batch_index, arrays)
  records.write_json_atomic(folder / "config.json", {"entropy_k": 10})
  return batches


@pytest.mark.parametrize("kind", ["topk", "full", "sampling"])
def test_run_folder_round_trip(tmp_path, kind):
  batches = _write_run(tmp_path, np.random.default_rng(3))
  result = run_folder.read_run_folder(tmp_path, entropy_kind=kind)

  assert len(result) == 6
  expected_rows = [(arrays, row) for arrays in batches for row in range(3)]
  for trajectory, (arrays, row) in zip(result, expected_rows):
    length = int(arrays["lengths"][row])
    assert trajectory.problem_id == str(arrays["problem_id"][row])
    assert trajectory.trajectory_index == int(arrays["trajectory_index"][row])
    assert trajectory.num_tokens == length
    assert trajectory.entropy.dtype == np.float64
    np.testing.assert_array_equal(trajectory.entropy, arrays[f"entropy_{kind}"][row, :length])
    assert not trajectory.missing.any()
    np.testing.assert_array_equal(trajectory.token_ids, arrays["token_ids"][row, :length])
    assert trajectory.label == [True, False, None][row]
    assert trajectory.text == f"text {row}"
    assert trajectory.answer == str(row)
    assert trajectory.topk_logprobs is None
    other_kinds = {f"entropy_{k}" for k in run_folder.ENTROPY_KINDS} - {f"entropy_{kind}"}
    assert set(trajectory.per_token) == {
        "logprob", "confidence", "self_certainty", "phase_id"} | other_kinds
    np.testing.assert_array_equal(trajectory.per_token["phase_id"], arrays["phase_id"][row, :length])


def test_run_folder_detected(tmp_path):
  _write_run(tmp_path, np.random.default_rng(4))
  loaded = traces.load_traces(tmp_path, entropy_kind="full")
  assert loaded.detected_format == "ec_jax"
  assert len(loaded.trajectories) == 6
  # `trajectories.jsonl` itself also names the run folder.
  assert len(traces.read_traces(tmp_path / "trajectories.jsonl")) == 6


def test_run_folder_missing_kind(tmp_path):
  batches = _write_run(tmp_path, np.random.default_rng(5))
  del batches[1]["entropy_full"]
  shards.write_shard(tmp_path, 1, batches[1])
  with pytest.raises(traces.TraceFormatError) as info:
    run_folder.read_run_folder(tmp_path, entropy_kind="full")
  assert "batch_1.npz" in str(info.value)
  assert "'entropy_full'" in str(info.value)


def test_run_folder_record_without_row(tmp_path):
  _write_run(tmp_path, np.random.default_rng(6))
  (tmp_path / "arrays" / "batch_1.npz").unlink()
  with pytest.raises(traces.TraceFormatError, match="3 records have no row"):
    run_folder.read_run_folder(tmp_path)


def test_run_folder_row_without_record(tmp_path, caplog):
  _write_run(tmp_path, np.random.default_rng(7))
  lines = (tmp_path / "trajectories.jsonl").read_text().splitlines(keepends=True)
  (tmp_path / "trajectories.jsonl").write_text("".join(lines[:5]))
  with caplog.at_level(logging.WARNING):
    result = run_folder.read_run_folder(tmp_path)
  assert len(result) == 6
  assert result[5].label is None
  assert result[5].text is None
  assert "1 shard rows" in caplog.text


def test_run_folder_length_mismatch(tmp_path):
  _write_run(tmp_path, np.random.default_rng(8))
  path = tmp_path / "trajectories.jsonl"
  rows = [json.loads(line) for line in path.read_text().splitlines()]
  rows[0]["num_tokens"] = 3
  path.write_text("".join(json.dumps(row) + "\n" for row in rows))
  with pytest.raises(traces.TraceFormatError, match="num_tokens 3"):
    run_folder.read_run_folder(tmp_path)


def test_run_folder_without_shards(tmp_path):
  with records.JsonlWriter(tmp_path / "trajectories.jsonl") as writer:
    writer.write([{"problem_id": "a", "trajectory_index": 0}])
  with pytest.raises(traces.TraceFormatError, match="no batch_<b>.npz shards"):
    run_folder.read_run_folder(tmp_path)


def test_run_folder_invalid_kind(tmp_path):
  with pytest.raises(ValueError, match="entropy_kind"):
    run_folder.read_run_folder(tmp_path, entropy_kind="tempered")


def test_atomic_file_mode_follows_umask(tmp_path):
  old_mask = os.umask(0o027)
  try:
    records.write_json_atomic(tmp_path / "a.json", {"n": 1})
  finally:
    os.umask(old_mask)
  assert (tmp_path / "a.json").stat().st_mode & 0o777 == 0o640


def test_damaged_shard_rejected(tmp_path):
  path = shards.write_shard(tmp_path, 0, _shard_arrays(np.random.default_rng(9), ["a"], [0], [1]))
  path.write_bytes(path.read_bytes()[:100])
  with pytest.raises(traces.TraceFormatError, match="not a readable .npz file"):
    shards.read_shard(path)


def test_trace_error_pickles():
  error = traces.TraceFormatError("f.json", "bad", record_index=3, record_id="p", field="x")
  copy = pickle.loads(pickle.dumps(error))
  assert str(copy) == str(error)
  assert copy.record_index == 3
  assert copy.field == "x"
