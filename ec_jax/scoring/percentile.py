"""Per-row percentiles of the valid entries, bit-identical to numpy's default ("linear") method.

`jnp.percentile` interpolates with a different expression and can differ from numpy in the last
bit, which flips inclusive comparisons against the threshold. This module reproduces numpy's
arithmetic step by step instead. With x64 enabled the results equal `np.percentile` exactly,
except where numpy's result is subnormal (below 2.2e-308 in float64): XLA's CPU backend flushes
subnormal values to zero, so such a threshold comes out as 0.0. Only a percentage below about
1e-290 or entropies below about 1e-290 can lead there.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from ec_jax.scoring import float_keys


def rounded_product(x: jax.Array, y: jax.Array) -> jax.Array:
  """Return x * y rounded to the dtype before any later addition.

  XLA's CPU backend contracts a multiply feeding an add into one fused multiply-add, which skips
  the product's rounding and changes the last bit compared with numpy. Whether it does depends on
  the fusion it picks for the array's shape. A select between the product and `y` keeps the
  multiply and the add apart. Its condition `y == y` is false only where `y` is NaN, and there
  both branches are NaN anyway.

  The guard holds only while `y` can be NaN at run time. Where the compiler can prove that `y` is
  never NaN, it folds the condition and removes the select: XLA does so for a constant `y`, and
  LLVM for an integer converted to a float, such as `jnp.arange(n, dtype=float)`. Pass the data
  operand (an entropy, a sorted value, a quantile given as a jit argument) as `y`, and a constant
  or integer-valued operand as `x`.
  """
  return jnp.where(y == y, x * y, y)


def sort_valid(values: jax.Array, valid: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Sort each row's valid entries to the front.

  Args:
    values: `[rows, time]` float32 or float64, no NaN at valid positions.
    valid: `[rows, time]` bools; invalid entries are ignored.

  Returns:
    `sorted_values [rows, time]` (valid entries ascending, then +inf) and `count [rows]` int32.
  """
  # NOTE: a full sort per row, although only two order statistics per quantile are needed.
  # Sorting the integer keys measured faster on CPU than the exact selection schemes tried;
  # BENCHMARKS.md records its share of the scoring time.
  padded = jnp.where(valid, values, jnp.asarray(jnp.inf, values.dtype))
  keys = lax.sort(float_keys.order_keys(padded), dimension=1, is_stable=False)
  sorted_values = float_keys.from_order_keys(keys, values.dtype)
  return sorted_values, jnp.sum(valid, axis=-1, dtype=jnp.int32)


def percent_to_quantile(percent) -> np.ndarray:
  """Return numpy's quantile `percent / 100` in float64, computed on the host.

  The division happens outside compiled code on purpose: XLA may rewrite a division by a
  constant into a multiplication by its reciprocal, which differs from numpy in the last bit.
  """
  return np.true_divide(np.asarray(percent, dtype=np.float64), 100)


def percentile_from_sorted(sorted_values: jax.Array, count: jax.Array,
                           quantile: jax.Array) -> jax.Array:
  """Return numpy's linear percentile of each row's first `count` sorted values.

  Args:
    sorted_values: `[rows, time]`, each row ascending in its first `count` entries.
    count: `[rows]` number of valid values per row.
    quantile: `[rows, q]` or `[q]` quantiles in [0, 1], from `percent_to_quantile`. Pass them as a
      jit argument: a constant inside the jitted function lets XLA drop the `rounded_product`
      guard on (count - 1) * quantile.

  Returns:
    `[rows, q]` percentiles in the dtype of `sorted_values`; NaN for rows with no valid value.
  """
  dtype = sorted_values.dtype
  quantile = jnp.asarray(quantile, dtype)
  quantile = jnp.broadcast_to(quantile, count.shape + quantile.shape[-1:])
  # numpy's virtual index (n - 1) * q and its neighbours.
  last = (count - 1)[:, None]
  virtual = rounded_product(last.astype(dtype), quantile)
  below = jnp.floor(virtual)
  gamma = virtual - below
  # At or beyond the last index numpy takes the maximum for both neighbours.
  at_end = virtual >= last.astype(dtype)
  lower_index = jnp.where(at_end, last, below.astype(jnp.int32))
  upper_index = jnp.where(at_end, last, lower_index + 1)
  lower_index = jnp.clip(lower_index, 0, sorted_values.shape[-1] - 1)
  upper_index = jnp.clip(upper_index, 0, sorted_values.shape[-1] - 1)
  lower = jnp.take_along_axis(sorted_values, lower_index, axis=-1)
  upper = jnp.take_along_axis(sorted_values, upper_index, axis=-1)
  # numpy's _lerp: a + (b - a) * g, or b - (b - a) * (1 - g) where g >= 0.5.
  difference = upper - lower
  from_lower = lower + rounded_product(difference, gamma)
  from_upper = upper - rounded_product(difference, jnp.asarray(1, dtype) - gamma)
  result = jnp.where(gamma >= 0.5, from_upper, from_lower)
  return jnp.where(count[:, None] > 0, result, jnp.asarray(jnp.nan, dtype))


def masked_percentile(values: jax.Array, valid: jax.Array, quantile: jax.Array) -> jax.Array:
  """Return `[rows, q]` numpy-linear quantiles of the valid entries of `values [rows, time]`."""
  sorted_values, count = sort_valid(values, valid)
  return percentile_from_sorted(sorted_values, count, quantile)
