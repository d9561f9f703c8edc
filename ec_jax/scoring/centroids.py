"""Entropy centroids from phase sums: the four variants and the two phase masses.

With phase n starting at s_n with duration d_n, mass m_n and position p_n = s_n + d_n / 2, and L
the trajectory's length (invalid positions included):

  weighted_average_center  C = (sum m_n p_n) / (sum m_n) / L      (the headline, in [0, 1])
  weighted_average         p_n = s_n instead
  moment                   (sum m_n s_n) / L                       (not bounded by 1)
  raw_entropy              (sum_t H_t t) / (sum_t H_t) / L over valid tokens, no phases

The mass is d_n (`length`) or the summed entropy of the phase's valid tokens (`entropy`). A
trajectory with no phase, a total mass that is not positive (possible with the entropy mass when
rounding leaves entropies at or below zero), or L = 0 has no centroid: NaN here.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from ec_jax.scoring import percentile
from ec_jax.scoring import sums
from ec_jax.scoring.phases import PhaseSums


def _divide_or_nan(numerator: jax.Array, denominator: jax.Array, has: jax.Array) -> jax.Array:
  safe = jnp.where(has, denominator, jnp.ones_like(denominator))
  return jnp.where(has, numerator / safe, jnp.asarray(jnp.nan, numerator.dtype))


def phase_centroids(sums: PhaseSums, lengths: jax.Array, phase_mass: str,
                    real_dtype: jnp.dtype) -> dict[str, jax.Array]:
  """Return the three phase-based centroids, each `[rows, settings]` (NaN: no centroid).

  Args:
    sums: from `scan_phases`.
    lengths: `[rows]` int lengths L.
    phase_mass: static, `length` or `entropy`.
    real_dtype: float dtype of the results.
  """
  length = lengths.astype(real_dtype)[:, None]
  if phase_mass == "length":
    mass = sums.length_mass.astype(real_dtype)
    # The headline centroid is the exact rational sum d(2s + d) / (2 sum d L): one rounding.
    center = sums.length_center.astype(real_dtype) / jnp.asarray(2, real_dtype)
    start = sums.length_start.astype(real_dtype)
  elif phase_mass == "entropy":
    mass = sums.entropy_mass.astype(real_dtype)
    center = sums.entropy_center.astype(real_dtype)
    start = sums.entropy_start.astype(real_dtype)
  else:
    raise ValueError(f"phase_mass must be 'length' or 'entropy', got {phase_mass!r}.")
  has = (sums.num_phases > 0) & (length > 0) & (mass > 0)
  return {
      "weighted_average_center": _divide_or_nan(center, mass * length, has),
      "weighted_average": _divide_or_nan(start, mass * length, has),
      "moment": _divide_or_nan(start, length, has),
  }


def raw_entropy_centroid(entropies: jax.Array, valid: jax.Array, lengths: jax.Array) -> jax.Array:
  """Return `[rows]` sum_t H_t t / sum_t H_t / L over valid positions (NaN when sum H = 0).

  The sums come from `sums.pairwise_sum`, so a row's result does not depend on the array's shape.
  """
  real = entropies.dtype
  h = jnp.where(valid, entropies, jnp.zeros((), real))
  positions = jnp.arange(entropies.shape[1], dtype=real)
  total = sums.pairwise_sum(h)
  # `rounded_product` keeps its guard only while its second operand can be NaN. Positions are
  # integers converted to floats, which LLVM knows are never NaN, so h goes second.
  moment = sums.pairwise_sum(percentile.rounded_product(positions, h))
  length = lengths.astype(real)
  return _divide_or_nan(moment, total * length, (total != 0) & (length > 0))


def exact_center_fraction(sums: PhaseSums, lengths: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Return the length-mass headline centroid as integers: C = numerator / (2 * denominator).

  numerator = sum d (2s + d) and denominator = sum d * L, each `[rows, settings]` in the sums'
  unsigned or 64-bit dtype, both below T**2. The pair orders trajectories exactly as C does, for
  tie-breaking where the float centroids may round differently.
  """
  dtype = sums.length_center.dtype
  denominator = sums.length_mass.astype(dtype) * lengths.astype(dtype)[:, None]
  return sums.length_center, denominator
