"""Bootstrap intervals over problems for accuracies and paired differences (numpy only).

The bootstrap resamples problems with replacement, takes the mean of each resample and reports
the 2.5th and 97.5th percentiles of those means (numpy's linear method) for a 95 % interval. The
draws come from `np.random.default_rng(seed)`, so a seed gives the same interval for the same
numpy version. They are drawn in blocks to bound memory, which yields the same indices as one
draw of all resamples.
"""

from __future__ import annotations

import numpy as np

DEFAULT_SAMPLES = 10_000
DEFAULT_SEED = 0
DEFAULT_LEVEL = 0.95
# Resample indices drawn per block, to bound memory (32 MiB of int64 indices).
_BLOCK_ELEMENTS = 1 << 22


def _finite_values(name: str, values) -> np.ndarray:
  """Return the 1-D float64 values with NaN entries (unlabelled problems) removed."""
  values = np.asarray(values, dtype=np.float64)
  if values.ndim != 1:
    raise ValueError(f"{name} must be a 1-D array of per-problem scores, got shape {values.shape}.")
  values = values[~np.isnan(values)]
  if np.any(np.isinf(values)):
    raise ValueError(f"{name} contains an infinite per-problem score; scores must be finite.")
  return values


def _check_settings(samples: int, level: float) -> None:
  """Raise ValueError for a bootstrap size below 1 or a level outside (0, 1)."""
  if isinstance(samples, bool) or not isinstance(samples, (int, np.integer)) or samples < 1:
    raise ValueError(
        f"bootstrap.samples must be an integer >= 1, got {samples!r}; {DEFAULT_SAMPLES} is usual.")
  if not 0 < level < 1:
    raise ValueError(f"The interval level must lie in (0, 1), got {level!r}; use 0.95 for 95 %.")


def bootstrap_means(values: np.ndarray, samples: int, seed: int) -> np.ndarray:
  """Return `[samples]` means of resamples of `values` drawn with replacement."""
  count = values.shape[0]
  rng = np.random.default_rng(seed)
  block = max(1, _BLOCK_ELEMENTS // count)
  means = np.empty(samples, dtype=np.float64)
  for start in range(0, samples, block):
    stop = min(samples, start + block)
    indices = rng.integers(0, count, size=(stop - start, count))
    means[start:stop] = values[indices].mean(axis=1)
  return means


def bootstrap_interval(values, *, samples: int = DEFAULT_SAMPLES, seed: int = DEFAULT_SEED,
                       level: float = DEFAULT_LEVEL) -> tuple[float, float] | None:
  """Return the percentile bootstrap interval of the mean of per-problem scores.

  Args:
    values: `[problems]` per-problem scores (1 or 0 for a selection, a fraction for pass@k).
      NaN entries (unlabelled problems) are left out.
    samples: number of resamples.
    seed: seed of the resampling.
    level: coverage of the interval.

  Returns:
    (low, high), or None when no finite value remains.
  """
  _check_settings(samples, level)
  values = _finite_values("values", values)
  if values.size == 0:
    return None
  means = bootstrap_means(values, samples, seed)
  tail = 100 * (1 - level) / 2
  low, high = np.percentile(means, [tail, 100 - tail])
  return float(low), float(high)


def paired_difference(first, second, *, samples: int = DEFAULT_SAMPLES,
                      seed: int = DEFAULT_SEED, level: float = DEFAULT_LEVEL) -> dict:
  """Return the mean of first - second over the same problems and its bootstrap interval.

  Both methods are resampled with the same problem indices, so the interval accounts for their
  correlation. A problem where either score is NaN is left out of both.

  Args:
    first: `[problems]` per-problem scores of one method (e.g. lowest_centroid, 1 or 0).
    second: `[problems]` scores of the other method on the same problems (e.g. pass@1, a
      fraction).
    samples: number of resamples.
    seed: seed of the resampling.
    level: coverage of the interval.

  Returns:
    {"difference": mean or None, "interval": [low, high] or None, "problems": count}.
  """
  _check_settings(samples, level)
  first = np.asarray(first, dtype=np.float64)
  second = np.asarray(second, dtype=np.float64)
  if first.ndim != 1 or first.shape != second.shape:
    raise ValueError(
        f"Paired scores must be two 1-D arrays over the same problems, got shapes "
        f"{first.shape} and {second.shape}.")
  both = ~np.isnan(first) & ~np.isnan(second)
  differences = _finite_values("differences", first[both] - second[both])
  if differences.size == 0:
    return {"difference": None, "interval": None, "problems": 0}
  interval = bootstrap_interval(differences, samples=samples, seed=seed, level=level)
  return {
      "difference": float(np.mean(differences)),
      "interval": list(interval),
      "problems": int(differences.size),
  }
