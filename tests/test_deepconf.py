"""DeepConf scores and token means against a plain-Python oracle."""

import math

import hypothesis
from hypothesis import strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ec_jax.scoring import deepconf
from ec_jax.scoring import float_keys

ROWS = 5
TIME = 24


@jax.jit
def _scores_jit(confidence, lengths, valid, window, tail):
  """All four scores with window and tail traced, so one compilation serves every example."""
  return deepconf.deepconf_scores(confidence, lengths, valid, window=window, tail=tail)


_mean_entropy_jit = jax.jit(deepconf.mean_entropy)
_mean_self_certainty_jit = jax.jit(deepconf.mean_self_certainty)


def _used_tokens(values, length, valid_row):
  """Return the values the scores use: below the length, valid and not NaN, in order."""
  return [float(values[t]) for t in range(min(length, len(values)))
          if valid_row[t] and not math.isnan(values[t])]


def _oracle(values, length, valid_row, window, tail):
  """Return the four DeepConf scores of one row, computed from their definitions."""
  used = _used_tokens(values, length, valid_row)
  n = len(used)
  if n == 0:
    return {name: math.nan for name in deepconf.DEEPCONF_METHODS}
  size = min(window, n)
  window_means = [math.fsum(used[i:i + size]) / size for i in range(n - size + 1)]
  lowest_count = max(1, math.ceil(len(window_means) / 10))
  tail_tokens = used[-min(tail, n):]
  return {
      "deepconf_tail": math.fsum(tail_tokens) / len(tail_tokens),
      "deepconf_mean": math.fsum(used) / n,
      "deepconf_lowest_window": min(window_means),
      "deepconf_bottom10": math.fsum(sorted(window_means)[:lowest_count]) / lowest_count,
  }


def _assert_close(actual, expected, context):
  if math.isnan(expected):
    assert math.isnan(actual), context
  else:
    assert actual == pytest.approx(expected, rel=1e-10, abs=1e-10), context


@st.composite
def _confidence_tables(draw):
  """Tables with NaNs, invalid positions, ties, padding, empty rows and short rows."""
  values = draw(st.lists(
      st.one_of(st.sampled_from([0.5, 1.0, 2.0, math.nan]),
                st.floats(0.0, 20.0, allow_nan=False)),
      min_size=ROWS * TIME, max_size=ROWS * TIME))
  lengths = draw(st.lists(st.integers(0, TIME), min_size=ROWS, max_size=ROWS))
  valid = draw(st.lists(st.sampled_from([True, True, True, False]),
                        min_size=ROWS * TIME, max_size=ROWS * TIME))
  window = draw(st.integers(1, TIME + 3))
  tail = draw(st.integers(1, TIME + 3))
  return (np.array(values).reshape(ROWS, TIME), np.array(lengths),
          np.array(valid).reshape(ROWS, TIME), window, tail)


@hypothesis.settings(deadline=None, max_examples=80)
@hypothesis.given(_confidence_tables())
def test_deepconf_matches_oracle(table):
  values, lengths, valid, window, tail = table
  with jax.enable_x64(True):
    scores = _scores_jit(values, lengths, valid, window, tail)
    scores = {name: np.asarray(array) for name, array in scores.items()}
  assert set(scores) == set(deepconf.DEEPCONF_METHODS)
  for row in range(ROWS):
    expected = _oracle(values[row], lengths[row], valid[row], window, tail)
    for name in deepconf.DEEPCONF_METHODS:
      _assert_close(float(scores[name][row]), expected[name],
                    f"{name} row {row} window {window} tail {tail}")


@hypothesis.settings(deadline=None, max_examples=40)
@hypothesis.given(_confidence_tables())
def test_token_means_match_oracle(table):
  values, lengths, valid, _, _ = table
  with jax.enable_x64(True):
    entropy = np.asarray(_mean_entropy_jit(values, lengths, valid))
    certainty = np.asarray(_mean_self_certainty_jit(-values, lengths, valid))
  for row in range(ROWS):
    used = _used_tokens(values[row], lengths[row], valid[row])
    expected = math.fsum(used) / len(used) if used else math.nan
    _assert_close(float(entropy[row]), expected, f"mean entropy row {row}")
    _assert_close(float(certainty[row]), -expected, f"mean self-certainty row {row}")


def test_deepconf_without_valid_mask():
  values = np.array([[3.0, 1.0, 2.0, 5.0, 4.0, 9.0]])
  scores = deepconf.deepconf_scores(values, np.array([5]), window=2, tail=3)
  assert float(scores["deepconf_mean"][0]) == pytest.approx(3.0)
  assert float(scores["deepconf_tail"][0]) == pytest.approx((2.0 + 5.0 + 4.0) / 3)
  # Window means: 2.0, 1.5, 3.5, 4.5; one window is ceil(10 %) of four.
  assert float(scores["deepconf_lowest_window"][0]) == pytest.approx(1.5)
  assert float(scores["deepconf_bottom10"][0]) == pytest.approx(1.5)


def test_deepconf_skips_invalid_positions_inside_windows():
  values = np.array([[1.0, 100.0, 1.0, 3.0, 3.0]])
  valid = np.array([[True, False, True, True, True]])
  scores = deepconf.deepconf_scores(values, np.array([5]), valid, window=2, tail=2)
  # The used tokens are 1, 1, 3, 3, so the first window is (1, 1), not (1, 100).
  assert float(scores["deepconf_lowest_window"][0]) == pytest.approx(1.0)
  assert float(scores["deepconf_tail"][0]) == pytest.approx(3.0)
  assert float(scores["deepconf_mean"][0]) == pytest.approx(2.0)


def test_deepconf_empty_row_is_nan():
  values = np.array([[1.0, 2.0], [math.nan, math.nan]])
  scores = deepconf.deepconf_scores(values, np.array([0, 2]), window=2, tail=2)
  for name in deepconf.DEEPCONF_METHODS:
    assert np.all(np.isnan(np.asarray(scores[name]))), name


def test_deepconf_bottom10_averages_lowest_tenth():
  # 21 tokens, window 1: 21 window means, ceil(2.1) = 3 of them are averaged.
  values = np.arange(21, dtype=np.float64)[::-1][None, :]
  with jax.enable_x64(True):
    scores = deepconf.deepconf_scores(values, np.array([21]), window=1, tail=1)
    assert float(scores["deepconf_bottom10"][0]) == pytest.approx(1.0)
    assert float(scores["deepconf_tail"][0]) == pytest.approx(0.0)


def test_deepconf_float32_long_rows_stay_accurate():
  # 4096 tokens around 15 with a small window: prefix-sum cancellation would show here.
  rng = np.random.default_rng(0)
  values = (15 + rng.standard_normal((2, 4096))).astype(np.float32)
  lengths = np.array([4096, 3000])
  scores = jax.jit(lambda x, n: deepconf.deepconf_scores(x, n, window=16, tail=64))(
      values, lengths)
  assert scores["deepconf_lowest_window"].dtype == jnp.float32
  for row in range(2):
    used = values[row, :lengths[row]].astype(np.float64)
    windows = np.convolve(used, np.ones(16) / 16, mode="valid")
    assert float(scores["deepconf_lowest_window"][row]) == pytest.approx(windows.min(), abs=1e-4)
    assert float(scores["deepconf_tail"][row]) == pytest.approx(used[-64:].mean(), abs=1e-4)


@pytest.mark.parametrize("name,kwargs", [("window", {"window": 0}), ("tail", {"tail": -1}),
                                         ("window", {"window": True})])
def test_deepconf_rejects_bad_sizes(name, kwargs):
  with pytest.raises(ValueError, match=f"deepconf.{name}"):
    deepconf.deepconf_scores(np.ones((1, 4)), np.array([4]), **kwargs)


def test_deepconf_rejects_wrong_rank():
  with pytest.raises(ValueError, match="rows, time"):
    deepconf.deepconf_scores(np.ones(4), np.array([4]))


@pytest.mark.parametrize("dtype,x64", [(np.float32, False), (np.float64, True)])
def test_order_keys_sort_like_floats(dtype, x64):
  values = np.array([-np.inf, -3.5, -1e-30, -0.0, 0.0, 1e-30, 0.25, 7.0, np.inf], dtype=dtype)
  with jax.enable_x64(x64):
    keys = np.asarray(float_keys.order_keys(jnp.asarray(values)))
    restored = np.asarray(float_keys.from_order_keys(jnp.asarray(keys), jnp.dtype(dtype)))
  assert keys.dtype.itemsize == np.dtype(dtype).itemsize
  assert np.all(keys[1:] > keys[:-1])
  assert restored.tobytes() == values.tobytes()


def test_deepconf_zero_time_is_nan():
  scores = deepconf.deepconf_scores(np.zeros((2, 0)), np.array([0, 0]), window=4, tail=4)
  for name in deepconf.DEEPCONF_METHODS:
    assert np.asarray(scores[name]).shape == (2,), name
    assert np.all(np.isnan(np.asarray(scores[name]))), name
  assert np.all(np.isnan(np.asarray(deepconf.mean_entropy(np.zeros((2, 0)), np.array([0, 0])))))
