"""Scoring of `[trajectories, time]` entropies under many threshold settings in one jit.

sort valid entropies once ──► thresholds of every setting ──► one phase scan over all settings
──► centroids of every variant and phase mass, plus setting 0's phase list and per-token ids.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ec_jax.scoring import centroids as centroids_lib
from ec_jax.scoring import percentile
from ec_jax.scoring import phases as phases_lib
from ec_jax.scoring import settings as settings_lib


@dataclasses.dataclass(frozen=True)
class ScoringSpec:
  """Static scoring options (changing them recompiles).

  Attributes:
    max_phases: phases listed per trajectory for setting 0; counts and centroids stay exact.
    with_details: also build setting 0's phase list and `[rows, time]` phase ids.
    phase_masses: the phase masses (`length`, `entropy`) whose centroids are computed.
  """

  max_phases: int = settings_lib.DEFAULT_MAX_PHASES
  with_details: bool = True
  phase_masses: tuple[str, ...] = settings_lib.PHASE_MASSES

  def __post_init__(self):
    settings_lib.validate_max_phases(self.max_phases)
    unknown = set(self.phase_masses) - set(settings_lib.PHASE_MASSES)
    if unknown or not self.phase_masses:
      raise ValueError(f"phase_masses must be a non-empty subset of {settings_lib.PHASE_MASSES}, "
                       f"got {self.phase_masses!r}.")


class SettingsInputs(NamedTuple):
  """Traced threshold settings, each `[settings]`; quantiles are computed on the host."""

  high_quantile: np.ndarray  # (100 - top_percent) / 100, float64
  low_quantile: np.ndarray  # bottom_percent / 100, float64
  consecutive_low: np.ndarray  # int32


def settings_inputs(settings: Sequence[settings_lib.PhaseSetting]) -> SettingsInputs:
  """Return the traced inputs for `settings`; setting 0 gets the phase list and ids."""
  if len(settings) == 0:
    raise ValueError("At least one phase setting is needed.")
  top, bottom, low = settings_lib.settings_arrays(settings)
  # numpy's percentile receives 100 - top_percent and divides it by 100.
  return SettingsInputs(high_quantile=percentile.percent_to_quantile(100.0 - top),
                        low_quantile=percentile.percent_to_quantile(bottom),
                        consecutive_low=low)


class TrajectoryScores(NamedTuple):
  """Scores of each trajectory; `[rows, settings]` unless noted."""

  num_valid: jax.Array  # [rows] valid positions within the length
  num_nan: jax.Array  # [rows] positions marked valid whose entropy was NaN
  high_threshold: jax.Array
  low_threshold: jax.Array
  num_phases: jax.Array
  centroids: dict  # {phase_mass: {method: [rows, settings]}}, NaN where there is no centroid
  raw_entropy: jax.Array  # [rows] raw_entropy centroid (independent of the setting)
  center_numerator: jax.Array  # exact headline centroid with length mass, as integers
  center_denominator: jax.Array
  details: phases_lib.PhaseDetails | None  # setting 0 only


def clean_validity(entropies: jax.Array, valid: jax.Array, lengths: jax.Array
                   ) -> tuple[jax.Array, jax.Array]:
  """Return the effective validity (inside the length, not NaN) and `[rows]` NaN counts."""
  inside = jnp.arange(entropies.shape[1])[None, :] < lengths[:, None]
  marked = valid & inside
  is_nan = jnp.isnan(entropies)
  return marked & ~is_nan, jnp.sum(marked & is_nan, axis=1, dtype=jnp.int32)


def score_trajectories(entropies: jax.Array, valid: jax.Array, lengths: jax.Array,
                       settings: SettingsInputs, spec: ScoringSpec = ScoringSpec()
                       ) -> TrajectoryScores:
  """Score every trajectory under every setting.

  Args:
    entropies: `[rows, time]` float entropies (float64 under x64 for exact parity).
    valid: `[rows, time]` bool, entropy present; NaN entries are treated as invalid and counted.
    lengths: `[rows]` int lengths L (invalid positions included); positions >= L are ignored.
    settings: traced settings from `settings_inputs`.
    spec: static options.
  """
  entropies = jnp.asarray(entropies)
  real = jnp.promote_types(entropies.dtype, jnp.float32)
  entropies = entropies.astype(real)
  lengths = jnp.asarray(lengths, jnp.int32)
  valid, num_nan = clean_validity(entropies, jnp.asarray(valid, bool), lengths)

  sorted_values, count = percentile.sort_valid(entropies, valid)
  num_settings = settings.consecutive_low.shape[0]
  quantiles = jnp.concatenate([jnp.asarray(settings.high_quantile, real),
                               jnp.asarray(settings.low_quantile, real)])
  thresholds = percentile.percentile_from_sorted(sorted_values, count, quantiles)
  high, low = thresholds[:, :num_settings], thresholds[:, num_settings:]
  consecutive_low = jnp.asarray(settings.consecutive_low, jnp.int32)

  sums, events, open_phase = phases_lib.scan_phases(
      entropies, valid, high, low, consecutive_low, emit_events=spec.with_details,
      entropy_mass="entropy" in spec.phase_masses)
  centroids = {mass: centroids_lib.phase_centroids(sums, lengths, mass, real)
               for mass in spec.phase_masses}
  numerator, denominator = centroids_lib.exact_center_fraction(sums, lengths)
  details = None
  if spec.with_details:
    details = phases_lib.phase_details(events, open_phase, valid, consecutive_low[0],
                                       sums.num_phases[:, 0], spec.max_phases)
  return TrajectoryScores(
      num_valid=count, num_nan=num_nan, high_threshold=high, low_threshold=low,
      num_phases=sums.num_phases, centroids=centroids,
      raw_entropy=centroids_lib.raw_entropy_centroid(entropies, valid, lengths),
      center_numerator=numerator, center_denominator=denominator, details=details)


score_trajectories_jit = jax.jit(score_trajectories, static_argnames=("spec",))
