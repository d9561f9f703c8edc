"""`lax.top_k` that XLA's CPU backend keeps as a top-k, even when the caller slices its outputs.

XLA expands a top-k into a full sort of the last axis followed by a slice, and its CPU backend
turns that pattern back into a fast top-k call. When a later slice of the outputs (such as the
first candidate's id) merges with that slice, the pattern no longer matches and the full sort
stays: for `[64, 151936]` logits that was 2.3 s instead of 19 ms per call on a 2-core CPU (see
BENCHMARKS.md). An optimization barrier around the outputs keeps later slices apart.
"""

from __future__ import annotations

import jax
from jax import lax


def top_k(values: jax.Array, k: int) -> tuple[jax.Array, jax.Array]:
  """Return the k largest entries of the last axis, descending, and their indices.

  Args:
    values: `[..., n]` array.
    k: static count, 1 <= k <= n.

  Returns:
    `[..., k]` values and `[..., k]` int32 indices, as `lax.top_k` gives them.
  """
  return lax.optimization_barrier(lax.top_k(values, k))
