"""Choice of delta: folds, cross-validation and the label-tuned oracle."""

import math

import hypothesis
from hypothesis import strategies as st
import numpy as np
import pytest

from ec_jax.scoring import selection

GRID = selection.DELTA_GRID


def _oracle_delta_pick(values, present, delta):
  """The delta rule for one problem, from its definition."""
  members = [j for j in range(len(values)) if present[j] and math.isfinite(values[j])]
  if not members:
    return -1
  total = 0.0
  for j in members:
    total += values[j]
  mean = total / len(members)
  kept = members if len(members) == 1 else [j for j in members if mean - values[j] <= delta]
  return min(kept, key=lambda j: (values[j], j)) if kept else -1


def _oracle_cross_validation(centroids, present, labels, labelled, folds, seed):
  """Per-problem selections of K-fold cross-validation, written out loop by loop."""
  problems = len(centroids)
  picks = {delta: [_oracle_delta_pick(list(centroids[p]), list(present[p]), delta)
                   for p in range(problems)] for delta in GRID}

  def hit(delta, p):
    j = picks[delta][p]
    return j >= 0 and bool(labels[p][j])

  def best_delta(training):
    best, best_hits = None, -1
    for delta in GRID:
      hits = sum(hit(delta, p) for p in training)
      if hits > best_hits:
        best, best_hits = delta, hits
    return best

  members = [p for p in range(problems) if labelled[p]]
  fold_count = min(folds, len(members))
  assignment = selection.fold_assignment(len(members), fold_count, seed)
  fold_of = {p: int(assignment[i]) for i, p in enumerate(members)}
  everything = best_delta(members)
  selections = [picks[everything][p] for p in range(problems)]
  for fold in range(fold_count):
    training = [p for p in members if fold_of[p] != fold]
    delta = best_delta(training)
    for p in members:
      if fold_of[p] == fold:
        selections[p] = picks[delta][p]
  return selections


@st.composite
def labelled_tables(draw):
  problems = draw(st.integers(1, 7))
  width = draw(st.integers(1, 5))
  size = problems * width
  cell = st.one_of(st.sampled_from([0.1, 0.2, 0.3, 0.35, 0.5, math.nan]), st.floats(0.0, 1.0))
  centroids = np.array(draw(st.lists(cell, min_size=size, max_size=size))).reshape(
      problems, width)
  present = np.array(draw(st.lists(st.sampled_from([True, True, False]), min_size=size,
                                   max_size=size))).reshape(problems, width)
  labels = np.array(draw(st.lists(st.booleans(), min_size=size, max_size=size))).reshape(
      problems, width)
  labelled = np.array(draw(st.lists(st.sampled_from([True, True, True, False]),
                                    min_size=problems, max_size=problems)))
  return centroids, present, labels, labelled


@hypothesis.settings(deadline=None, max_examples=40)
@hypothesis.given(labelled_tables(), st.sampled_from([2, 3, 5]), st.integers(0, 3))
def test_cross_validation_matches_oracle(table, folds, seed):
  centroids, present, labels, labelled = table
  choice = selection.cross_validated_delta(centroids, present, labels, labelled, folds=folds,
                                           seed=seed)
  if labelled.sum() < 2:
    assert choice.unavailable is not None
    return
  assert choice.unavailable is None
  expected = _oracle_cross_validation(centroids, present, labels, labelled, folds, seed)
  assert choice.selections.tolist() == expected
  assert len(choice.deltas) == min(folds, int(labelled.sum()))
  assert all(delta in GRID for delta in choice.deltas)


@hypothesis.settings(deadline=None, max_examples=40)
@hypothesis.given(labelled_tables())
def test_oracle_delta_is_best_on_labels(table):
  centroids, present, labels, labelled = table
  choice = selection.oracle_delta(centroids, present, labels, labelled)
  (chosen,) = choice.deltas

  def correct(selections):
    return sum(1 for p in np.flatnonzero(labelled)
               if selections[p] >= 0 and labels[p, selections[p]])

  best = correct(choice.selections)
  for delta in GRID:
    other = correct(selection.select_lowest_centroid_delta_host(centroids, present, delta))
    assert other <= best, delta
    if delta < chosen:
      assert other < best, delta


def test_oracle_delta_takes_smallest_on_ties():
  # One trajectory per problem: every delta selects it, so all deltas tie.
  centroids = np.array([[0.4], [0.2]])
  present = np.ones((2, 1), dtype=bool)
  labels = np.array([[True], [False]])
  choice = selection.oracle_delta(centroids, present, labels, np.ones(2, dtype=bool))
  assert choice.deltas == (0.01,)


def test_fold_assignment_is_deterministic_and_balanced():
  first = selection.fold_assignment(23, 5, seed=0)
  assert first.tolist() == selection.fold_assignment(23, 5, seed=0).tolist()
  counts = np.bincount(first, minlength=5)
  assert counts.max() - counts.min() <= 1
  assert set(first.tolist()) == set(range(5))
  assert first.tolist() != selection.fold_assignment(23, 5, seed=1).tolist()


def test_fold_assignment_rejects_zero_folds():
  with pytest.raises(ValueError, match="cv_folds"):
    selection.fold_assignment(3, 0, seed=0)


def test_cross_validation_leave_one_out():
  centroids = np.array([[0.1, 0.5, 0.6], [0.2, 0.25, 0.9], [0.3, 0.31, 0.32]])
  present = np.ones((3, 3), dtype=bool)
  labels = np.array([[False, True, False], [True, False, False], [True, True, True]])
  choice = selection.cross_validated_delta(centroids, present, labels, np.ones(3, dtype=bool),
                                           folds=5)
  assert sorted(choice.folds.tolist()) == [0, 1, 2]
  assert len(choice.deltas) == 3


def test_cross_validation_unavailable_with_one_problem():
  choice = selection.cross_validated_delta(np.array([[0.1, 0.2]]), np.ones((1, 2), dtype=bool),
                                           np.array([[True, False]]), np.array([True]))
  assert choice.unavailable is not None
  assert "at least 2 labelled problems" in choice.unavailable


def test_cross_validation_is_reproducible():
  rng = np.random.default_rng(4)
  centroids = rng.random((30, 6))
  present = np.ones((30, 6), dtype=bool)
  labels = rng.random((30, 6)) < 0.5
  labelled = np.ones(30, dtype=bool)
  first = selection.cross_validated_delta(centroids, present, labels, labelled, seed=3)
  second = selection.cross_validated_delta(centroids, present, labels, labelled, seed=3)
  assert first.selections.tolist() == second.selections.tolist()
  assert first.deltas == second.deltas
  assert first.folds.tolist() == second.folds.tolist()


def test_delta_grid_rejects_negative_values():
  with pytest.raises(ValueError, match="delta"):
    selection.oracle_delta(np.zeros((1, 1)), np.ones((1, 1), dtype=bool),
                           np.ones((1, 1), dtype=bool), np.ones(1, dtype=bool), grid=[-0.1])
