"""A plain-Python oracle of the Entropy Centroid method, written from its specification.

It uses Python floats and lists only, one trajectory at a time, so it shares no code with the
JAX implementation. An entropy of None is a missing value; NaN is treated the same way.
"""

from __future__ import annotations

import math


def is_valid(value) -> bool:
  return value is not None and not math.isnan(value)


def percentile(values: list[float], percent: float) -> float | None:
  """numpy's default ("linear") percentile, with its exact order of operations."""
  if not values:
    return None
  ordered = sorted(values)
  n = len(ordered)
  quantile = percent / 100
  virtual = (n - 1) * quantile
  if virtual >= n - 1:
    return ordered[-1]
  below = math.floor(virtual)
  gamma = virtual - below
  a, b = ordered[below], ordered[below + 1]
  difference = b - a
  if gamma >= 0.5:
    return b - difference * (1 - gamma)
  return a + difference * gamma


def thresholds(entropies, top_percent, bottom_percent):
  values = [h for h in entropies if is_valid(h)]
  return percentile(values, 100 - top_percent), percentile(values, bottom_percent)


def find_phases(entropies, high, low, consecutive_low):
  """Return the phases as (start, duration, summed entropy) and the per-position phase ids."""
  length = len(entropies)
  phases = []
  ids = [-1] * length
  if high is None:
    return phases, ids
  inside = False
  start = duration = run = 0
  members = []  # positions of the current phase's tokens (valid members and invalid between)
  pending = []  # positions seen since the last member: the current low run and invalid ones
  for t, h in enumerate(entropies):
    if not is_valid(h):
      if inside:
        pending.append(t)
      continue
    if not inside:
      if h >= high:
        inside, start, duration, run = True, t, 1, 0
        members, pending = [t], []
      continue
    duration += 1
    if h <= low:
      run += 1
      pending.append(t)
    else:
      run = 0
      members.extend(pending)
      members.append(t)
      pending = []
    if run == consecutive_low:
      _record(phases, ids, start, duration - consecutive_low, members, entropies)
      inside = False
  if inside:
    # The open phase keeps its trailing low tokens; invalid ones after the last valid stay out.
    last_valid = max([t for t in pending if is_valid(entropies[t])] or [members[-1]])
    members.extend(t for t in pending if t <= last_valid)
    _record(phases, ids, start, duration, members, entropies)
  return phases, ids


def _record(phases, ids, start, duration, members, entropies):
  number = len(phases)
  mass = 0.0
  for t in members:
    ids[t] = number
    if is_valid(entropies[t]):
      mass += entropies[t]
  phases.append((start, duration, mass))


def centroid(phases, length, method, phase_mass="length"):
  """Return one phase-based centroid, or None when there is none."""
  if not phases or length == 0:
    return None
  masses = [d if phase_mass == "length" else e for _, d, e in phases]
  total = sum(masses)
  if total <= 0:  # possible with the entropy mass when rounding leaves entropies at or below 0
    return None
  if method == "weighted_average_center":
    return sum(m * (s + d / 2) for m, (s, d, _) in zip(masses, phases)) / total / length
  if method == "weighted_average":
    return sum(m * s for m, (s, _, _) in zip(masses, phases)) / total / length
  if method == "moment":
    return sum(m * s for m, (s, _, _) in zip(masses, phases)) / length
  raise ValueError(method)


def raw_entropy_centroid(entropies):
  length = len(entropies)
  total = sum(h for h in entropies if is_valid(h))
  if total == 0 or length == 0:
    return None
  return sum(h * t for t, h in enumerate(entropies) if is_valid(h)) / total / length


def score(entropies, top_percent, bottom_percent, consecutive_low, phase_mass="length"):
  """Score one trajectory under one setting, as a dict of plain values."""
  high, low = thresholds(entropies, top_percent, bottom_percent)
  phases, ids = find_phases(entropies, high, low, consecutive_low)
  result = {
      "high_threshold": high,
      "low_threshold": low,
      "phases": [[s, d] for s, d, _ in phases],
      "phase_id": ids,
      "raw_entropy": raw_entropy_centroid(entropies),
  }
  for method in ("weighted_average_center", "weighted_average", "moment"):
    result[method] = centroid(phases, len(entropies), method, phase_mass)
  return result
