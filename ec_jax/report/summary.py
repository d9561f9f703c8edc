"""The `methods` and paired-difference entries of `summary.json`.

Inputs are the plain dicts of an evaluation (per-method summaries and per-problem scores), so
this module needs neither JAX nor the scoring package.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from ec_jax.report import statistics

HEADLINE_METHOD = "lowest_centroid"
BASELINE_METHOD = "pass@1"


def methods_with_intervals(summaries: Mapping[str, dict],
                           problem_scores: Mapping[str, np.ndarray], *,
                           samples: int = statistics.DEFAULT_SAMPLES,
                           seed: int = statistics.DEFAULT_SEED) -> dict[str, dict]:
  """Return the summaries in their order with a bootstrap `interval` added to each available one.

  Every method is resampled with the same seed, so all intervals use the same resampled problem
  sets. An unavailable method keeps its {"unavailable": reason} entry unchanged. The interval is
  [low, high], or None when no problem is labelled.
  """
  methods = {}
  for name, summary in summaries.items():
    if "unavailable" in summary:
      methods[name] = dict(summary)
      continue
    if name not in problem_scores:
      raise ValueError(f"No per-problem scores for method {name!r}; cannot bootstrap it.")
    interval = statistics.bootstrap_interval(problem_scores[name], samples=samples, seed=seed)
    methods[name] = {**summary, "interval": None if interval is None else list(interval)}
  return methods


def headline_difference(summaries: Mapping[str, dict], problem_scores: Mapping[str, np.ndarray],
                        *, samples: int = statistics.DEFAULT_SAMPLES,
                        seed: int = statistics.DEFAULT_SEED,
                        method: str = HEADLINE_METHOD, baseline: str = BASELINE_METHOD) -> dict:
  """Return the paired difference `method` minus `baseline` over the labelled problems.

  Returns:
    {"method", "baseline", "difference", "interval", "problems"}, or {"method", "baseline",
    "unavailable": reason} when either method is unavailable.
  """
  names = {"method": method, "baseline": baseline}
  for name in (method, baseline):
    summary = summaries.get(name)
    if summary is None:
      return {**names, "unavailable": f"method {name} was not evaluated"}
    if "unavailable" in summary:
      return {**names, "unavailable": f"method {name} is unavailable: {summary['unavailable']}"}
  difference = statistics.paired_difference(problem_scores[method], problem_scores[baseline],
                                            samples=samples, seed=seed)
  return {**names, **difference}
