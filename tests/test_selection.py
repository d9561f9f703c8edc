"""Selection rules (JAX and host), votes, the random pick and pass@k against Python oracles."""

import collections
import fractions
import itertools
import logging
import math

import hypothesis
from hypothesis import strategies as st
import jax
import numpy as np
import pytest

from ec_jax.scoring import selection

SHAPES = [(1, 1), (1, 5), (4, 1), (4, 6)]
TIE_PRONE_VALUES = [0.0, 0.1, 0.2, 0.25, 0.3, 1 / 3, 0.5, 0.6, math.nan, math.inf]
DELTAS = [0.0, 0.05, 0.1, *selection.DELTA_GRID]

_select_lowest_jit = jax.jit(selection.select_lowest)
_select_highest_jit = jax.jit(selection.select_highest)
_select_delta_jit = jax.jit(selection.select_lowest_centroid_delta)


# Oracles written from the method's rules, one problem at a time in plain Python.


def _candidates(values, present, fractions_row=None):
  """Indices of present trajectories with a finite value (and a rational when given)."""
  return [j for j in range(len(values))
          if present[j] and math.isfinite(values[j])
          and (fractions_row is None or fractions_row[j] is not None)]


def _order_key(values, fractions_row):
  if fractions_row is None:
    return lambda j: (values[j], j)
  return lambda j: (fractions_row[j], j)


def _oracle_lowest(values, present, fractions_row=None):
  members = _candidates(values, present, fractions_row)
  return min(members, key=_order_key(values, fractions_row)) if members else -1


def _oracle_highest(values, present):
  members = _candidates(values, present)
  return min(members, key=lambda j: (-values[j], j)) if members else -1


def _oracle_delta(values, present, delta, fractions_row=None):
  members = _candidates(values, present, fractions_row)
  if not members:
    return -1
  total = 0.0
  for j in members:
    total += values[j]
  mean = total / len(members)
  kept = members if len(members) == 1 else [j for j in members if mean - values[j] <= delta]
  return min(kept, key=_order_key(values, fractions_row)) if kept else -1


def _oracle_majority(answers, present):
  voters = [(j, a) for j, a in enumerate(answers) if present[j] and a is not None]
  if not voters:
    return -1
  counts = collections.Counter(a for _, a in voters)
  top = max(counts.values())
  return next(j for j, a in voters if counts[a] == top)


def _oracle_centroid_vote(answers, values, present, share, fractions_row=None):
  """`share` is (numerator, denominator) of the voting fraction."""
  members = sorted(_candidates(values, present, fractions_row),
                   key=_order_key(values, fractions_row))
  if not members:
    return -1
  size = max(1, len(members) * share[0] // share[1])
  voters = [(j, answers[j]) for j in members[:size] if answers[j] is not None]
  if not voters:
    return -1
  counts = collections.Counter(a for _, a in voters)
  top = max(counts.values())
  return next(j for j, a in voters if counts[a] == top)


# Strategies.


@st.composite
def float_tables(draw):
  """A `[problems, N]` float table with ties, NaN, inf and absent entries."""
  problems, width = draw(st.sampled_from(SHAPES))
  # XLA on CPU flushes subnormals to zero, so they are left out (see select_lowest).
  cell = st.one_of(st.sampled_from(TIE_PRONE_VALUES),
                   st.floats(-2.0, 2.0, allow_subnormal=False))
  values = draw(st.lists(cell, min_size=problems * width, max_size=problems * width))
  present = draw(st.lists(st.sampled_from([True, True, True, False]),
                          min_size=problems * width, max_size=problems * width))
  return (np.array(values, dtype=np.float64).reshape(problems, width),
          np.array(present).reshape(problems, width))


@st.composite
def rational_tables(draw):
  """Exact centroids num / den (den 0: no centroid) with their float32 roundings."""
  problems, width = draw(st.sampled_from(SHAPES))
  size = problems * width
  denominators = draw(st.lists(st.integers(0, 6), min_size=size, max_size=size))
  numerators = [draw(st.integers(0, max(d, 1) * 2)) for d in denominators]
  present = draw(st.lists(st.sampled_from([True, True, True, False]), min_size=size,
                          max_size=size))
  numerator = np.array(numerators, dtype=np.int64).reshape(problems, width)
  denominator = np.array(denominators, dtype=np.int64).reshape(problems, width)
  with np.errstate(divide="ignore", invalid="ignore"):
    centroids = np.where(denominator > 0,
                         numerator.astype(np.float32) / denominator.astype(np.float32), np.nan)
  return (centroids.astype(np.float32), np.array(present).reshape(problems, width), numerator,
          denominator)


def _fraction_rows(numerator, denominator):
  return [[fractions.Fraction(int(n), int(d)) if d > 0 else None for n, d in zip(nr, dr)]
          for nr, dr in zip(numerator, denominator)]


# JAX and host rules.


@hypothesis.settings(deadline=None, max_examples=60)
@hypothesis.given(float_tables())
def test_select_lowest_and_highest_match_oracle(table):
  values, present = table
  expected_low = [_oracle_lowest(list(v), list(p)) for v, p in zip(values, present)]
  expected_high = [_oracle_highest(list(v), list(p)) for v, p in zip(values, present)]
  with jax.enable_x64(True):
    assert np.asarray(_select_lowest_jit(values, present)).tolist() == expected_low
    assert np.asarray(_select_highest_jit(values, present)).tolist() == expected_high
  assert selection.select_lowest_host(values, present).tolist() == expected_low
  assert selection.select_highest_host(values, present).tolist() == expected_high


@hypothesis.settings(deadline=None, max_examples=60)
@hypothesis.given(float_tables(), st.sampled_from(DELTAS))
def test_select_delta_matches_oracle(table, delta):
  values, present = table
  # The delta rule reads a centroid as NaN-or-finite; infinities are not centroids.
  values = np.where(np.isinf(values), np.nan, values)
  expected = [_oracle_delta(list(v), list(p), delta) for v, p in zip(values, present)]
  with jax.enable_x64(True):
    actual = np.asarray(_select_delta_jit(values, present, delta)).tolist()
  assert actual == expected
  assert selection.select_lowest_centroid_delta_host(values, present, delta).tolist() == expected


@hypothesis.settings(deadline=None, max_examples=60)
@hypothesis.given(rational_tables(), st.sampled_from(DELTAS))
def test_exact_key_rules_match_oracle(table, delta):
  centroids, present, numerator, denominator = table
  rows = _fraction_rows(numerator, denominator)
  expected_low = [_oracle_lowest(list(c), list(p), f)
                  for c, p, f in zip(centroids.astype(float), present, rows)]
  expected_delta = [_oracle_delta(list(c), list(p), delta, f)
                    for c, p, f in zip(centroids.astype(float), present, rows)]
  key = (numerator, denominator)
  with jax.enable_x64(True):
    assert np.asarray(_select_lowest_jit(centroids, present, key)).tolist() == expected_low
    assert np.asarray(_select_delta_jit(centroids, present, delta, key)).tolist() == expected_delta
  assert selection.select_lowest_host(centroids, present, key).tolist() == expected_low
  assert selection.select_lowest_centroid_delta_host(centroids, present, delta,
                                                     key).tolist() == expected_delta


@hypothesis.settings(deadline=None, max_examples=30)
@hypothesis.given(rational_tables())
def test_exact_key_lowest_without_x64(table):
  centroids, present, numerator, denominator = table
  rows = _fraction_rows(numerator, denominator)
  expected = [_oracle_lowest(list(c), list(p), f)
              for c, p, f in zip(centroids.astype(float), present, rows)]
  key = (numerator.astype(np.int32), denominator.astype(np.int32))
  with jax.enable_x64(False):
    assert np.asarray(_select_lowest_jit(centroids, present, key)).tolist() == expected


@hypothesis.settings(deadline=None, max_examples=30)
@hypothesis.given(rational_tables(), st.sampled_from(DELTAS))
def test_exact_key_scaled_or_unsigned_orders_same(table, delta):
  # A positive multiple of the centroid orders the same way: pairs such as
  # (sum d(2s + d), sum d * L), whose ratio is twice the centroid, are valid keys.
  centroids, present, numerator, denominator = table
  key = (numerator, denominator)
  scaled = (numerator.astype(np.uint32), (2 * denominator).astype(np.uint32))
  with jax.enable_x64(True):
    expected = np.asarray(_select_delta_jit(centroids, present, delta, key)).tolist()
    assert np.asarray(_select_delta_jit(centroids, present, delta, scaled)).tolist() == expected
  host = selection.select_lowest_centroid_delta_host(centroids, present, delta, scaled)
  assert host.tolist() == expected


def test_exact_key_restores_float32_tie():
  # Both centroids are exactly 1/3, but float32 rounds 2**24 + 1 down, so the float table
  # shows a false "lower" centroid at index 1. The lowest index must win the tie.
  numerator = np.array([[1, 2**24 + 1]], dtype=np.int32)
  denominator = np.array([[3, 3 * (2**24 + 1)]], dtype=np.int32)
  centroids = numerator.astype(np.float32) / denominator.astype(np.float32)
  present = np.ones((1, 2), dtype=bool)
  with jax.enable_x64(False):
    assert int(_select_lowest_jit(centroids, present)[0]) == 1
    assert int(_select_lowest_jit(centroids, present, (numerator, denominator))[0]) == 0
    assert int(_select_delta_jit(centroids, present, 0.1, (numerator, denominator))[0]) == 0
  assert int(selection.select_lowest_host(centroids, present, (numerator, denominator))[0]) == 0


def test_exact_key_breaks_float64_false_tie():
  # Two different rationals that round to the same float64; the smaller one is at index 1.
  numerator = np.array([[178956965, 357913929]], dtype=np.int64)
  denominator = np.array([[536870896, 1073741789]], dtype=np.int64)
  centroids = numerator / denominator
  assert centroids[0, 0] == centroids[0, 1]
  present = np.ones((1, 2), dtype=bool)
  key = (numerator, denominator)
  with jax.enable_x64(True):
    assert int(_select_lowest_jit(centroids, present)[0]) == 0
    assert int(_select_lowest_jit(centroids, present, key)[0]) == 1
  with jax.enable_x64(False):
    key32 = (numerator.astype(np.int32), denominator.astype(np.int32))
    assert int(_select_lowest_jit(centroids.astype(np.float32), present, key32)[0]) == 1
  assert int(selection.select_lowest_host(centroids, present, key)[0]) == 1


def test_select_delta_single_centroid_is_selected():
  centroids = np.array([[np.nan, 0.9, np.nan]])
  present = np.ones((1, 3), dtype=bool)
  assert int(_select_delta_jit(centroids, present, 0.0)[0]) == 1
  assert int(selection.select_lowest_centroid_delta_host(centroids, present, 0.0)[0]) == 1


def test_select_delta_drops_low_outlier():
  centroids = np.array([[0.1, 0.5, 0.52, 0.55]])
  present = np.ones((1, 4), dtype=bool)
  assert int(selection.select_lowest_host(centroids, present)[0]) == 0
  # The mean is 0.4175; 0.1 lies 0.3175 below it, beyond delta = 0.1.
  assert int(selection.select_lowest_centroid_delta_host(centroids, present, 0.1)[0]) == 1
  with jax.enable_x64(True):
    assert int(_select_delta_jit(centroids, present, 0.1)[0]) == 1


def test_select_delta_traces_delta_under_vmap():
  centroids = np.array([[0.1, 0.5, 0.52, 0.55], [0.3, np.nan, 0.2, 0.9]])
  present = np.ones((2, 4), dtype=bool)
  deltas = np.array(selection.DELTA_GRID)
  with jax.enable_x64(True):
    batched = jax.jit(jax.vmap(selection.select_lowest_centroid_delta,
                               in_axes=(None, None, 0)))(centroids, present, deltas)
  for row, delta in enumerate(selection.DELTA_GRID):
    expected = selection.select_lowest_centroid_delta_host(centroids, present, delta)
    assert np.asarray(batched[row]).tolist() == expected.tolist(), delta


def test_rules_reject_bad_inputs():
  with pytest.raises(ValueError, match="shape"):
    selection.select_lowest(np.zeros((2, 3)), np.ones((2, 4), dtype=bool))
  with pytest.raises(ValueError, match="delta"):
    selection.select_lowest_centroid_delta(np.zeros((1, 2)), np.ones((1, 2), dtype=bool), -0.1)
  with pytest.raises(ValueError, match="integers"):
    selection.select_lowest(np.zeros((1, 2)), np.ones((1, 2), dtype=bool),
                            (np.zeros((1, 2)), np.ones((1, 2))))
  with pytest.raises(ValueError, match="shape"):
    selection.select_lowest_host(np.zeros((1, 2)), np.ones((1, 2), dtype=bool),
                                 (np.zeros((1, 3), np.int64), np.ones((1, 3), np.int64)))
  with pytest.raises(ValueError, match="N = 0"):
    selection.select_lowest(np.zeros((2, 0)), np.ones((2, 0), dtype=bool))
  with pytest.raises(ValueError, match="N = 0"):
    selection.select_highest_host(np.zeros((2, 0)), np.ones((2, 0), dtype=bool))


# Votes.


@st.composite
def voting_tables(draw):
  centroids, present, numerator, denominator = draw(rational_tables())
  problems, width = present.shape
  answers = [[draw(st.sampled_from(["1", "2", "3", None])) for _ in range(width)]
             for _ in range(problems)]
  return answers, centroids, present, numerator, denominator


@hypothesis.settings(deadline=None, max_examples=60)
@hypothesis.given(voting_tables(), st.sampled_from([(3, 10), (1, 2), (1, 1), (1, 10), (1, 4)]))
def test_votes_match_oracle(table, share):
  answers, centroids, present, numerator, denominator = table
  fraction = share[0] / share[1]
  expected = [_oracle_majority(a, p) for a, p in zip(answers, present)]
  assert selection.majority_vote(answers, present).tolist() == expected

  values = centroids.astype(np.float64)
  expected = [_oracle_centroid_vote(a, list(v), list(p), share)
              for a, v, p in zip(answers, values, present)]
  assert selection.centroid_vote(answers, values, present, fraction).tolist() == expected

  rows = _fraction_rows(numerator, denominator)
  expected = [_oracle_centroid_vote(a, list(v), list(p), share, f)
              for a, v, p, f in zip(answers, values, present, rows)]
  actual = selection.centroid_vote(answers, values, present, fraction, (numerator, denominator))
  assert actual.tolist() == expected


def test_majority_vote_tie_goes_to_first_answer():
  answers = [["b", "a", None, "a", "b"]]
  assert selection.majority_vote(answers, np.ones((1, 5), dtype=bool)).tolist() == [0]


def test_majority_vote_without_answers_is_unanswered():
  answers = [[None, None], ["x", None]]
  present = np.array([[True, True], [False, True]])
  assert selection.majority_vote(answers, present).tolist() == [-1, -1]


def test_centroid_vote_tie_goes_to_smallest_centroid():
  # Four centroids vote (floor(13 * 0.3) = 3 of 13 would be too few, so use fraction 1).
  answers = [["a", "b", "a", "b"]]
  centroids = np.array([[0.4, 0.1, 0.3, 0.5]])
  present = np.ones((1, 4), dtype=bool)
  assert selection.centroid_vote(answers, centroids, present, 1.0).tolist() == [1]


def test_centroid_vote_size_uses_decimal_fraction():
  # In floats 90 * 0.7 = 62.99999999999999, but 0.7 of 90 voters is 63. The first 62 voters
  # alternate "b", "a" (a tie that "b" would win) and voter 63 votes "a".
  answers = [["b" if j % 2 == 0 else "a" for j in range(62)] + ["a"] * 28]
  centroids = np.arange(90, dtype=np.float64)[None, :] / 90
  present = np.ones((1, 90), dtype=bool)
  assert selection.centroid_vote(answers, centroids, present, 0.7).tolist() == [1]
  # Five of ten vote with fraction 0.5: "a", "a", "b", "b", "b".
  answers = [["a", "a", "b", "b", "b", "b", "b", "b", "b", "b"]]
  centroids = np.arange(10, dtype=np.float64)[None, :] / 10
  present = np.ones((1, 10), dtype=bool)
  assert selection.centroid_vote(answers, centroids, present, 0.3).tolist() == [0]
  assert selection.centroid_vote(answers, centroids, present, 0.5).tolist() == [2]


def test_votes_reject_ragged_answers():
  with pytest.raises(ValueError, match="N = 3"):
    selection.majority_vote([["a", "b"]], np.ones((1, 3), dtype=bool))
  with pytest.raises(ValueError, match="centroid_vote_fraction"):
    selection.centroid_vote([["a"]], np.zeros((1, 1)), np.ones((1, 1), dtype=bool), 0.0)


# Random pick.


def test_random_pick_is_independent_of_layout():
  uids = [11, 22, 33, 44, 55]
  present = np.ones((5, 8), dtype=bool)
  present[2, :5] = False
  picks = selection.random_pick(uids, present, seed=7)
  reordered = selection.random_pick(uids[::-1], present[::-1], seed=7)
  assert picks.tolist() == reordered[::-1].tolist()
  alone = selection.random_pick(uids[2:3], present[2:3], seed=7)
  assert alone.tolist() == picks[2:3].tolist()
  assert picks[2] >= 5


def test_random_pick_is_seeded():
  uids = list(range(200))
  first = selection.random_pick(uids, 8, seed=1)
  assert first.tolist() == selection.random_pick(uids, 8, seed=1).tolist()
  assert first.tolist() != selection.random_pick(uids, 8, seed=2).tolist()


def test_random_pick_is_roughly_uniform():
  picks = selection.random_pick(list(range(4000)), 4, seed=3)
  counts = np.bincount(picks, minlength=4)
  # Each count is Binomial(4000, 1/4): mean 1000, standard deviation about 27.
  assert counts.min() > 850
  assert counts.max() < 1150


def test_random_pick_without_trajectories_is_unanswered():
  present = np.array([[False, False], [True, False]])
  assert selection.random_pick([1, 2], present, seed=0).tolist() == [-1, 0]


# pass@k.


def _brute_pass_at_k(n, c, k):
  subsets = list(itertools.combinations(range(n), k))
  hits = sum(1 for subset in subsets if any(i < c for i in subset))
  return fractions.Fraction(hits, len(subsets))


@pytest.mark.parametrize("n", range(1, 8))
def test_pass_at_k_matches_enumeration(n):
  for c in range(n + 1):
    for k in range(1, n + 1):
      assert selection.pass_at_k(n, c, k) == float(_brute_pass_at_k(n, c, k)), (n, c, k)


def test_pass_at_k_rejects_bad_counts():
  with pytest.raises(ValueError, match="k <= n"):
    selection.pass_at_k(3, 1, 4)
  with pytest.raises(ValueError, match="c <= n"):
    selection.pass_at_k(3, 4, 1)
  with pytest.raises(ValueError, match="integer"):
    selection.pass_at_k(3.0, 1, 1)


def test_usable_pass_k_skips_k_at_least_n(caplog):
  caplog.set_level(logging.INFO)
  assert selection.usable_pass_k([1, 2, 4, 8, 16, 2], 8) == (1, 2, 4)
  assert "Skipping pass@8" in caplog.text
  assert "Skipping pass@16" in caplog.text


def test_method_names_follow_interface_order():
  names = selection.method_names([4, 2, 64], 8, greedy=False)
  assert names[:4] == ("pass@1", "pass@4", "pass@2", "pass@n")
  assert "greedy" not in names
  assert selection.method_names([], 8, greedy=True)[-1] == "greedy"
  assert "lowest_centroid_delta_oracle" in names


def test_delta_grid_equals_decimal_literals():
  assert selection.DELTA_GRID == tuple(float(f"0.{k:02d}") for k in range(1, 31))
