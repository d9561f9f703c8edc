"""Per-trajectory confidence scores: the four DeepConf variants and two token means.

All functions take `[rows, time]` per-token values with `lengths [rows]` (positions t >= length
are padding) and an optional `valid [rows, time]` mask. A position is used when it lies below the
row's length, is valid, and contains a non-NaN value. Invalid positions are skipped: the tail and the
sliding windows run over the sequence of used tokens, as if the invalid positions were removed.
A row with no used token has no score and gets NaN, which every selection rule skips.

The functions are jit-friendly with static shapes. `window` and `tail` may be Python ints or
traced integer scalars, so changing them never recompiles. Sliding sums come from one prefix sum
per row, never from a `[rows, time, time]` array. Sums accumulate in float64 when x64 is enabled
and in float32 otherwise. Every sum over tokens comes from `sums`, so a row's scores are the same
bits whatever the number of rows and the padded width of the arrays it is scored in.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from ec_jax.scoring import float_keys
from ec_jax.scoring import percentile
from ec_jax.scoring import sums

# DeepConf's window and tail for long traces; configs for short traces set them smaller.
DEFAULT_WINDOW = 2048
DEFAULT_TAIL = 2048
# Share of the window means averaged by `deepconf_bottom10`, as a numerator over 10 so that
# ceil(windows / 10) is computed exactly in integers.
_BOTTOM_TENTHS = 1

DEEPCONF_METHODS = ("deepconf_tail", "deepconf_mean", "deepconf_lowest_window",
                    "deepconf_bottom10")


def accumulation_dtype() -> jnp.dtype:
  """Return float64 when x64 is enabled, else float32."""
  return jnp.dtype(jax.dtypes.canonicalize_dtype(jnp.float64))


def used_mask(values: jax.Array, lengths: jax.Array, valid: jax.Array | None = None) -> jax.Array:
  """Return `[rows, time]` bools: positions below the length, valid, and not NaN."""
  time = values.shape[-1]
  mask = jnp.arange(time)[None, :] < jnp.asarray(lengths)[:, None]
  if valid is not None:
    mask = mask & jnp.asarray(valid, bool)
  return mask & ~jnp.isnan(values)


def masked_mean(values: jax.Array, lengths: jax.Array,
                valid: jax.Array | None = None) -> jax.Array:
  """Return the mean of each row's used values, `[rows]`, NaN for a row with none."""
  dtype = accumulation_dtype()
  mask = used_mask(values, lengths, valid)
  total = sums.pairwise_sum(jnp.where(mask, values.astype(dtype), jnp.zeros((), dtype)))
  count = jnp.sum(mask, axis=-1, dtype=jnp.int32)
  return jnp.where(count > 0, total / jnp.maximum(count, 1).astype(dtype), jnp.nan)


def mean_entropy(entropies: jax.Array, lengths: jax.Array,
                 valid: jax.Array | None = None) -> jax.Array:
  """Return each trajectory's mean selection entropy, `[rows]`; `lowest_mean_entropy` picks the lowest."""
  return masked_mean(entropies, lengths, valid)


def mean_self_certainty(self_certainty: jax.Array, lengths: jax.Array,
                        valid: jax.Array | None = None) -> jax.Array:
  """Return each trajectory's mean self-certainty term, `[rows]`; `self_certainty` picks the highest."""
  return masked_mean(self_certainty, lengths, valid)


def _check_static_size(name: str, value) -> None:
  """Raise ValueError for a concrete window or tail below 1; traced values are not checked."""
  if isinstance(value, (int, np.integer)) and not isinstance(value, bool) and value < 1:
    raise ValueError(f"deepconf.{name} must be an integer >= 1 (tokens), got {value}.")
  if isinstance(value, bool):
    raise ValueError(f"deepconf.{name} must be an integer >= 1 (tokens), got {value!r}.")


def _compact(values: jax.Array, mask: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Move each row's used values to the front, in order, with zeros after them.

  Returns:
    `compact [rows, time]` in the accumulation dtype and `count [rows]` int32.
  """
  rows, time = values.shape
  rank = jnp.cumsum(mask, axis=-1, dtype=jnp.int32) - 1
  # Unused positions scatter to the out-of-range column `time`, which mode="drop" discards.
  target = jnp.where(mask, rank, time)
  row_index = jnp.broadcast_to(jnp.arange(rows)[:, None], (rows, time))
  dtype = accumulation_dtype()
  compact = jnp.zeros((rows, time), dtype).at[row_index, target].set(
      values.astype(dtype), mode="drop")
  return compact, jnp.sum(mask, axis=-1, dtype=jnp.int32)


def _prefix_sums(compact: jax.Array, count: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Return centred prefix sums `[rows, time + 1]` and the row means `[rows]` used to centre.

  Subtracting the row mean before the cumulative sum keeps the prefix sums small, so a window
  sum taken as a difference of two prefix sums loses less precision in float32.
  """
  dtype = compact.dtype
  time = compact.shape[-1]
  safe_count = jnp.maximum(count, 1).astype(dtype)
  mean = sums.pairwise_sum(compact) / safe_count
  inside = jnp.arange(time)[None, :] < count[:, None]
  centred = jnp.where(inside, compact - mean[:, None], jnp.zeros((), dtype))
  prefix = jnp.concatenate([jnp.zeros((compact.shape[0], 1), dtype),
                            sums.prefix_sum(centred)], axis=-1)
  return prefix, mean


def _window_means(prefix: jax.Array, mean: jax.Array, count: jax.Array,
                  window) -> tuple[jax.Array, jax.Array, jax.Array]:
  """Return the sliding-window means `[rows, time]`, which of them exist, and their number.

  The window size is min(window, count), so a row shorter than the window has one window: its
  plain mean. Entry e - 1 is the window that ends before compact position e.
  """
  dtype = prefix.dtype
  time = prefix.shape[-1] - 1
  size = jnp.minimum(jnp.maximum(jnp.asarray(window, jnp.int32), 1), count)
  safe_size = jnp.maximum(size, 1)
  stop = jnp.broadcast_to(jnp.arange(1, time + 1, dtype=jnp.int32)[None, :],
                          (prefix.shape[0], time))
  start = stop - safe_size[:, None]
  exists = (start >= 0) & (stop <= count[:, None])
  upper = jnp.take_along_axis(prefix, stop, axis=-1)
  lower = jnp.take_along_axis(prefix, jnp.maximum(start, 0), axis=-1)
  means = (upper - lower) / safe_size[:, None].astype(dtype) + mean[:, None]
  windows = jnp.where(count > 0, count - safe_size + 1, 0)
  return means, exists, windows


def _sum_of_smallest(values: jax.Array, exists: jax.Array, count: jax.Array) -> jax.Array:
  """Return the sum of the `count [rows]` smallest existing entries of each row.

  A bisection over the order-preserving integer keys finds the count-th smallest value in one
  pass per key bit, which avoids a full sort (XLA's CPU float sort is the slowest step here).
  Entries below that value are summed, and copies of the value make up the remaining count, so
  a tie at the threshold adds only as many copies as the count needs.
  """
  keys = float_keys.order_keys(jnp.where(exists, values, jnp.inf))
  bits = 8 * keys.dtype.itemsize

  def halve(_, bounds):
    low, high = bounds
    middle = low + ((high - low) >> 1)
    enough = jnp.sum(keys <= middle[:, None], axis=-1) >= count
    return jnp.where(enough, low, middle + 1), jnp.where(enough, middle, high)

  # Invariant: the count-th smallest key lies in [low, high].
  bounds = (jnp.min(keys, axis=-1), jnp.max(keys, axis=-1))
  _, threshold_key = jax.lax.fori_loop(0, bits, halve, bounds)
  below = keys < threshold_key[:, None]
  threshold = float_keys.from_order_keys(threshold_key, values.dtype)
  remainder = (count - jnp.sum(below, axis=-1)).astype(values.dtype)
  below_sum = sums.pairwise_sum(jnp.where(below, values, jnp.zeros((), values.dtype)))
  # The threshold is data (never a constant), so the product keeps its own rounding.
  return below_sum + percentile.rounded_product(remainder, threshold)


def deepconf_scores(confidence: jax.Array, lengths: jax.Array, valid: jax.Array | None = None,
                    *, window=DEFAULT_WINDOW, tail=DEFAULT_TAIL) -> dict[str, jax.Array]:
  """Compute the four DeepConf scores of each trajectory; the highest score wins in each.

  Args:
    confidence: `[rows, time]` per-token confidence (mean negative top-k log-probability).
    lengths: `[rows]` generated tokens per row; later positions are padding.
    valid: optional `[rows, time]` mask; invalid positions are skipped.
    window: sliding-window size in tokens (Python int or traced int scalar, at least 1).
    tail: number of final tokens averaged by `deepconf_tail` (Python int or traced, at least 1).

  Returns:
    A dict of `[rows]` arrays in the accumulation dtype, NaN for rows with no used token:
    `deepconf_tail` (mean of the last `tail` used tokens, all of them if fewer),
    `deepconf_mean` (mean of all used tokens),
    `deepconf_lowest_window` (lowest sliding-window mean, or the plain mean when the row is
    shorter than a window), and
    `deepconf_bottom10` (mean of the lowest ceil(10 %) of the window means, at least one).
  """
  _check_static_size("window", window)
  _check_static_size("tail", tail)
  confidence = jnp.asarray(confidence)
  if confidence.ndim != 2:
    raise ValueError(
        f"confidence must have shape [rows, time], got shape {confidence.shape}.")
  if confidence.shape[-1] == 0:
    # No positions: every row is empty and has no score.
    empty_scores = jnp.full(confidence.shape[:1], jnp.nan, accumulation_dtype())
    return {name: empty_scores for name in DEEPCONF_METHODS}
  mask = used_mask(confidence, lengths, valid)
  compact, count = _compact(confidence, mask)
  prefix, mean = _prefix_sums(compact, count)
  dtype = prefix.dtype
  empty = count == 0
  nan = jnp.asarray(jnp.nan, dtype)

  tail_size = jnp.maximum(jnp.minimum(jnp.maximum(jnp.asarray(tail, jnp.int32), 1), count), 1)
  tail_end = jnp.take_along_axis(prefix, count[:, None], axis=-1)[:, 0]
  tail_start = jnp.take_along_axis(prefix, jnp.maximum(count - tail_size, 0)[:, None],
                                   axis=-1)[:, 0]
  tail_mean = (tail_end - tail_start) / tail_size.astype(dtype) + mean

  means, exists, windows = _window_means(prefix, mean, count, window)
  lowest = jnp.min(jnp.where(exists, means, jnp.inf), axis=-1)
  # ceil(10 % of the windows) in integers: at least one, because a non-empty row has a window.
  bottom_count = (windows * _BOTTOM_TENTHS + 9) // 10
  bottom_sum = _sum_of_smallest(means, exists, bottom_count)
  bottom_mean = bottom_sum / jnp.maximum(bottom_count, 1).astype(dtype)

  return {
      "deepconf_tail": jnp.where(empty, nan, tail_mean),
      "deepconf_mean": jnp.where(empty, nan, mean),
      "deepconf_lowest_window": jnp.where(empty, nan, lowest),
      "deepconf_bottom10": jnp.where(empty, nan, bottom_mean),
  }
