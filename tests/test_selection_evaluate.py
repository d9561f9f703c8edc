"""evaluate_methods: one table of every method, scored on the same problems."""

import json
import logging

import jax
import numpy as np
import pytest

from ec_jax.scoring import deepconf
from ec_jax.scoring import selection

# Four problems, N = 4. Problem 1 has an unlabelled trajectory; problem 3 lacks trajectory 3.
PRESENT = np.array([[True, True, True, True],
                    [True, True, True, True],
                    [True, True, True, True],
                    [True, True, True, False]])
CORRECT = [[True, False, True, False],
           [False, None, True, True],
           [False, False, False, True],
           [True, True, False, None]]
CENTROIDS = np.array([[0.30, 0.20, np.nan, 0.25],
                      [0.50, 0.10, 0.40, 0.45],
                      [0.60, 0.15, 0.55, 0.58],
                      [0.10, 0.10, 0.10, np.nan]])
ANSWERS = [["1", "2", "1", None],
           ["a", "b", "a", "b"],
           ["x", "y", "x", "z"],
           [None, "7", "8", None]]
UIDS = [101, 202, 303, 404]


def _evaluate(**overrides):
  arguments = dict(problem_uids=UIDS, centroids=CENTROIDS, answers=ANSWERS, pass_k=[2, 4, 8],
                   scores={"deepconf_mean": CENTROIDS, "lowest_mean_entropy": CENTROIDS,
                           "self_certainty": "imported top-k traces have no full distribution"})
  arguments.update(overrides)
  return selection.evaluate_methods(PRESENT, CORRECT, **arguments)


def test_evaluation_keys_follow_interface_order():
  evaluation = _evaluate()
  assert tuple(evaluation.summaries) == selection.method_names([2, 4, 8], 4, greedy=False)
  assert "pass@4" not in evaluation.summaries
  assert "pass@2" in evaluation.summaries


def test_unlabelled_problem_left_out_everywhere():
  evaluation = _evaluate()
  assert evaluation.labelled.tolist() == [True, False, True, True]
  for name, summary in evaluation.summaries.items():
    if "unavailable" in summary:
      continue
    assert summary["total"] == 3, name
    assert summary["unlabelled"] == 1, name
    assert np.isnan(evaluation.problem_scores[name][1]), name


def test_pass_scores_by_hand():
  summaries = _evaluate().summaries
  # Labelled problems 0, 2, 3: pass@1 = 2/4, 1/4, 2/3.
  assert summaries["pass@1"]["accuracy"] == pytest.approx((0.5 + 0.25 + 2 / 3) / 3)
  # pass@2 = 1 - C(n - c, 2) / C(n, 2): 1 - 1/6, 1 - 3/6, 1 - 0/3.
  assert summaries["pass@2"]["accuracy"] == pytest.approx((5 / 6 + 0.5 + 1.0) / 3)
  assert summaries["pass@n"]["accuracy"] == pytest.approx(1.0)
  assert summaries["pass@n"]["correct"] == 3


def test_selections_by_hand():
  evaluation = _evaluate()
  selections = {name: chosen.tolist() for name, chosen in evaluation.selections.items()}
  assert selections["lowest_centroid"] == [1, 1, 1, 0]
  # Problem 2: mean 0.47, so 0.15 lies 0.32 below it and is dropped at delta 0.1.
  assert selections["lowest_centroid_delta"] == [1, 2, 2, 0]
  assert selections["majority_vote"] == [0, 0, 0, 1]
  # floor(n * 0.3) = 0 or 1 voters: the lowest centroid alone votes; problem 3 has no answer.
  assert selections["centroid_vote"] == [1, 1, 1, -1]
  assert selections["lowest_mean_entropy"] == [1, 1, 1, 0]
  assert selections["deepconf_mean"] == [0, 0, 0, 0]
  summaries = evaluation.summaries
  # Only problem 3's pick (trajectory 0) is correct under either rule.
  assert summaries["lowest_centroid"]["correct"] == 1
  assert summaries["lowest_centroid_delta"]["correct"] == 1
  assert summaries["centroid_vote"]["unanswered"] == 1
  assert summaries["lowest_centroid_delta"]["delta"] == 0.1


def test_selections_match_jax_rules():
  evaluation = _evaluate()
  with jax.enable_x64(True):
    lowest = jax.jit(selection.select_lowest)(CENTROIDS, PRESENT)
    within = jax.jit(selection.select_lowest_centroid_delta)(CENTROIDS, PRESENT, 0.1)
    highest = jax.jit(selection.select_highest)(CENTROIDS, PRESENT)
  assert evaluation.selections["lowest_centroid"].tolist() == np.asarray(lowest).tolist()
  assert evaluation.selections["lowest_centroid_delta"].tolist() == np.asarray(within).tolist()
  assert evaluation.selections["deepconf_mean"].tolist() == np.asarray(highest).tolist()


def test_random_method_uses_seeded_pick():
  evaluation = _evaluate(seed=9)
  expected = selection.random_pick(UIDS, PRESENT, seed=9)
  assert evaluation.selections["random"].tolist() == expected.tolist()


def test_unavailable_methods_keep_their_keys():
  summaries = _evaluate(answers=None, scores={"self_certainty": "no full distribution"}).summaries
  assert summaries["self_certainty"] == {"unavailable": "no full distribution"}
  assert summaries["majority_vote"] == {"unavailable": "no answers given"}
  assert summaries["centroid_vote"] == {"unavailable": "no answers given"}
  for name in deepconf.DEEPCONF_METHODS:
    assert "unavailable" in summaries[name], name


def test_cross_validation_unavailable_with_one_labelled_problem():
  correct = [[None, True, True, True], [None, True, True, True], [True, False, True, False],
             [None, True, True, True]]
  evaluation = selection.evaluate_methods(PRESENT, correct, problem_uids=UIDS,
                                          centroids=CENTROIDS)
  assert "at least 2" in evaluation.summaries["lowest_centroid_delta_cv"]["unavailable"]
  assert evaluation.summaries["lowest_centroid"]["total"] == 1
  assert "lowest_centroid_delta_cv" not in evaluation.selections


def test_cross_validation_reports_fold_deltas():
  summary = _evaluate().summaries["lowest_centroid_delta_cv"]
  assert len(summary["deltas"]) == 3
  assert summary["total"] == 3


def test_summaries_are_json_serialisable():
  evaluation = _evaluate(greedy_correct=[True, False, None, True])
  text = json.dumps(evaluation.summaries, allow_nan=False)
  assert "lowest_centroid_delta_oracle" in text


def test_greedy_only_when_given():
  assert "greedy" not in _evaluate().summaries
  evaluation = _evaluate(greedy_correct=[True, True, None, False])
  greedy = evaluation.summaries["greedy"]
  # Problem 2's greedy label is missing, so problems 1 and 2 are unlabelled for every method.
  assert greedy == {"accuracy": 0.5, "correct": 1, "total": 2, "unanswered": 0,
                    "unlabelled": 2}
  assert evaluation.summaries["lowest_centroid"]["unlabelled"] == 2


def test_pass_k_skips_k_at_least_n(caplog):
  caplog.set_level(logging.INFO)
  evaluation = _evaluate(pass_k=[3, 4])
  assert "pass@3" in evaluation.summaries
  assert "pass@4" not in evaluation.summaries
  assert caplog.text.count("Skipping pass@4") == 1


def test_pass_k_unavailable_when_problem_is_short():
  # Problem 3 keeps two trajectories, too few for pass@3.
  present = PRESENT.copy()
  present[3, 2] = False
  summaries = selection.evaluate_methods(present, CORRECT, problem_uids=UIDS, pass_k=[3]
                                         ).summaries
  assert "fewer than k = 3" in summaries["pass@3"]["unavailable"]


def test_problem_without_trajectories_is_unanswered():
  present = PRESENT.copy()
  present[2] = False
  evaluation = selection.evaluate_methods(present, CORRECT, problem_uids=UIDS,
                                          centroids=CENTROIDS, answers=ANSWERS)
  for name, summary in evaluation.summaries.items():
    if "unavailable" in summary:
      continue
    assert summary["unanswered"] >= 1, name
    assert evaluation.problem_scores[name][2] == 0.0, name


def test_exact_key_changes_tie_break():
  # Problem 0: trajectories 0 and 1 are both exactly 1/3, and float32 shows index 1 lower.
  numerator = np.array([[1, 2**24 + 1]], dtype=np.int64)
  denominator = np.array([[3, 3 * (2**24 + 1)]], dtype=np.int64)
  centroids = (numerator.astype(np.float32) / denominator.astype(np.float32)).astype(np.float64)
  present = np.ones((1, 2), dtype=bool)
  correct = [[True, False]]
  plain = selection.evaluate_methods(present, correct, problem_uids=[1], centroids=centroids)
  exact = selection.evaluate_methods(present, correct, problem_uids=[1], centroids=centroids,
                                     exact_key=(numerator, denominator))
  assert plain.selections["lowest_centroid"].tolist() == [1]
  assert exact.selections["lowest_centroid"].tolist() == [0]
  assert exact.summaries["lowest_centroid"]["accuracy"] == 1.0


@pytest.mark.parametrize("overrides,message", [
    ({"problem_uids": [1, 2]}, "problem_uids"),
    ({"scores": {"deepconf_max": CENTROIDS}}, "Unknown score methods"),
    ({"greedy_correct": [True]}, "greedy_correct"),
    ({"pass_k": [0]}, "pass_k"),
])
def test_evaluation_rejects_bad_inputs(overrides, message):
  with pytest.raises(ValueError, match=message):
    _evaluate(**overrides)


def test_labels_reject_non_boolean_values():
  with pytest.raises(ValueError, match="True, False or None"):
    selection.correctness_labels([[1, 0]], np.ones((1, 2), dtype=bool))


def test_evaluation_without_problems_has_no_accuracy():
  evaluation = selection.evaluate_methods(np.zeros((0, 4), dtype=bool), np.zeros((0, 4), bool),
                                          problem_uids=[], centroids=np.zeros((0, 4)),
                                          answers=[])
  assert evaluation.summaries["lowest_centroid"]["accuracy"] is None
  assert evaluation.summaries["lowest_centroid"]["total"] == 0
  assert "unavailable" in evaluation.summaries["lowest_centroid_delta_cv"]
