"""Parity of the jitted scoring with the reference implementation's recorded values."""

import functools
import json
import math

import jax
import numpy as np
import pytest

from ec_jax.scoring import pipeline
from ec_jax.scoring import settings as settings_lib

METHODS = ("weighted_average_center", "weighted_average", "moment")


def load_vectors(data_dir):
  with open(data_dir / "phase_vectors.jsonl") as f:
    return [json.loads(line) for line in f]


def vector_arrays(vectors, time):
  """Stack the vectors as `[vectors, 1, time]` inputs with per-vector settings."""
  entropies = np.zeros((len(vectors), 1, time))
  valid = np.zeros((len(vectors), 1, time), bool)
  lengths = np.zeros((len(vectors), 1), np.int32)
  for i, vector in enumerate(vectors):
    for t, value in enumerate(vector["entropies"]):
      entropies[i, 0, t] = math.nan if value in (None, "NaN") else value
      valid[i, 0, t] = value is not None
    lengths[i, 0] = len(vector["entropies"])
  settings = [pipeline.settings_inputs([settings_lib.PhaseSetting(
      v["top_percent"], v["bottom_percent"], v["consecutive_low"])]) for v in vectors]
  stacked = jax.tree.map(lambda *xs: np.stack(xs), *settings)
  return entropies, valid, lengths, stacked


def score_vectors(vectors, dtype):
  time = max(len(v["entropies"]) for v in vectors)
  entropies, valid, lengths, settings = vector_arrays(vectors, time)
  score = functools.partial(pipeline.score_trajectories, spec=pipeline.ScoringSpec(max_phases=8))
  return jax.jit(jax.vmap(score))(entropies.astype(dtype), valid, lengths, settings)


def assert_close_or_none(got, expected, rtol, atol, label):
  if expected is None:
    assert math.isnan(got), f"{label}: expected no value, got {got}"
  else:
    assert abs(got - expected) <= rtol * abs(expected) + atol, f"{label}: {got} != {expected}"


def test_phase_vectors_x64_exact(data_dir):
  vectors = load_vectors(data_dir)
  with jax.enable_x64(True):
    scores = score_vectors(vectors, np.float64)
    for i, vector in enumerate(vectors):
      label = vector["id"]
      for key in ("high_threshold", "low_threshold"):
        got = float(getattr(scores, key)[i, 0, 0])
        if vector[key] is None:
          assert math.isnan(got), label
        else:
          assert got == vector[key], f"{label} {key}: {got!r} != {vector[key]!r}"
      count = int(scores.num_phases[i, 0, 0])
      assert np.asarray(scores.details.phases[i, 0, :count]).tolist() == vector["phases"], label
      for method in METHODS:
        assert_close_or_none(float(scores.centroids["length"][method][i, 0, 0]),
                             vector["centroids"][method], 1e-12, 0.0, f"{label} {method}")
      assert_close_or_none(float(scores.raw_entropy[i, 0]), vector["centroids"]["raw_entropy"],
                           1e-12, 0.0, f"{label} raw_entropy")


def test_phase_vectors_float32(data_dir):
  vectors = load_vectors(data_dir)
  scores = score_vectors(vectors, np.float32)
  assert scores.high_threshold.dtype == np.float32
  for i, vector in enumerate(vectors):
    label = vector["id"]
    count = int(scores.num_phases[i, 0, 0])
    assert np.asarray(scores.details.phases[i, 0, :count]).tolist() == vector["phases"], label
    for key in ("high_threshold", "low_threshold"):
      assert_close_or_none(float(getattr(scores, key)[i, 0, 0]), vector[key], 1e-5, 1e-7, label)
    for method in METHODS:
      assert_close_or_none(float(scores.centroids["length"][method][i, 0, 0]),
                           vector["centroids"][method], 1e-5, 1e-7, f"{label} {method}")


def load_reference_traces(data_dir):
  """Read the small reference file directly (the trace readers have their own tests)."""
  with open(data_dir / "reference_traces_small.json") as f:
    records = json.load(f)
  with open(data_dir / "reference_traces_small.expected.jsonl") as f:
    expected = [json.loads(line) for line in f]
  by_key = {(str(r["original_id"]), int(r["trajectory_index"])): r for r in records}
  sequences = []
  for row in expected:
    record = by_key[(row["problem_id"], row["trajectory_index"])]
    sequences.append([entry["entropy"] for entry in record["entropy_sequence"]])
  return sequences, expected


@pytest.mark.parametrize("x64", [True, False], ids=["x64", "float32"])
def test_reference_traces(data_dir, x64):
  sequences, expected = load_reference_traces(data_dir)
  time = max(len(s) for s in sequences)
  entropies = np.zeros((len(sequences), time))
  valid = np.zeros((len(sequences), time), bool)
  for i, sequence in enumerate(sequences):
    for t, value in enumerate(sequence):
      valid[i, t] = value is not None
      entropies[i, t] = math.nan if value is None else value
  lengths = np.asarray([len(s) for s in sequences], np.int32)
  settings = [settings_lib.PhaseSetting(1, 80, 2), settings_lib.PhaseSetting(5, 50, 3),
              settings_lib.PhaseSetting(3, 30, 5)]
  rtol, atol, dtype = (1e-12, 0.0, np.float64) if x64 else (1e-5, 1e-7, np.float32)
  with jax.enable_x64(x64):
    scores = pipeline.score_trajectories_jit(entropies.astype(dtype), valid, lengths,
                                             pipeline.settings_inputs(settings))
    for i, row in enumerate(expected):
      label = f"{row['problem_id']}/{row['trajectory_index']}"
      assert lengths[i] == row["num_tokens"], label
      count = int(scores.num_phases[i, 0])
      assert np.asarray(scores.details.phases[i, :count]).tolist() == row["phases"], label
      for method in METHODS:
        assert_close_or_none(float(scores.centroids["length"][method][i, 0]), row[method],
                             rtol, atol, f"{label} {method}")
      assert_close_or_none(float(scores.raw_entropy[i]), row["raw_entropy"], rtol, atol, label)
      for column, setting in ((1, settings[1]), (2, settings[2])):
        key = "weighted_average_center" + setting.suffix
        assert_close_or_none(float(scores.centroids["length"]["weighted_average_center"][i, column]),
                             row[key], rtol, atol, f"{label} {key}")
