"""Selection of one trajectory per problem among N, and the accuracy of every method.

Tables are `[problems, N]` with a `present [problems, N]` mask, because a problem may have fewer
than N trajectories. A selection is a trajectory index per problem, or -1 when the method leaves
the problem unanswered (which counts as wrong).

Two layers share one set of rules:

- JAX (`select_lowest`, `select_highest`, `select_lowest_centroid_delta`): usable inside jit,
  computing in float64 when x64 is enabled.
- Host (numpy and Python, in `host_selection.py` and re-exported here): the same three rules with
  a `_host` suffix, the answer votes, the seeded random pick, pass@k, the choice of delta by
  cross-validation or on the labels, and `evaluate_methods`, which scores every method of a run
  on the same problems. Code that must not import JAX (reports) imports `host_selection`.

With x64 enabled the JAX and host rules return the same indices, because both sum the centroids
for the mean in trajectory order, in float64.

Exact ties. The headline centroid is an exact rational with integer numerator and
denominator. float32 (and, rarely, float64) rounding can turn equal rationals into different
floats or different rationals into equal floats, which moves the lowest-index tie-break. The
centroid rules accept `exact_key=(numerator, denominator)`: two non-negative integer
`[problems, N]` arrays whose ratio orders the trajectories exactly as the centroids do (the
centroid itself or any fixed positive multiple of it), with denominator > 0 where a centroid
exists. Given it, the rules order trajectories by comparing cross-multiplied integers, never by
rounded floats. The key only orders: the mean and the comparison with delta still use the float
centroids.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from ec_jax.scoring.host_selection import *  # noqa: F401,F403  (re-exported host rules)
from ec_jax.scoring.host_selection import (  # noqa: F401  (names used below and private ones)
    CENTROID_SELECTION_METHODS, DEFAULT_CENTROID_VOTE_FRACTION, DEFAULT_CV_FOLDS, DEFAULT_CV_SEED,
    DEFAULT_DELTA, DELTA_GRID, HostExactKey, SCORE_METHOD_DIRECTIONS, VOTE_METHODS,
    _check_delta, _pass_k_below, method_names)

ExactKey = tuple[jax.Array, jax.Array]


# ---------------------------------------------------------------------------------------------
# JAX rules.


def _widest_float() -> jnp.dtype:
  """Return float64 when x64 is enabled, else float32."""
  return jnp.dtype(jax.dtypes.canonicalize_dtype(jnp.float64))


def _wide_product(a: jax.Array, b: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Return the exact product of non-negative integers as (high, low) unsigned words.

  The operands are split into half-width limbs, so an int32 (int64) product is exact in two
  uint32 (uint64) words without needing a wider type.
  """
  bits = 8 * a.dtype.itemsize
  unsigned = jnp.uint64 if bits == 64 else jnp.uint32
  half = bits // 2
  mask = unsigned((1 << half) - 1)
  shift = unsigned(half)
  a = a.astype(unsigned)
  b = b.astype(unsigned)
  a_low, a_high = a & mask, a >> shift
  b_low, b_high = b & mask, b >> shift
  cross_1 = a_high * b_low
  cross_2 = a_low * b_high
  low_1 = a_low * b_low
  low_2 = low_1 + ((cross_1 & mask) << shift)
  low_3 = low_2 + ((cross_2 & mask) << shift)
  carries = (low_2 < low_1).astype(unsigned) + (low_3 < low_2).astype(unsigned)
  high = a_high * b_high + (cross_1 >> shift) + (cross_2 >> shift) + carries
  return high, low_3


def _rational_less(num_a, den_a, num_b, den_b) -> jax.Array:
  """Return num_a / den_a < num_b / den_b exactly, for num >= 0 and den > 0."""
  high_a, low_a = _wide_product(num_a, den_b)
  high_b, low_b = _wide_product(num_b, den_a)
  return (high_a < high_b) | ((high_a == high_b) & (low_a < low_b))


def _exact_key_arrays(exact_key: ExactKey, shape: tuple[int, ...]) -> tuple[jax.Array, jax.Array]:
  """Return numerator and denominator as one integer dtype, checking their shapes."""
  if len(exact_key) != 2:
    raise ValueError(
        f"exact_key must be a (numerator, denominator) pair, got {len(exact_key)} items.")
  numerator, denominator = (jnp.asarray(x) for x in exact_key)
  for name, array in (("numerator", numerator), ("denominator", denominator)):
    if array.shape != shape:
      raise ValueError(
          f"exact_key {name} must have the table's shape {shape}, got {array.shape}.")
    if not jnp.issubdtype(array.dtype, jnp.integer):
      raise ValueError(f"exact_key {name} must be integers, got dtype {array.dtype}.")
  dtype = jnp.promote_types(numerator.dtype, denominator.dtype)
  return numerator.astype(dtype), denominator.astype(dtype)


def _exact_argmin(candidates: jax.Array, numerator: jax.Array,
                  denominator: jax.Array) -> jax.Array:
  """Return the first candidate with the smallest numerator / denominator per row, else -1."""
  problems = candidates.shape[0]

  def step(carry, column):
    best, best_num, best_den = carry
    index, candidate, num, den = column
    better = candidate & ((best < 0) | _rational_less(num, den, best_num, best_den))
    carry = (jnp.where(better, index, best), jnp.where(better, num, best_num),
             jnp.where(better, den, best_den))
    return carry, None

  init = (jnp.full((problems,), -1, jnp.int32), jnp.zeros((problems,), numerator.dtype),
          jnp.ones((problems,), denominator.dtype))
  columns = (jnp.arange(candidates.shape[1], dtype=jnp.int32), candidates.T, numerator.T,
             denominator.T)
  (best, _, _), _ = jax.lax.scan(step, init, columns)
  return best


def _float_argmin(values: jax.Array, candidates: jax.Array) -> jax.Array:
  """Return the first candidate with the smallest value per row, else -1."""
  index = jnp.argmin(jnp.where(candidates, values, jnp.inf), axis=-1).astype(jnp.int32)
  return jnp.where(jnp.any(candidates, axis=-1), index, -1)


def _check_table(name: str, table, present) -> None:
  """Raise ValueError unless both are `[problems, N]` with the same shape."""
  if jnp.ndim(table) != 2 or jnp.shape(table) != jnp.shape(present):
    raise ValueError(
        f"{name} and present must both have shape [problems, N], got {jnp.shape(table)} and "
        f"{jnp.shape(present)}.")
  if jnp.shape(table)[1] == 0:
    raise ValueError(f"{name} has N = 0 trajectory columns; selection needs N >= 1.")


def select_lowest(scores: jax.Array, present: jax.Array,
                  exact_key: ExactKey | None = None) -> jax.Array:
  """Select per problem the present trajectory with the lowest finite score.

  Args:
    scores: `[problems, N]` floats; NaN or infinite means no score.
    present: `[problems, N]` bools.
    exact_key: optional `(numerator, denominator)` integer `[problems, N]` arrays whose ratio
      orders the trajectories (see module docstring). Given it, a trajectory also needs
      denominator > 0, and the order is that of numerator / denominator, compared exactly.

  Returns:
    `[problems]` int32: the index, the lowest on ties, or -1 when no trajectory qualifies.

  NOTE: XLA on CPU flushes subnormal floats to zero, so a subnormal score ties with 0 here but
  not in the host rule. Centroids and confidence scores are never that small.
  """
  _check_table("scores", scores, present)
  scores = jnp.asarray(scores)
  candidates = jnp.asarray(present, bool) & jnp.isfinite(scores)
  if exact_key is None:
    return _float_argmin(scores, candidates)
  numerator, denominator = _exact_key_arrays(exact_key, scores.shape)
  return _exact_argmin(candidates & (denominator > 0), numerator, denominator)


def select_highest(scores: jax.Array, present: jax.Array) -> jax.Array:
  """Select per problem the present trajectory with the highest finite score.

  Returns:
    `[problems]` int32: the index, the lowest on ties, or -1 when no trajectory qualifies.
  """
  _check_table("scores", scores, present)
  scores = jnp.asarray(scores)
  candidates = jnp.asarray(present, bool) & jnp.isfinite(scores)
  return _float_argmin(-scores, candidates)




def select_lowest_centroid_delta(centroids: jax.Array, present: jax.Array, delta,
                                 exact_key: ExactKey | None = None) -> jax.Array:
  """Select the lowest centroid among those at most `delta` below the problem's mean centroid.

  The mean is over the trajectories that have a centroid, summed in trajectory order in the
  widest float (float64 under x64). Trajectories with mean - C <= delta are kept and the lowest
  kept centroid wins, the lowest index on ties. A problem with exactly one centroid selects it.

  Args:
    centroids: `[problems, N]` floats; NaN means no centroid.
    present: `[problems, N]` bools.
    delta: a float >= 0, concrete or traced.
    exact_key: optional exact ordering key of the centroids (see module docstring). Given it,
      a trajectory also needs denominator > 0, and the kept trajectories are ordered exactly.

  Returns:
    `[problems]` int32: the selected index or -1.
  """
  _check_table("centroids", centroids, present)
  _check_delta(delta)
  dtype = _widest_float()
  centroids = jnp.asarray(centroids)
  candidates = jnp.asarray(present, bool) & jnp.isfinite(centroids)
  values = centroids.astype(dtype)
  if exact_key is not None:
    numerator, denominator = _exact_key_arrays(exact_key, centroids.shape)
    candidates = candidates & (denominator > 0)

  # A sequential sum fixes the order of additions, so the host rule reproduces it bit for bit.
  def add(total, column):
    candidate, value = column
    return total + jnp.where(candidate, value, jnp.zeros((), dtype)), None

  total, _ = jax.lax.scan(add, jnp.zeros(centroids.shape[0], dtype), (candidates.T, values.T))
  count = jnp.sum(candidates, axis=-1)
  mean = total / jnp.maximum(count, 1).astype(dtype)
  kept = candidates & ((mean[:, None] - values) <= jnp.asarray(delta, dtype))
  kept = jnp.where((count == 1)[:, None], candidates, kept)
  if exact_key is None:
    return _float_argmin(values, kept)
  return _exact_argmin(kept, numerator, denominator)
