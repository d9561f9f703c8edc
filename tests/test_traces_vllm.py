"""Tests of the vLLM-style JSONL reader on files built from log-softmax of random logits."""

import json
import pathlib

import numpy as np
import pytest

from ec_jax import traces
from ec_jax.traces import vllm

VOCAB = 64
K = 10


def _log_softmax(logits: np.ndarray) -> np.ndarray:
  shifted = logits - logits.max(axis=-1, keepdims=True)
  return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def _make_trajectory(rng, length, null_positions=(), outside_positions=(), width=K):
  """Log-probabilities [length, VOCAB], sampled ids, and vLLM-style entries.

  Each entry contains the `width` largest log-probabilities, plus the sampled token when it is not
  among them (k + 1 entries). At `outside_positions` the sampled token is forced outside the
  top `width`.
  """
  logprobs = _log_softmax(rng.normal(scale=2.0, size=(length, VOCAB)))
  token_ids = np.array([rng.choice(VOCAB, p=np.exp(row)) for row in logprobs])
  entries = []
  for position in range(length):
    order = np.argsort(-logprobs[position])
    if position in outside_positions:
      token_ids[position] = order[-1]
    if position in null_positions:
      entries.append(None)
      continue
    ids = list(order[:width])
    if token_ids[position] not in ids:
      ids.append(token_ids[position])
    rng.shuffle(ids)  # Key order in the file carries no meaning.
    entries.append({str(i): float(logprobs[position, i]) for i in ids})
  return logprobs, token_ids, entries


def _write_records(path: pathlib.Path, records) -> pathlib.Path:
  path.write_text("".join(json.dumps(record) + "\n" for record in records))
  return path


def test_values_and_nulls(tmp_path):
  rng = np.random.default_rng(1)
  expected = []
  records = []
  for problem in range(2):
    for index in range(3):
      logprobs, token_ids, entries = _make_trajectory(
          rng, 20, null_positions={4, 11} if index == 1 else (), outside_positions={2, 7})
      expected.append((logprobs, token_ids))
      records.append({"problem_id": f"q{problem}", "trajectory_index": index,
                      "token_ids": token_ids.tolist(), "logprobs": entries, "text": "x"})
  path = _write_records(tmp_path / "traces.jsonl", records)

  result = traces.read_traces(path, k=K, labels=None)
  assert len(result) == 6
  for trajectory, (logprobs, token_ids), record in zip(result, expected, records):
    assert trajectory.problem_id == record["problem_id"]
    assert trajectory.trajectory_index == record["trajectory_index"]
    assert trajectory.entropy is None
    assert trajectory.num_tokens == 20
    assert trajectory.text == "x"
    np.testing.assert_array_equal(trajectory.token_ids, token_ids)
    nulls = [entry is None for entry in record["logprobs"]]
    np.testing.assert_array_equal(trajectory.missing, nulls)
    top = -np.sort(-logprobs, axis=1)[:, :K]
    np.testing.assert_array_equal(trajectory.topk_logprobs[~trajectory.missing],
                                  top[~trajectory.missing])
    assert np.isnan(trajectory.topk_logprobs[trajectory.missing]).all()
    sampled = logprobs[np.arange(20), token_ids]
    np.testing.assert_array_equal(trajectory.per_token["logprob"][~trajectory.missing],
                                  sampled[~trajectory.missing])


def test_k_plus_one_entries_present(tmp_path):
  rng = np.random.default_rng(2)
  logprobs, token_ids, entries = _make_trajectory(rng, 8, outside_positions={0, 3})
  assert len(entries[0]) == K + 1
  assert len(entries[3]) == K + 1
  path = _write_records(tmp_path / "t.jsonl", [
      {"problem_id": 5, "trajectory_index": 0, "token_ids": token_ids.tolist(),
       "logprobs": entries}])

  [trajectory] = traces.read_traces(path, labels=None)
  assert trajectory.problem_id == "5"
  assert trajectory.topk_logprobs.shape == (8, K)
  np.testing.assert_array_equal(trajectory.topk_logprobs, -np.sort(-logprobs, axis=1)[:, :K])
  # The sampled token outside the top k still gives its log-probability.
  assert trajectory.per_token["logprob"][0] == logprobs[0, token_ids[0]]


def test_smaller_k_keeps_largest(tmp_path):
  rng = np.random.default_rng(3)
  logprobs, _, entries = _make_trajectory(rng, 6, width=20)
  path = _write_records(tmp_path / "t.jsonl", [{"problem_id": "p", "logprobs": entries}])

  [trajectory] = list(vllm.iter_vllm_jsonl(path, k=5))
  np.testing.assert_array_equal(trajectory.topk_logprobs, -np.sort(-logprobs, axis=1)[:, :5])
  assert trajectory.token_ids is None
  assert trajectory.trajectory_index == 0


def test_logprob_objects_accepted(tmp_path):
  rng = np.random.default_rng(4)
  logprobs, _, entries = _make_trajectory(rng, 5)
  nested = [{token: {"logprob": value, "rank": 1, "decoded_token": "a"}
             for token, value in entry.items()} for entry in entries]
  path = _write_records(tmp_path / "t.jsonl", [{"problem_id": "p", "logprobs": nested}])

  [trajectory] = traces.read_traces(path, labels=None)
  np.testing.assert_array_equal(trajectory.topk_logprobs, -np.sort(-logprobs, axis=1)[:, :K])


def test_index_fallback_and_labels(tmp_path):
  rng = np.random.default_rng(5)
  records = []
  for problem_id, extra in [("a", {"correct": True}), ("a", {"reward": 0.0}), ("b", {})]:
    _, _, entries = _make_trajectory(rng, 3)
    records.append({"problem_id": problem_id, "logprobs": entries, **extra})
  path = _write_records(tmp_path / "t.jsonl", records)

  result = traces.read_traces(path, labels=None)
  assert [t.key for t in result] == [("a", 0), ("a", 1), ("b", 0)]
  assert [t.label for t in result] == [True, False, None]


def test_empty_trajectory(tmp_path):
  path = _write_records(tmp_path / "t.jsonl", [{"problem_id": "p", "logprobs": []}])
  [trajectory] = traces.read_traces(path, labels=None)
  assert trajectory.num_tokens == 0
  assert trajectory.topk_logprobs.shape == (0, K)


def _fewer_than_k(record):
  entry = record["logprobs"][2]
  for token in list(entry)[:3]:
    del entry[token]
  return "logprobs[2]", "entropy_k = 10 needs at least 10"


def _infinite_entry(record):
  entry = record["logprobs"][1]
  for token in list(entry)[:2]:
    entry[token] = float("-inf")
  return "logprobs[1]", "finite log-probabilities"


def _string_value(record):
  entry = record["logprobs"][3]
  entry[next(iter(entry))] = "-0.5"
  return "logprobs[3]", "str '-0.5'"


def _positive_value(record):
  entry = record["logprobs"][0]
  entry[next(iter(entry))] = 3.5
  return "logprobs[0]", "3.5 is positive"


def _entry_list(record):
  record["logprobs"][2] = [-0.1, -0.2]
  return "logprobs[2]", "list"


def _not_list(record):
  record["logprobs"] = {"0": -0.1}
  return "field logprobs", "expected a list"


def _token_ids_length(record):
  record["token_ids"] = record["token_ids"][:-1]
  return "field token_ids", "but logprobs has 4"


def _index_negative(record):
  record["trajectory_index"] = -1
  return "field trajectory_index", "-1"


MALFORMED = [_fewer_than_k, _infinite_entry, _string_value, _positive_value, _entry_list,
             _not_list, _token_ids_length, _index_negative]


@pytest.mark.parametrize("corrupt", MALFORMED, ids=lambda f: f.__name__.strip("_"))
def test_malformed_record_names_location(tmp_path, corrupt):
  rng = np.random.default_rng(6)
  records = []
  for index in range(2):
    _, token_ids, entries = _make_trajectory(rng, 4)
    records.append({"problem_id": "p", "trajectory_index": index,
                    "token_ids": token_ids.tolist(), "logprobs": entries})
  field, detail = corrupt(records[1])
  path = _write_records(tmp_path / "t.jsonl", records)

  with pytest.raises(traces.TraceFormatError) as info:
    traces.read_traces(path, format="vllm", labels=None)
  message = str(info.value)
  assert str(path) in message
  assert "record index 1" in message
  assert field in message
  assert detail in message


def test_short_position_is_reported(tmp_path):
  rng = np.random.default_rng(7)
  _, _, entries = _make_trajectory(rng, 6, width=4)
  path = _write_records(tmp_path / "t.jsonl", [{"problem_id": "p", "logprobs": entries}])
  with pytest.raises(traces.TraceFormatError) as info:
    list(vllm.iter_vllm_jsonl(path, k=K))
  assert info.value.position == 0
  assert "position 0" in str(info.value)


def test_missing_problem_id_rejected(tmp_path):
  path = _write_records(tmp_path / "t.jsonl", [{"logprobs": []}])
  with pytest.raises(traces.TraceFormatError, match="problem_id"):
    list(vllm.iter_vllm_jsonl(path))


@pytest.mark.parametrize("k", [0, -1, 2.5, True])
def test_invalid_k_rejected(tmp_path, k):
  path = _write_records(tmp_path / "t.jsonl", [{"problem_id": "p", "logprobs": []}])
  with pytest.raises(ValueError, match="entropy_k"):
    list(vllm.iter_vllm_jsonl(path, k=k))
