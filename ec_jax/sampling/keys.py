"""Per-trajectory random keys that do not depend on batch layout, N, resumption or mesh.

key(trajectory, step) = fold_in(fold_in(fold_in(key(seed), problem_uid), trajectory_index), step)
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def trajectory_keys(seed: jax.Array, problem_uids: jax.Array,
                    trajectory_index: jax.Array) -> jax.Array:
  """Return typed keys `[rows]` for rows with the given problem uids and trajectory indices.

  Args:
    seed: int scalar.
    problem_uids: `[rows]` non-negative int32 (crc32 of the problem id, masked to 31 bits).
    trajectory_index: `[rows]` int32 sample index within the problem.
  """
  base = jax.random.key(seed)

  def one(uid, index):
    return jax.random.fold_in(jax.random.fold_in(base, uid), index)

  return jax.vmap(one)(jnp.asarray(problem_uids, jnp.uint32),
                       jnp.asarray(trajectory_index, jnp.uint32))


def step_keys(keys: jax.Array, step: jax.Array) -> jax.Array:
  """Return `[rows]` keys for decode step `step` (counted from 0 at the first new token)."""
  return jax.vmap(lambda key: jax.random.fold_in(key, step))(keys)
