"""Property tests of the jitted scoring against the plain-Python oracle in scoring_oracle.py."""

import math

import hypothesis
import jax
import numpy as np
from hypothesis import strategies as st

import scoring_oracle
from ec_jax.scoring import pipeline
from ec_jax.scoring import settings as settings_lib

TIME = 5120  # fixed padded length, so the scoring compiles once
ROWS = 3
MAX_PHASES = 48
SPEC = pipeline.ScoringSpec(max_phases=MAX_PHASES)

percents = st.one_of(st.sampled_from([0.0, 1.0, 3.0, 5.0, 30.0, 50.0, 80.0, 99.0, 100.0]),
                     st.floats(0.0, 100.0))
phase_settings = st.builds(settings_lib.PhaseSetting, percents, percents, st.integers(1, 6))


@st.composite
def sequences(draw):
  """A sequence of entropies with None (missing) and NaN entries, of length 0 to 5,000."""
  if draw(st.booleans()):
    # Short, shrinkable sequences from a small alphabet: many ties and zeros.
    alphabet = st.sampled_from([0.0, 0.0, -0.0, 0.1, 0.1, 0.5, 1.0, 2.3, -1e-17, None, math.nan])
    return draw(st.lists(alphabet, max_size=60))
  length = draw(st.integers(0, 5000))
  seed = draw(st.integers(0, 2**32 - 1))
  style = draw(st.sampled_from(["continuous", "rounded", "equal", "sparse_zeros"]))
  rng = np.random.default_rng(seed)
  if style == "continuous":
    values = rng.exponential(0.5, length)
  elif style == "rounded":
    values = np.round(rng.exponential(0.5, length), 1)
  elif style == "equal":
    values = np.full(length, 0.7)
  else:
    values = np.where(rng.random(length) < 0.9, 0.0, rng.exponential(1.0, length))
  out = values.tolist()
  missing = rng.random(length) < draw(st.sampled_from([0.0, 0.01, 0.2]))
  nans = rng.random(length) < draw(st.sampled_from([0.0, 0.01]))
  for t in np.flatnonzero(missing):
    out[t] = None
  for t in np.flatnonzero(nans):
    out[t] = math.nan
  return out


def to_arrays(rows):
  entropies = np.zeros((ROWS, TIME))
  valid = np.zeros((ROWS, TIME), bool)
  for i, row in enumerate(rows):
    for t, value in enumerate(row):
      valid[i, t] = value is not None
      entropies[i, t] = math.nan if value is None else value
    # Padding past the length must be ignored even when marked valid.
    valid[i, len(row):] = True
    entropies[i, len(row):] = 9.0
  return entropies, valid, np.asarray([len(r) for r in rows], np.int32)


def flush_subnormal(value):
  """XLA's CPU backend flushes subnormal results to zero; numpy keeps them."""
  return 0.0 if abs(value) < np.finfo(np.float64).tiny else value


def check_close(got, expected, label):
  if expected is None:
    assert math.isnan(got), f"{label}: expected none, got {got}"
  else:
    assert abs(got - expected) <= 1e-12 * abs(expected), f"{label}: {got!r} != {expected!r}"


@hypothesis.settings(deadline=None, max_examples=60,
                     suppress_health_check=[hypothesis.HealthCheck.too_slow,
                                            hypothesis.HealthCheck.data_too_large])
@hypothesis.given(st.lists(sequences(), min_size=ROWS, max_size=ROWS),
                  st.lists(phase_settings, min_size=2, max_size=2))
def test_scoring_matches_oracle(rows, settings):
  entropies, valid, lengths = to_arrays(rows)
  with jax.enable_x64(True):
    scores = jax.device_get(pipeline.score_trajectories_jit(
        entropies, valid, lengths, pipeline.settings_inputs(settings), SPEC))
  for i, row in enumerate(rows):
    clean = [h for h in row if scoring_oracle.is_valid(h)]
    assert scores.num_valid[i] == len(clean)
    assert scores.num_nan[i] == sum(1 for h in row if h is not None and math.isnan(h))
    check_close(scores.raw_entropy[i], scoring_oracle.raw_entropy_centroid(row), f"row {i} raw")
    for j, setting in enumerate(settings):
      label = f"row {i} setting {setting.suffix}"
      expected = scoring_oracle.score(row, setting.top_percent, setting.bottom_percent,
                                      setting.consecutive_low)
      for key, percent in (("high_threshold", 100 - setting.top_percent),
                           ("low_threshold", setting.bottom_percent)):
        got = getattr(scores, key)[i, j]
        if clean:
          assert expected[key] == np.percentile(clean, percent), f"{label} {key} oracle"
          assert got == flush_subnormal(expected[key]), f"{label} {key}"
        else:
          assert math.isnan(got), label
      assert scores.num_phases[i, j] == len(expected["phases"]), label
      for method in ("weighted_average_center", "weighted_average", "moment"):
        check_close(scores.centroids["length"][method][i, j], expected[method],
                    f"{label} {method}")
      by_entropy = scoring_oracle.score(row, setting.top_percent, setting.bottom_percent,
                                        setting.consecutive_low, phase_mass="entropy")
      for method in ("weighted_average_center", "weighted_average", "moment"):
        got = scores.centroids["entropy"][method][i, j]
        want = by_entropy[method]
        if want is None:
          assert math.isnan(got), label
        else:
          assert abs(got - want) <= 1e-9 * abs(want), f"{label} entropy {method}"
      if j == 0:
        listed = expected["phases"][:MAX_PHASES]
        assert scores.details.phases[i, :len(listed)].tolist() == listed, label
        assert (scores.details.phases[i, len(listed):] == -1).all(), label
        assert scores.details.overflow[i] == max(0, len(expected["phases"]) - MAX_PHASES)
        ids = scores.details.phase_id[i]
        assert ids[:len(row)].tolist() == expected["phase_id"], label
        assert (ids[len(row):] == -1).all(), label
