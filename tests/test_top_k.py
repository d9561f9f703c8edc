"""The top-k helper: lax.top_k's results, compiled without a full sort of the last axis."""

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from ec_jax.scoring import top_k as top_k_lib


def _first_candidates(values):
  """Slice the outputs the way the sampler does: the first id and the first few values."""
  top_values, top_ids = top_k_lib.top_k(values, 64)
  return top_ids[:, 0], top_values[:, :10]


def test_top_k_matches_lax():
  values = jnp.asarray(np.random.default_rng(0).normal(size=(3, 500)), jnp.float32)
  got_values, got_ids = jax.jit(top_k_lib.top_k, static_argnums=1)(values, 7)
  want_values, want_ids = lax.top_k(values, 7)
  np.testing.assert_array_equal(got_values, want_values)
  np.testing.assert_array_equal(got_ids, want_ids)


def test_sliced_outputs_compile_without_sort():
  values = jnp.zeros((4, 4096), jnp.float32)
  compiled = jax.jit(_first_candidates).lower(values).compile().as_text()
  assert " sort(" not in compiled
