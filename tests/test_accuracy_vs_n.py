"""Expected accuracy with n of N trajectories, against enumeration of every subset."""

import fractions
import itertools
import math

import hypothesis
from hypothesis import strategies as st
import numpy as np
import pytest

from ec_jax.report import accuracy_vs_n
from ec_jax.scoring import selection

TIE_PRONE_VALUES = [0.1, 0.2, 0.2, 0.3, 0.5, math.nan]
ANSWER_VALUES = ["a", "b", "c", None]
FRACTION = 0.5
DELTA = 0.1


def _choose(method, row_values, row_answers, subset_present, exact_key=None):
  """Apply the selection module's rule to one problem restricted to a subset."""
  values = np.asarray([row_values], dtype=np.float64)
  present = subset_present[None, :]
  if method == "lowest_centroid":
    key = None if exact_key is None else (exact_key[0][None, :], exact_key[1][None, :])
    return selection.select_lowest_host(values, present, key)[0]
  if method == "lowest_centroid_delta":
    return selection.select_lowest_centroid_delta_host(values, present, DELTA)[0]
  if method == "majority_vote":
    return selection.majority_vote([row_answers], present)[0]
  if method == "centroid_vote":
    return selection.centroid_vote([row_answers], values, present, FRACTION)[0]
  if selection.SCORE_METHOD_DIRECTIONS[method] == "lowest":
    return selection.select_lowest_host(values, present)[0]
  return selection.select_highest_host(values, present)[0]


def _brute_force(method, values, answers, present, labels, n, exact_key=None):
  """Return per problem (expected correctness, probability unanswered) as Fractions."""
  results = []
  for problem in range(present.shape[0]):
    members = np.flatnonzero(present[problem])
    if members.size == 0:
      results.append((fractions.Fraction(0), fractions.Fraction(1)))
      continue
    hits = unanswered = count = 0
    for subset in itertools.combinations(members, min(n, members.size)):
      mask = np.zeros(present.shape[1], dtype=bool)
      mask[list(subset)] = True
      key = None if exact_key is None else (exact_key[0][problem], exact_key[1][problem])
      chosen = _choose(method, values[problem], answers[problem], mask, key)
      count += 1
      unanswered += chosen < 0
      hits += chosen >= 0 and labels[problem, chosen]
    results.append((fractions.Fraction(int(hits), count), fractions.Fraction(int(unanswered),
                                                                             count)))
  return results


@st.composite
def _problem_tables(draw, max_problems=3, max_width=6):
  problems = draw(st.integers(1, max_problems))
  width = draw(st.integers(1, max_width))
  cells = (problems, width)
  flat = lambda strategy: st.lists(strategy, min_size=problems * width,
                                   max_size=problems * width)
  values = np.array(draw(flat(st.sampled_from(TIE_PRONE_VALUES))), dtype=np.float64)
  present = np.array(draw(flat(st.sampled_from([True, True, True, False]))), dtype=bool)
  # Rare None labels, so that most problems stay labelled and are compared.
  correct = draw(flat(st.sampled_from([True] * 5 + [False] * 6 + [None])))
  answers = draw(flat(st.sampled_from(ANSWER_VALUES)))
  correct_rows = [correct[i * width:(i + 1) * width] for i in range(problems)]
  answer_rows = [answers[i * width:(i + 1) * width] for i in range(problems)]
  return values.reshape(cells), present.reshape(cells), correct_rows, answer_rows


def _check_against_brute_force(method, tables, **options):
  values, present, correct, answers = tables
  labels, labelled = selection.correctness_labels(correct, present)
  width = present.shape[1]
  by_n = accuracy_vs_n.expected_scores_by_n(
      method, correct, range(1, width + 1), present=present, centroids=values, scores=values,
      answers=answers, centroid_vote_fraction=FRACTION, delta=DELTA, **options)
  for n, expected in by_n.items():
    oracle = _brute_force(method, values, answers, present, labels, n)
    assert not np.any(expected.estimated)
    assert expected.samples is None
    for problem, (hits, unanswered) in enumerate(oracle):
      if labelled[problem]:
        assert expected.scores[problem] == pytest.approx(float(hits), abs=1e-12), (n, problem)
      else:
        assert math.isnan(expected.scores[problem]), (n, problem)
      assert expected.unanswered[problem] == pytest.approx(float(unanswered), abs=1e-12)


@pytest.mark.parametrize("method", ["lowest_centroid", "lowest_mean_entropy", "deepconf_tail"])
@hypothesis.settings(deadline=None, max_examples=40)
@hypothesis.given(tables=_problem_tables())
def test_rank_methods_match_enumeration(method, tables):
  _check_against_brute_force(method, tables)


@pytest.mark.parametrize("method", ["lowest_centroid_delta", "majority_vote", "centroid_vote"])
@hypothesis.settings(deadline=None, max_examples=30)
@hypothesis.given(tables=_problem_tables())
def test_subset_methods_match_enumeration(method, tables):
  _check_against_brute_force(method, tables)


def test_rank_formula_with_exact_key():
  # 1/3 and 2/6 are equal rationals; the float values disagree on purpose so that only the
  # exact key orders them as ties (lowest index first).
  values = np.array([[0.5, 0.34, 0.33, 0.9, np.nan]])
  numerator = np.array([[1, 2, 1, 9, 0]])
  denominator = np.array([[2, 6, 3, 10, 0]])
  correct = np.array([[False, True, False, True, True]])
  present = np.ones_like(correct)
  labels, _ = selection.correctness_labels(correct, present)
  curve = accuracy_vs_n.expected_scores_by_n(
      "lowest_centroid", correct, [1, 2, 3, 4, 5], centroids=values,
      exact_key=(numerator, denominator))
  for n, expected in curve.items():
    oracle = _brute_force("lowest_centroid", values, [[None] * 5], present, labels, n,
                          exact_key=(numerator, denominator))
    assert expected.scores[0] == pytest.approx(float(oracle[0][0]), abs=1e-12), n
    assert expected.unanswered[0] == pytest.approx(float(oracle[0][1]), abs=1e-12), n


def test_rank_formula_by_hand():
  # Centroids rank 2 < 0 < 1; trajectory 3 has none. M = 4.
  centroids = np.array([[0.4, 0.6, 0.2, np.nan]])
  correct = np.array([[True, False, False, True]])
  curve = accuracy_vs_n.accuracy_curve("lowest_centroid", correct, [1, 2, 3, 4],
                                       centroids=centroids)
  # n = 2: rank 1 (trajectory 0) is chosen with C(2, 1) / C(4, 2) = 2 / 6.
  assert curve[2]["accuracy"] == pytest.approx(2 / 6)
  # Unanswered only when the subset is trajectory 3 alone: 1 / 4 at n = 1.
  assert curve[1]["unanswered"] == pytest.approx(1 / 4)
  assert curve[1]["accuracy"] == pytest.approx(1 / 4)
  assert curve[3]["accuracy"] == pytest.approx(1 / 4)
  assert curve[4]["accuracy"] == 0.0
  assert curve[4]["unanswered"] == 0.0


def test_pass_methods():
  correct = [[True, False, False, True], [False, False, False, False], [True, None, True, True]]
  pass_1 = accuracy_vs_n.accuracy_curve("pass@1", correct, [1, 2, 4])
  pass_n = accuracy_vs_n.accuracy_curve("pass@n", correct, [1, 2, 3, 4])
  for point in pass_1.values():
    assert point["accuracy"] == pytest.approx(0.25)
    assert point["total"] == 2
    assert point["unlabelled"] == 1
  for n, point in pass_n.items():
    assert point["accuracy"] == pytest.approx(selection.pass_at_k(4, 2, n) / 2)
  assert pass_n[1]["accuracy"] == pytest.approx(pass_1[1]["accuracy"])


def test_full_n_equals_evaluate_methods():
  rng = np.random.default_rng(3)
  problems, width = 12, 5
  centroids = np.round(rng.random((problems, width)) * 5) / 5
  centroids[rng.random((problems, width)) < 0.2] = np.nan
  present = rng.random((problems, width)) < 0.9
  correct = (rng.random((problems, width)) < 0.5).tolist()
  correct[4][2] = None
  answers = [[str(a) if a < 3 else None for a in rng.integers(0, 4, width)]
             for _ in range(problems)]
  evaluation = selection.evaluate_methods(
      present, correct, problem_uids=list(range(problems)), centroids=centroids,
      answers=answers, scores={"self_certainty": centroids}, centroid_vote_fraction=FRACTION,
      delta=DELTA)
  for method in ["pass@1", "pass@n", "lowest_centroid", "lowest_centroid_delta",
                 "majority_vote", "centroid_vote", "self_certainty"]:
    curve = accuracy_vs_n.accuracy_curve(
        method, correct, [width], present=present, centroids=centroids,
        scores=centroids, answers=answers, centroid_vote_fraction=FRACTION, delta=DELTA)
    summary = evaluation.summaries[method]
    assert curve[width]["accuracy"] == pytest.approx(summary["accuracy"]), method
    assert curve[width]["total"] == summary["total"], method
    assert curve[width]["unlabelled"] == summary["unlabelled"], method
    assert curve[width]["unanswered"] == pytest.approx(summary["unanswered"]), method


def _large_problem_set(seed=5, problems=8, width=14):
  rng = np.random.default_rng(seed)
  centroids = rng.random((problems, width))
  correct = rng.random((problems, width)) < 0.4
  answers = [[str(a) for a in rng.integers(0, 4, width)] for _ in range(problems)]
  return centroids, correct, answers


@pytest.mark.parametrize("method", accuracy_vs_n.SUBSET_METHODS)
def test_monte_carlo_estimate_is_labelled(method):
  centroids, correct, answers = _large_problem_set()
  options = dict(centroids=centroids, answers=answers, max_subsets=1000, samples=4000)
  estimate = accuracy_vs_n.accuracy_curve(method, correct, [2, 7], **options)
  exact = accuracy_vs_n.accuracy_curve(method, correct, [2, 7], centroids=centroids,
                                       answers=answers, max_subsets=10_000)
  # C(14, 2) = 91 subsets are enumerated; C(14, 7) = 3432 exceed the limit of 1000.
  assert estimate[2]["estimate"] is False
  assert estimate[2]["samples"] is None
  assert estimate[2]["accuracy"] == exact[2]["accuracy"]
  assert estimate[7]["estimate"] is True
  assert estimate[7]["samples"] == 4000
  assert estimate[7]["estimated_problems"] == 8
  assert exact[7]["estimate"] is False
  # 8 problems x 4000 draws: the standard error of the mean is below 0.003.
  assert estimate[7]["accuracy"] == pytest.approx(exact[7]["accuracy"], abs=0.02)


def test_monte_carlo_depends_on_seed_only():
  centroids, correct, answers = _large_problem_set()
  options = dict(centroids=centroids, answers=answers, max_subsets=10, samples=300)
  first = accuracy_vs_n.accuracy_curve("majority_vote", correct, [5], seed=7, **options)
  second = accuracy_vs_n.accuracy_curve("majority_vote", correct, [5, 3], seed=7, **options)
  other_seed = accuracy_vs_n.expected_scores_by_n("majority_vote", correct, [5], seed=8,
                                                  **options)
  same_seed = accuracy_vs_n.expected_scores_by_n("majority_vote", correct, [5], seed=7,
                                                 **options)
  assert first[5] == second[5]
  assert not np.array_equal(other_seed[5].scores, same_seed[5].scores)
  # A problem's draws do not depend on the other problems.
  alone = accuracy_vs_n.expected_scores_by_n(
      "majority_vote", correct[:3], [5], seed=7, centroids=centroids[:3], answers=answers[:3],
      max_subsets=10, samples=300)
  np.testing.assert_array_equal(alone[5].scores, same_seed[5].scores[:3])


def test_unlabelled_and_empty_problems():
  correct = [[True, False], [None, True], [False, False]]
  present = np.array([[True, True], [True, True], [False, False]])
  centroids = np.array([[0.2, 0.1], [0.1, 0.2], [np.nan, np.nan]])
  curve = accuracy_vs_n.accuracy_curve("lowest_centroid", correct, [1, 2], present=present,
                                       centroids=centroids)
  assert curve[2] == {"accuracy": 0.0, "correct": 0.0, "total": 2, "unanswered": 1.0,
                      "unlabelled": 1, "estimate": False, "samples": None,
                      "estimated_problems": 0}
  assert curve[1]["accuracy"] == pytest.approx(0.25)


def test_labels_table_accepts_nan_floats():
  present = np.ones((2, 3), dtype=bool)
  from_floats = accuracy_vs_n.labels_table(np.array([[1.0, 0.0, np.nan], [0, 1, 1]]), present)
  from_lists = selection.correctness_labels([[True, False, None], [False, True, True]], present)
  np.testing.assert_array_equal(from_floats[0], from_lists[0])
  np.testing.assert_array_equal(from_floats[1], from_lists[1])


@pytest.mark.parametrize("call, message", [
    (lambda: accuracy_vs_n.accuracy_curve("random", [[True]], [1]), "unsupported method"),
    (lambda: accuracy_vs_n.accuracy_curve("pass@1", [[True, False]], [3]), r"\[1, N\]"),
    (lambda: accuracy_vs_n.accuracy_curve("pass@1", [[True, False]], []), "n_values is empty"),
    (lambda: accuracy_vs_n.accuracy_curve("lowest_centroid", [[True]], [1]), "centroids="),
    (lambda: accuracy_vs_n.accuracy_curve("majority_vote", [[True]], [1]), "answers="),
    (lambda: accuracy_vs_n.accuracy_curve("deepconf_mean", [[True]], [1]), "scores="),
    (lambda: accuracy_vs_n.accuracy_curve("lowest_centroid", [[True]], [1],
                                          centroids=[[0.1, 0.2]]), "shape"),
    (lambda: accuracy_vs_n.accuracy_curve("pass@1", [[2]], [1]), "correct\\[0\\]\\[0\\]"),
    (lambda: accuracy_vs_n.accuracy_curve("pass@1", [[True]], [1], samples=0), "samples"),
    (lambda: accuracy_vs_n.accuracy_curve("pass@1", [[True]], [1], seed=-1), "seed"),
    (lambda: accuracy_vs_n.accuracy_curve("centroid_vote", [[True]], [1], centroids=[[0.1]],
                                          answers=[["a"]], centroid_vote_fraction=0),
     "centroid_vote_fraction"),
])
def test_invalid_input_is_rejected(call, message):
  with pytest.raises(ValueError, match=message):
    call()
