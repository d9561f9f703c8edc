"""Tests of packing trajectories into padded arrays and grouping rows by problem."""

import json

import numpy as np
import pytest

from ec_jax import traces
from ec_jax.traces import batch
from ec_jax.traces.trajectory import Trajectory

PARITY_FILE = "reference_traces_small.json"


def _trajectory(problem_id, index, entropy, missing=None, topk=None, label=None):
  entropy = None if entropy is None else np.asarray(entropy, dtype=np.float64)
  length = len(entropy) if entropy is not None else len(topk)
  missing = np.zeros(length, bool) if missing is None else np.asarray(missing)
  return Trajectory(problem_id, index, entropy, missing,
                    topk_logprobs=None if topk is None else np.asarray(topk, dtype=np.float64),
                    label=label)


def test_pack_parity_file(data_dir):
  trajectories = traces.read_traces(data_dir / PARITY_FILE, labels=None)
  packed = batch.pack(trajectories)

  assert packed.num_rows == 12
  assert packed.time == 640  # The maximum length is 580 tokens.
  assert packed.entropies.shape == (12, 640)
  assert packed.entropies.dtype == np.float64
  np.testing.assert_array_equal(packed.lengths, [t.num_tokens for t in trajectories])
  np.testing.assert_array_equal(packed.num_missing, [1 if i % 4 == 2 else 0 for i in range(12)])
  np.testing.assert_array_equal(packed.num_nan, np.zeros(12))
  np.testing.assert_array_equal(packed.valid.sum(axis=1), packed.lengths - packed.num_missing)
  assert not np.isnan(packed.entropies).any()
  assert packed.problem_ids == [t.problem_id for t in trajectories]
  np.testing.assert_array_equal(packed.trajectory_index, [0, 1, 2, 3] * 3)

  for row, trajectory in enumerate(trajectories):
    length = trajectory.num_tokens
    valid = ~np.isnan(trajectory.entropy)
    np.testing.assert_array_equal(packed.valid[row, :length], valid)
    assert not packed.valid[row, length:].any()
    np.testing.assert_array_equal(packed.entropies[row, :length][valid], trajectory.entropy[valid])
    assert (packed.entropies[row, :length][~valid] == 0.0).all()
    assert (packed.entropies[row, length:] == 0.0).all()

  assert packed.topk_logprobs.shape == (12, 640, 10)
  np.testing.assert_array_equal(packed.topk_valid, packed.valid)
  assert (packed.topk_logprobs[~packed.topk_valid] == 0.0).all()
  np.testing.assert_array_equal(packed.topk_logprobs[0, :253], trajectories[0].topk_logprobs)


def test_nan_counted_apart_from_missing():
  trajectory = _trajectory("p", 0, [0.1, np.nan, np.nan, 0.4], missing=[False, True, False, False])
  packed = batch.pack([trajectory], pad_multiple=4)
  assert packed.num_nan.tolist() == [1]
  assert packed.num_missing.tolist() == [1]
  assert packed.valid.tolist() == [[True, False, False, True]]
  assert packed.entropies.tolist() == [[0.1, 0.0, 0.0, 0.4]]
  assert packed.topk_logprobs is None


@pytest.mark.parametrize("lengths, pad_multiple, expected", [
    ([5, 3], 1, 5), ([5, 3], 4, 8), ([8], 4, 8), ([0, 0], 128, 128), ([129], 128, 256)])
def test_time_padding(lengths, pad_multiple, expected):
  trajectories = [_trajectory("p", i, np.ones(n)) for i, n in enumerate(lengths)]
  packed = batch.pack(trajectories, pad_multiple=pad_multiple)
  assert packed.time == expected


@pytest.mark.parametrize("pad_multiple", [0, -128, 1.5])
def test_invalid_pad_multiple(pad_multiple):
  with pytest.raises(ValueError, match="pad_multiple"):
    batch.pack([_trajectory("p", 0, [0.1])], pad_multiple=pad_multiple)


def test_pack_log_probability_traces():
  top = np.log([[0.5, 0.3, 0.2], [0.6, 0.4, 1e-9]])
  trajectories = [
      _trajectory("p", 0, None, missing=[False, True], topk=[top[0], [np.nan] * 3]),
      _trajectory("p", 1, None, topk=top, label=True),
  ]
  packed = batch.pack(trajectories, pad_multiple=4)
  assert packed.entropies is None
  assert packed.valid.tolist() == [[True, False, False, False], [True, True, False, False]]
  assert packed.num_missing.tolist() == [1, 0]
  np.testing.assert_array_equal(packed.topk_logprobs[1, :2], top)
  assert (packed.topk_logprobs[0, 1:] == 0.0).all()
  assert packed.labels.tolist() == [False, True]
  assert packed.labelled.tolist() == [False, True]


def test_topk_widths_padded():
  trajectories = [
      _trajectory("p", 0, [0.1], topk=[[-0.1, -2.0]]),
      _trajectory("p", 1, [0.2], topk=[[-0.2, -1.0, -3.0]]),
  ]
  packed = batch.pack(trajectories, pad_multiple=1)
  np.testing.assert_array_equal(packed.topk_logprobs[0, 0], [-0.1, -2.0, -np.inf])
  np.testing.assert_array_equal(packed.topk_logprobs[1, 0], [-0.2, -1.0, -3.0])


def test_topk_skipped_when_one_lacks_it():
  trajectories = [_trajectory("p", 0, [0.1], topk=[[-0.1]]), _trajectory("p", 1, [0.2])]
  assert batch.pack(trajectories).topk_logprobs is None
  assert batch.pack(trajectories[:1], include_topk=False).topk_logprobs is None


def test_mixed_formats_rejected():
  trajectories = [_trajectory("p", 0, [0.1]), _trajectory("p", 1, None, topk=[[-0.1]])]
  with pytest.raises(ValueError, match="one trace format at a time"):
    batch.pack(trajectories)


def test_empty_input_rejected():
  with pytest.raises(ValueError, match="at least one trajectory"):
    batch.pack([])


def test_group_uneven_problems():
  problem_ids = ["b", "a", "b", "a", "c", "b"]
  trajectory_index = [2, 1, 0, 0, 5, 1]
  groups = batch.group_by_problem(problem_ids, trajectory_index)
  assert groups.problem_ids == ["b", "a", "c"]
  assert groups.rows.tolist() == [[2, 5, 0], [3, 1, -1], [4, -1, -1]]
  assert groups.mask.tolist() == [[True, True, True], [True, True, False], [True, False, False]]
  assert groups.rows.dtype == np.int32


def test_group_packed_parity(data_dir):
  # Reverse the file order: grouping must restore trajectory order within each problem.
  trajectories = traces.read_traces(data_dir / PARITY_FILE, labels=None)[::-1]
  groups = batch.group_packed(batch.pack(trajectories))
  assert groups.problem_ids == ["sample_00002", "sample_00001", "sample_00000"]
  assert groups.rows.tolist() == [[3, 2, 1, 0], [7, 6, 5, 4], [11, 10, 9, 8]]
  assert groups.mask.all()


def test_group_duplicates_rejected():
  with pytest.raises(ValueError, match="trajectory_index 1 in more than one row"):
    batch.group_by_problem(["a", "a"], [1, 1])
  with pytest.raises(ValueError, match="problem_ids has 1 entries"):
    batch.group_by_problem(["a"], [0, 1])


def test_trajectory_shape_checks():
  with pytest.raises(ValueError, match="entropy has shape"):
    Trajectory("p", 0, np.zeros(3), np.zeros(2, bool))
  with pytest.raises(ValueError, match="missing must be"):
    Trajectory("p", 0, np.zeros(2), np.zeros(2))
  with pytest.raises(TypeError, match="problem_id"):
    Trajectory(3, 0, np.zeros(2), np.zeros(2, bool))


def test_vllm_file_packs(tmp_path):
  rng = np.random.default_rng(0)
  logits = rng.normal(size=(3, 20))
  logprobs = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
  entries = [{str(i): float(row[i]) for i in np.argsort(-row)[:10]} for row in logprobs]
  entries[1] = None
  path = tmp_path / "t.jsonl"
  path.write_text(json.dumps({"problem_id": "p", "logprobs": entries}) + "\n")

  packed = batch.pack(traces.read_traces(path, labels=None), pad_multiple=8)
  assert packed.entropies is None
  assert packed.valid.tolist() == [[True, False, True] + [False] * 5]
  np.testing.assert_array_equal(packed.topk_logprobs[0, 2], -np.sort(-logprobs[2])[:10])
