"""Bootstrap intervals, paired differences and the summary entries built from them."""

import numpy as np
import pytest

from ec_jax.report import statistics
from ec_jax.report import summary
from ec_jax.report import table
from ec_jax.scoring import selection


def test_bootstrap_is_reproducible():
  values = np.linspace(0.0, 1.0, 50) ** 2
  first = statistics.bootstrap_interval(values, samples=2000, seed=5)
  assert first == statistics.bootstrap_interval(values, samples=2000, seed=5)
  assert first != statistics.bootstrap_interval(values, samples=2000, seed=6)


@pytest.mark.parametrize("rate,problems", [(0.1, 30), (0.5, 100), (0.8, 500), (0.97, 60)])
def test_bootstrap_covers_point_estimate(rate, problems):
  rng = np.random.default_rng(int(rate * 100) + problems)
  values = (rng.random(problems) < rate).astype(float)
  low, high = statistics.bootstrap_interval(values, samples=2000, seed=0)
  assert low <= values.mean() <= high
  assert low < high
  assert 0.0 <= low
  assert high <= 1.0


def test_bootstrap_equals_one_draw_of_all_resamples():
  # Blocks of draws give the same indices as a single draw from the same generator.
  values = np.linspace(0, 1, 7)
  rng = np.random.default_rng(3)
  means = values[rng.integers(0, 7, size=(999, 7))].mean(axis=1)
  expected = tuple(np.percentile(means, [2.5, 97.5]))
  assert statistics.bootstrap_interval(values, samples=999, seed=3) == pytest.approx(expected,
                                                                                       abs=0)
  block_means = statistics.bootstrap_means(values, 999, 3)
  assert np.array_equal(block_means, means)


def test_bootstrap_interval_narrows_with_more_problems():
  small = np.tile([0.0, 1.0], 10)
  large = np.tile([0.0, 1.0], 1000)
  low_small, high_small = statistics.bootstrap_interval(small, samples=2000, seed=0)
  low_large, high_large = statistics.bootstrap_interval(large, samples=2000, seed=0)
  assert high_large - low_large < high_small - low_small


def test_bootstrap_constant_values_give_point_interval():
  assert statistics.bootstrap_interval(np.full(9, 0.25), samples=100, seed=0) == (0.25, 0.25)


def test_bootstrap_skips_nan_and_handles_empty():
  values = np.array([1.0, np.nan, 0.0, 1.0])
  assert statistics.bootstrap_interval(values, samples=500, seed=1) == \
      statistics.bootstrap_interval(values[~np.isnan(values)], samples=500, seed=1)
  assert statistics.bootstrap_interval(np.array([np.nan]), samples=10, seed=0) is None
  assert statistics.bootstrap_interval(np.array([]), samples=10, seed=0) is None


@pytest.mark.parametrize("kwargs,message", [({"samples": 0}, "bootstrap.samples"),
                                            ({"samples": 10.0}, "bootstrap.samples"),
                                            ({"level": 1.0}, "level")])
def test_bootstrap_rejects_bad_settings(kwargs, message):
  with pytest.raises(ValueError, match=message):
    statistics.bootstrap_interval(np.ones(3), **kwargs)


def test_bootstrap_rejects_infinite_and_matrix_scores():
  with pytest.raises(ValueError, match="infinite"):
    statistics.bootstrap_interval(np.array([1.0, np.inf]))
  with pytest.raises(ValueError, match="1-D"):
    statistics.bootstrap_interval(np.ones((2, 2)))


def test_paired_difference_by_hand():
  method = np.array([1.0, 0.0, 1.0, 1.0, np.nan])
  baseline = np.array([0.5, 0.25, 0.75, 0.5, 0.5])
  result = statistics.paired_difference(method, baseline, samples=3000, seed=2)
  assert result["problems"] == 4
  assert result["difference"] == pytest.approx((0.5 - 0.25 + 0.25 + 0.5) / 4)
  low, high = result["interval"]
  assert low <= result["difference"] <= high
  differences = (method - baseline)[:4]
  assert result["interval"] == list(
      statistics.bootstrap_interval(differences, samples=3000, seed=2))


def test_paired_difference_of_identical_scores_is_zero():
  values = np.array([0.0, 1.0, 1.0, 0.0, 1.0])
  result = statistics.paired_difference(values, values, samples=500, seed=0)
  assert result["difference"] == 0.0
  assert result["interval"] == [0.0, 0.0]


def test_paired_difference_rejects_mismatched_shapes():
  with pytest.raises(ValueError, match="same problems"):
    statistics.paired_difference(np.ones(3), np.ones(4))


def test_paired_difference_without_common_problems():
  result = statistics.paired_difference(np.array([np.nan]), np.array([1.0]), samples=10, seed=0)
  assert result == {"difference": None, "interval": None, "problems": 0}


def _evaluation():
  rng = np.random.default_rng(8)
  problems, width = 40, 8
  present = np.ones((problems, width), dtype=bool)
  correct = rng.random((problems, width)) < 0.4
  centroids = rng.random((problems, width))
  return selection.evaluate_methods(present, correct, problem_uids=list(range(problems)),
                                    centroids=centroids,
                                    scores={"self_certainty": "imported top-k traces"})


def test_methods_with_intervals_adds_intervals():
  evaluation = _evaluation()
  methods = summary.methods_with_intervals(evaluation.summaries, evaluation.problem_scores,
                                           samples=500, seed=0)
  assert list(methods) == list(evaluation.summaries)
  assert methods["self_certainty"] == {"unavailable": "imported top-k traces"}
  for name in ("pass@1", "lowest_centroid", "random", "lowest_centroid_delta_cv"):
    low, high = methods[name]["interval"]
    assert low <= methods[name]["accuracy"] <= high, name


def test_headline_difference_pairs_lowest_centroid_with_pass1():
  evaluation = _evaluation()
  result = summary.headline_difference(evaluation.summaries, evaluation.problem_scores,
                                       samples=500, seed=0)
  scores = evaluation.problem_scores
  assert result["method"] == "lowest_centroid"
  assert result["baseline"] == "pass@1"
  assert result["problems"] == 40
  assert result["difference"] == pytest.approx(
      np.mean(scores["lowest_centroid"] - scores["pass@1"]))


def test_headline_difference_unavailable_method():
  evaluation = _evaluation()
  result = summary.headline_difference(evaluation.summaries, evaluation.problem_scores,
                                       method="self_certainty", samples=10, seed=0)
  assert "unavailable" in result["unavailable"]
  result = summary.headline_difference(evaluation.summaries, evaluation.problem_scores,
                                       method="deepconf_max", samples=10, seed=0)
  assert "was not evaluated" in result["unavailable"]


def test_methods_table_lists_every_method():
  methods = {
      "pass@1": {"accuracy": 0.41666, "correct": 1.25, "total": 3, "unanswered": 0,
                 "unlabelled": 1, "interval": [0.25, 0.6]},
      "lowest_centroid": {"accuracy": None, "correct": 0, "total": 0, "unanswered": 0,
                          "unlabelled": 4, "interval": None},
      "self_certainty": {"unavailable": "imported top-k traces"},
  }
  lines = table.format_methods_table(methods).splitlines()
  assert len(lines) == 5
  assert lines[2] == "| pass@1 | 41.7 | 25.0 to 60.0 | 1.25 / 3 | 0 | 1 |"
  assert lines[3] == "| lowest_centroid | n/a |  | 0 / 0 | 0 | 4 |"
  assert lines[4].startswith("| self_certainty | unavailable: imported top-k traces")
