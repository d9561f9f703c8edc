"""Sums and prefix sums along the last axis whose rounding does not depend on the array's shape.

XLA's reductions (`jnp.sum`, `jnp.cumsum`) choose their order of additions from the whole
array's shape, so the same trajectory summed inside a `[4, 512]` chunk and inside a `[16, 256]`
chunk can differ in the last bit. The functions here fix the order instead. They are built from
elementwise additions, which XLA rounds one by one, so entry i of a row depends only on that row's
values, never on the number of rows or on zeros padded after the row's values.

Guarantee (tested in tests/test_scoring_sums.py): a row embedded in arrays of other row counts and
padded with zeros to other widths gives bit-identical sums and prefix sums. A sum that is zero is
returned as +0.0, so the sign of a zero does not depend on the padding either.

Values that are products must be rounded before they are summed (`percentile.rounded_product`),
because XLA's CPU backend may fuse a multiplication and the first addition into one fused
multiply-add, and whether it does depends on the fusion it picks for the shape.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def _positive_zero(values: jax.Array) -> jax.Array:
  """Return `values` with -0.0 replaced by +0.0.

  Padding adds +0.0 to some sums and not to others, and -0.0 + 0.0 is +0.0, so a zero would
  otherwise keep the sign of -0.0 only in some shapes.
  """
  return jnp.where(values == 0, jnp.zeros((), values.dtype), values)


def pairwise_sum(values: jax.Array) -> jax.Array:
  """Sum the last axis as a balanced binary tree of additions: `[..., n]` -> `[...]`.

  Level l adds the sums of aligned blocks of 2**l entries, pairing neighbours. A block without a
  partner at the end is carried up unchanged, which equals adding the zero sum of the missing
  block. The result is therefore the tree sum of the row padded with zeros to any width, and it
  keeps the O(log n) rounding-error growth of pairwise summation. An empty axis gives zeros.
  """
  if values.shape[-1] == 0:
    return jnp.zeros(values.shape[:-1], values.dtype)
  while values.shape[-1] > 1:
    size = values.shape[-1]
    paired = values[..., 0:size - 1:2] + values[..., 1:size:2]
    if size % 2:
      paired = jnp.concatenate([paired, values[..., size - 1:]], axis=-1)
    values = paired
  return _positive_zero(values[..., 0])


# Entries per block in `prefix_sum`. With 16 it measured about as fast as `jnp.cumsum` on a 2-core
# x86 CPU (jax 0.10.2), and 8 was slower.
PREFIX_BLOCK = 16


def _running_sum(values: jax.Array) -> jax.Array:
  """Return inclusive prefix sums of a short last axis, added strictly from left to right."""
  columns = [values[..., 0]]
  for index in range(1, values.shape[-1]):
    columns.append(columns[-1] + values[..., index])
  return jnp.stack(columns, axis=-1)


def _blocked_prefix_sum(values: jax.Array) -> jax.Array:
  """Return inclusive prefix sums of the last axis, before the sign of zeros is fixed.

  The axis is cut into blocks of PREFIX_BLOCK entries (zeros pad the last block). Each block is
  summed from left to right, and each entry then adds the prefix sum of the totals of the blocks
  before its own, computed by the same function on the `[..., blocks]` totals. An entry's sum
  therefore depends only on the entries at or before it.
  """
  size = values.shape[-1]
  if size <= PREFIX_BLOCK:
    return _running_sum(values) if size else values
  lead = values.shape[:-1]
  blocks = -(-size // PREFIX_BLOCK)
  values = jnp.pad(values, [(0, 0)] * len(lead) + [(0, blocks * PREFIX_BLOCK - size)])
  inner = _running_sum(values.reshape(lead + (blocks, PREFIX_BLOCK)))
  totals = _blocked_prefix_sum(inner[..., PREFIX_BLOCK - 1])
  # The first block adds an exact zero.
  offsets = jnp.pad(totals[..., :-1], [(0, 0)] * len(lead) + [(1, 0)])
  return (offsets[..., None] + inner).reshape(lead + (blocks * PREFIX_BLOCK,))[..., :size]


def prefix_sum(values: jax.Array) -> jax.Array:
  """Return inclusive prefix sums of the last axis, `[..., n]`.

  Entry i is the left-to-right sum of its block of PREFIX_BLOCK entries up to i, plus the prefix
  sum of the earlier blocks' totals, formed the same way one level up. The order of additions for
  entry i depends only on i, so the result does not depend on the axis length or the other rows.
  Each entry is a chain of at most PREFIX_BLOCK additions on each of log_PREFIX_BLOCK(n) levels,
  so rounding errors grow with PREFIX_BLOCK * log(n), not with n as in a sequential sum.
  """
  return _positive_zero(_blocked_prefix_sum(values))
