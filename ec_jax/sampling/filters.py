"""Temperature, top-k and top-p sampling inside a static candidate set.

The candidate set is the `candidate_k` largest logits from one `lax.top_k` call: the vocabulary is
never sorted. Within it, temperature scales the logits, top-k keeps the first `top_k` candidates
and top-p keeps the smallest prefix whose probability under the full tempered distribution
reaches `top_p`. A row whose nucleus needs more than the candidate set is flagged: it samples
from the whole set instead. Temperature 0 means greedy decoding (no division by zero happens).
All knobs are traced, so changing them never recompiles.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp


class SampleResult(NamedTuple):
  """One decode step's draw, each `[rows]`."""

  token: jax.Array  # int32 token ids
  entropy: jax.Array  # entropy of the filtered, tempered distribution actually sampled from
  nucleus_overflow: jax.Array  # bool: the top-p nucleus did not fit in the candidate set


def sample_from_candidates(keys: jax.Array, candidate_logits: jax.Array,
                           candidate_ids: jax.Array, logits: jax.Array, temperature: jax.Array,
                           top_p: jax.Array, top_k: jax.Array) -> SampleResult:
  """Draw one token per row.

  Args:
    keys: `[rows]` typed keys for this step.
    candidate_logits: `[rows, candidates]` untempered logits in descending order.
    candidate_ids: `[rows, candidates]` their token ids.
    logits: `[rows, vocab]` untempered logits (for the nucleus' probability mass).
    temperature: scalar >= 0; 0 is greedy.
    top_p: scalar in (0, 1].
    top_k: int scalar; 0 or values >= candidates keep every candidate.
  """
  candidates = candidate_logits.shape[-1]
  greedy = temperature <= 0
  safe_temperature = jnp.where(greedy, jnp.ones_like(temperature), temperature)
  scaled = candidate_logits / safe_temperature
  log_normaliser = jax.nn.logsumexp(logits.astype(jnp.float32) / safe_temperature, axis=-1,
                                    keepdims=True)
  probability = jnp.exp(scaled - log_normaliser)
  mass_before = jnp.cumsum(probability, axis=-1) - probability
  rank = jnp.arange(candidates)[None, :]
  keep_k = jnp.where((top_k <= 0) | (top_k >= candidates), candidates, top_k)
  keep = (rank < keep_k) & (mass_before < top_p)
  # The nucleus overflowed when even the whole candidate set holds less than top_p (and top-k
  # did not cut the set first).
  overflow = (jnp.sum(probability, axis=-1) < top_p) & (keep_k >= candidates)
  masked = jnp.where(keep, scaled, -jnp.inf)
  # Greedy takes candidate 0. One gather serves both cases, because slicing the candidate ids
  # made XLA's CPU backend (jax 0.10.2) sort the whole vocabulary in place of the top-k.
  choice = jnp.where(greedy, 0, jax.vmap(jax.random.categorical)(keys, masked))
  token = jnp.take_along_axis(candidate_ids, choice[:, None], axis=-1)[:, 0].astype(jnp.int32)
  log_q = masked - jax.nn.logsumexp(masked, axis=-1, keepdims=True)
  entropy = -jnp.sum(jnp.where(keep, jnp.exp(log_q) * log_q, 0.0), axis=-1)

  entropy = jnp.where(greedy, jnp.zeros_like(entropy), entropy)
  return SampleResult(token=token, entropy=entropy, nucleus_overflow=overflow & ~greedy)
