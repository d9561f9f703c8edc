"""Tests of the reference `entropy_results.json` reader on the parity file and edited copies."""

import json
import math
import pathlib
import tracemalloc

import numpy as np
import pytest

from ec_jax import traces
from ec_jax.traces import _json_stream
from ec_jax.traces import reference

PARITY_FILE = "reference_traces_small.json"
EXPECTED_FILE = "reference_traces_small.expected.jsonl"


def _load_raw(data_dir: pathlib.Path) -> list[dict]:
  # The parity file is small, so the test may load it whole to get the values to compare with.
  with open(data_dir / PARITY_FILE, encoding="utf-8") as file:
    return json.load(file)


def _write_array(path: pathlib.Path, records: list[dict]) -> pathlib.Path:
  path.write_text(json.dumps(records), encoding="utf-8")
  return path


def _write_lines(path: pathlib.Path, records: list[dict]) -> pathlib.Path:
  path.write_text("".join(json.dumps(record) + "\n" for record in records), encoding="utf-8")
  return path


def _entry(entropy, probs=(0.7, 0.2, 0.1), token_id=5):
  return {"token_id": token_id, "entropy": entropy, "top_k_probs": list(probs)}


def _record(record_id="p_traj_0", original_id="p", index=0, entropies=(0.5, 0.25), **extra):
  record = {"id": record_id, "original_id": original_id, "trajectory_index": index,
            "entropy_sequence": [_entry(value) for value in entropies]}
  record.update(extra)
  return record


# ---------------------------------------------------------------------------------------------
# The parity file.


def test_parity_file_ids_and_lengths(data_dir):
  trajectories = traces.read_traces(data_dir / PARITY_FILE, labels=None)
  with open(data_dir / EXPECTED_FILE, encoding="utf-8") as file:
    expected = [json.loads(line) for line in file]

  assert len(trajectories) == len(expected) == 12
  for trajectory, row in zip(trajectories, expected):
    assert trajectory.problem_id == row["problem_id"]
    assert trajectory.trajectory_index == row["trajectory_index"]
    assert trajectory.num_tokens == row["num_tokens"]
    assert trajectory.record_id == f"{row['problem_id']}_traj_{row['trajectory_index']}"


def test_parity_file_missing_entries(data_dir):
  trajectories = traces.read_traces(data_dir / PARITY_FILE, labels=None)

  assert trajectories[1].num_tokens == 0
  assert trajectories[1].problem_id == "sample_00000"
  for trajectory in trajectories:
    expected_missing = 1 if trajectory.trajectory_index == 2 else 0
    assert int(trajectory.missing.sum()) == expected_missing
    assert int(np.isnan(trajectory.entropy).sum()) == expected_missing
    np.testing.assert_array_equal(np.isnan(trajectory.entropy), trajectory.missing)


def test_parity_file_values_exact(data_dir):
  trajectories = traces.read_traces(data_dir / PARITY_FILE, labels=None)
  raw = _load_raw(data_dir)

  for trajectory, record in zip(trajectories, raw):
    sequence = record["entropy_sequence"]
    expected = np.array([math.nan if e["entropy"] is None else e["entropy"] for e in sequence])
    np.testing.assert_array_equal(trajectory.entropy, expected)
    assert trajectory.entropy.dtype == np.float64
    np.testing.assert_array_equal(trajectory.token_ids, np.array(record["token_ids"]))
    assert trajectory.ground_truth == record["solution"]
    assert trajectory.text == record["generated_text"]
    assert trajectory.label is None
    if not sequence:
      continue
    for position, entry in enumerate(sequence):
      row = trajectory.topk_logprobs[position]
      if entry["top_k_probs"]:
        np.testing.assert_array_equal(row, np.log(sorted(entry["top_k_probs"], reverse=True)))
      else:
        assert np.isnan(row).all()


def test_small_chunks_give_same_records(data_dir):
  # A 7-character window forces every record to be re-read across many refills.
  whole = list(_json_stream.iter_json_array(data_dir / PARITY_FILE))
  chunked = list(_json_stream.iter_json_array(data_dir / PARITY_FILE, chunk_chars=7))
  assert [index for index, _ in chunked] == list(range(12))
  assert chunked == whole


def test_jsonl_variant_matches_array(data_dir, tmp_path):
  path = _write_lines(tmp_path / "entropy_results.jsonl", _load_raw(data_dir))
  from_lines = traces.read_traces(path, labels=None)
  from_array = traces.read_traces(data_dir / PARITY_FILE, labels=None)

  assert len(from_lines) == len(from_array)
  for a, b in zip(from_lines, from_array):
    assert a.key == b.key
    np.testing.assert_array_equal(a.entropy, b.entropy)
    np.testing.assert_array_equal(a.missing, b.missing)


# ---------------------------------------------------------------------------------------------
# Identity fallbacks and value rules.


def test_problem_id_from_id_suffix(tmp_path):
  record = _record(record_id="q7_traj_3")
  del record["original_id"], record["trajectory_index"]
  [trajectory] = traces.read_traces(_write_array(tmp_path / "t.json", [record]), labels=None)
  assert trajectory.problem_id == "q7"
  assert trajectory.trajectory_index == 3


def test_integer_ids_become_strings(tmp_path):
  records = [_record(record_id=12, original_id=12, index=None)]
  [trajectory] = traces.read_traces(_write_array(tmp_path / "t.json", records), labels=None)
  assert trajectory.problem_id == "12"
  assert trajectory.record_id == "12"
  assert trajectory.trajectory_index == 0


def test_index_falls_back_to_order(tmp_path):
  # Bare ids carry no index, so the order within each problem gives it.
  records = [
      _record(record_id="a", original_id="a", index=None),
      _record(record_id="b", original_id="b", index=None),
      _record(record_id="a", original_id="a", index=None),
  ]
  result = traces.read_traces(_write_array(tmp_path / "t.json", records), labels=None)
  assert [t.key for t in result] == [("a", 0), ("b", 0), ("a", 1)]


def test_nan_literal_is_not_missing(tmp_path):
  path = tmp_path / "t.json"
  path.write_text(
      '[{"original_id": "p", "trajectory_index": 0, "entropy_sequence": '
      '[{"entropy": NaN}, {"entropy": null}, {"entropy": 1}]}]')
  [trajectory] = traces.read_traces(path, labels=None)
  assert np.isnan(trajectory.entropy[0])
  assert np.isnan(trajectory.entropy[1])
  assert trajectory.entropy[2] == 1.0
  np.testing.assert_array_equal(trajectory.missing, [False, True, False])
  assert trajectory.topk_logprobs is None


def test_solution_list_collapsed(tmp_path):
  records = [_record(solution=["42"]), _record(record_id="p_traj_1", index=1, solution=[1, 2])]
  result = traces.read_traces(_write_array(tmp_path / "t.json", records), labels=None)
  assert result[0].ground_truth == "42"
  assert result[1].ground_truth == "1,2"


def test_short_top_k_rows_padded(tmp_path):
  record = _record(entropies=())
  record["entropy_sequence"] = [_entry(0.3, probs=(0.6, 0.4)), _entry(0.2, probs=(0.5, 0.3, 0.2))]
  [trajectory] = traces.read_traces(_write_array(tmp_path / "t.json", [record]), labels=None)
  np.testing.assert_array_equal(trajectory.topk_logprobs[0], [np.log(0.6), np.log(0.4), -np.inf])
  np.testing.assert_array_equal(trajectory.topk_logprobs[1], np.log([0.5, 0.3, 0.2]))


def test_agentic_reward_sets_label(tmp_path):
  records = [
      _record(record_id="t1", original_id="t1", index=None, reward=1.0),
      _record(record_id="t2", original_id="t2", index=None, reward=0.0),
      _record(record_id="t3", original_id="t3", index=None, reward=None),
  ]
  path = _write_lines(tmp_path / "entropy_results.jsonl", records)
  result = traces.read_traces(path, labels=None)
  assert [t.reward for t in result] == [1.0, 0.0, None]
  assert [t.label for t in result] == [True, False, None]


# ---------------------------------------------------------------------------------------------
# Malformed input: every error names the file, the record and the field.


def _entropy_string(records):
  records[1]["entropy_sequence"][1]["entropy"] = "0.5"
  return "entropy_sequence[1].entropy", "str '0.5'"


def _entropy_key_missing(records):
  del records[1]["entropy_sequence"][0]["entropy"]
  return "entropy_sequence[0].entropy", "missing"


def _sequence_not_list(records):
  records[1]["entropy_sequence"] = {"entropy": 0.1}
  return "field entropy_sequence:", "expected a list"


def _sequence_absent(records):
  del records[1]["entropy_sequence"]
  return "field entropy_sequence:", "missing"


def _entry_not_object(records):
  records[1]["entropy_sequence"][1] = 0.5
  return "entropy_sequence[1]", "float 0.5"


def _entropy_infinite(records):
  records[1]["entropy_sequence"][0]["entropy"] = math.inf
  return "entropy_sequence[0].entropy", "inf"


def _entropy_bool(records):
  records[1]["entropy_sequence"][0]["entropy"] = True
  return "entropy_sequence[0].entropy", "bool True"


def _probability_string(records):
  records[1]["entropy_sequence"][1]["top_k_probs"] = [0.5, "0.5"]
  return "entropy_sequence[1].top_k_probs", "str '0.5'"


def _probability_negative(records):
  records[1]["entropy_sequence"][1]["top_k_probs"] = [0.5, -0.5]
  return "entropy_sequence[1].top_k_probs", "-0.5"


def _index_string(records):
  records[1]["trajectory_index"] = "1"
  return "field trajectory_index", "str '1'"


def _original_id_float(records):
  records[1]["original_id"] = 1.5
  return "field original_id", "float 1.5"


def _token_ids_length(records):
  records[1]["token_ids"] = [1, 2, 3]
  return "field token_ids", "has 3 entries but entropy_sequence has 2"


def _token_id_string(records):
  records[1]["token_ids"] = [1, "2"]
  return "token_ids[1]", "str '2'"


def _reward_string(records):
  records[1]["reward"] = "1"
  return "field reward", "str '1'"


def _no_identity(records):
  del records[1]["original_id"], records[1]["id"]
  return "field original_id", "missing"


def _duplicate_key(records):
  records[1]["trajectory_index"] = 0
  return "field trajectory_index", "appears twice"


MALFORMED_RECORDS = [
    _entropy_string, _entropy_key_missing, _sequence_not_list, _sequence_absent,
    _entry_not_object, _entropy_infinite, _entropy_bool, _probability_string,
    _probability_negative, _index_string, _original_id_float, _token_ids_length,
    _token_id_string, _reward_string, _no_identity, _duplicate_key,
]


@pytest.mark.parametrize("variant", ["json", "jsonl"])
@pytest.mark.parametrize("corrupt", MALFORMED_RECORDS, ids=lambda f: f.__name__.strip("_"))
def test_malformed_record_names_location(tmp_path, corrupt, variant):
  records = [_record(), _record(record_id="p_traj_1", index=1, token_ids=[7, 8])]
  field, detail = corrupt(records)
  if variant == "json":
    path = _write_array(tmp_path / "entropy_results.json", records)
  else:
    path = _write_lines(tmp_path / "entropy_results.jsonl", records)

  with pytest.raises(traces.TraceFormatError) as info:
    traces.read_traces(path, labels=None)
  message = str(info.value)
  assert str(path) in message
  assert "record index 1" in message
  if corrupt is not _no_identity:
    assert "'p_traj_1'" in message
  assert field in message
  assert detail in message
  assert info.value.path == str(path)
  assert info.value.record_index == 1


def test_truncated_array_gives_offset(tmp_path):
  text = json.dumps([_record(), _record(record_id="p_traj_1", index=1)])
  path = tmp_path / "entropy_results.json"
  path.write_text(text[:len(text) - 30])

  with pytest.raises(traces.TraceFormatError) as info:
    traces.read_traces(path, labels=None)
  assert str(path) in str(info.value)
  assert "byte offset" in str(info.value)
  assert "truncated" in str(info.value)
  assert info.value.record_index == 1


def test_truncated_after_record_gives_offset(tmp_path):
  text = json.dumps([_record()])
  path = tmp_path / "entropy_results.json"
  path.write_text(text[:-1])  # Only the closing bracket is lost.

  with pytest.raises(traces.TraceFormatError) as info:
    list(reference.iter_reference_json(path))
  assert "after 1 complete records" in str(info.value)
  assert info.value.byte_offset == len(text) - 1


def test_syntax_error_offset_counts_bytes(tmp_path):
  # Two-byte characters before the error: the offset must count bytes, not characters.
  good = json.dumps(_record(generated_text="é" * 50), ensure_ascii=False)
  text = "[" + good + ", {\"original_id\": \"p\", \"entropy_sequence\": [}]"
  path = tmp_path / "entropy_results.json"
  path.write_bytes(text.encode("utf-8"))
  expected_offset = text.encode("utf-8").index(b"}]", len(good.encode("utf-8")))

  with pytest.raises(traces.TraceFormatError) as info:
    list(_json_stream.iter_json_array(path, chunk_chars=16))
  assert info.value.byte_offset == expected_offset
  assert f"byte offset {expected_offset}" in str(info.value)
  assert info.value.record_index == 1


@pytest.mark.parametrize("text, detail", [
    ("", "empty"),
    ('{"a": 1}', "expected a JSON array"),
    ("[1, 2]", "expected a JSON object"),
    ("[{\"a\": 1} {\"b\": 2}]", "expected ',' or ']'"),
    ("[{\"a\": 1}] x", "after the closing ']'"),
])
def test_malformed_array_rejected(tmp_path, text, detail):
  path = tmp_path / "t.json"
  path.write_text(text)
  with pytest.raises(traces.TraceFormatError) as info:
    list(_json_stream.iter_json_array(path))
  assert detail in str(info.value)
  assert str(path) in str(info.value)


def test_jsonl_torn_line_gives_offset(tmp_path):
  first = json.dumps(_record()) + "\n"
  path = tmp_path / "entropy_results.jsonl"
  path.write_text(first + json.dumps(_record(record_id="p_traj_1", index=1))[:40])

  with pytest.raises(traces.TraceFormatError) as info:
    traces.read_traces(path, format="reference", labels=None)
  assert info.value.byte_offset == len(first.encode())
  assert "line 2" in str(info.value)
  assert "truncated" in str(info.value)


def test_empty_array_reads_nothing(tmp_path):
  path = tmp_path / "t.json"
  path.write_text(" [ ] \n")
  assert list(reference.iter_reference_json(path)) == []


def test_byte_order_mark_accepted(tmp_path):
  path = tmp_path / "t.json"
  path.write_bytes(b"\xef\xbb\xbf" + json.dumps([_record()]).encode())
  [trajectory] = traces.read_traces(path, labels=None)
  assert trajectory.num_tokens == 2


# ---------------------------------------------------------------------------------------------
# Memory use on a large file.


def _write_large_reference(path: pathlib.Path, num_records: int, length: int) -> None:
  rng = np.random.default_rng(0)
  with open(path, "w", encoding="utf-8") as file:
    file.write("[")
    for index in range(num_records):
      probs = rng.dirichlet(np.full(10, 0.3), size=length)
      probs = -np.sort(-probs, axis=1)
      entropy = -(probs * np.log(np.maximum(probs, 1e-300))).sum(axis=1)
      token_ids = rng.integers(0, 50_000, size=length)
      sequence = [
          {"token": f"tok{token_id}", "token_id": int(token_id), "position": position,
           "entropy": float(entropy[position]),
           "top_k_token_ids": [int(token_id)] * 10,
           "top_k_probs": probs[position].tolist(), "percentile": 0.5, "color": "#ffffff"}
          for position, token_id in enumerate(token_ids)
      ]
      record = {"id": f"p{index // 4}_traj_{index % 4}", "original_id": f"p{index // 4}",
                "trajectory_index": index % 4, "token_ids": token_ids.tolist(),
                "entropy_sequence": sequence}
      if index:
        file.write(",\n")
      file.write(json.dumps(record))
    file.write("]")


def test_large_file_memory_bounded(tmp_path):
  path = tmp_path / "entropy_results.json"
  num_records, length = 32, 1500
  _write_large_reference(path, num_records, length)
  file_bytes = path.stat().st_size
  assert file_bytes > 20e6

  tracemalloc.start()
  try:
    count = 0
    for trajectory in reference.iter_reference_json(path):
      assert trajectory.num_tokens == length
      count += 1
    _, peak = tracemalloc.get_traced_memory()
  finally:
    tracemalloc.stop()

  assert count == num_records
  # Parsing one record at a time needs the text window, one record's Python objects and its
  # arrays: about 9 MB for this 22 MB file with CPython 3.11, while `json.load` of the whole
  # file peaks near 90 MB.
  assert peak < 0.6 * file_bytes, f"peak {peak / 1e6:.1f} MB for a {file_bytes / 1e6:.1f} MB file"
