"""Per-position statistics of a next-token distribution, from logits or from top-k lists.

All entropies are in nats over the untempered (temperature 1) distribution:

  topk            entropy of the k largest probabilities renormalised to sum 1, in [0, ln k]
  full            Shannon entropy of the whole softmax (logsumexp form, float32 or wider)
  self_certainty  -(1/|V|) sum_v log p(v) - log |V|, the KL divergence from uniform to p
  confidence      DeepConf's -(1/k) sum_j log q_j over the renormalised top-k q

Tokens whose logit is -inf (masked) have probability zero: they add nothing to the entropies,
and `self_certainty` averages over the finite-logit tokens only (|V| counts them), so every
statistic stays finite. The functions work on `[..., vocab]` and never sort the vocabulary: the
top k come from `lax.top_k`. Sums over the top k use `sums.pairwise_sum`, so the top-k entropy
and the confidence of a position do not depend on the shape of the array it sits in. Sums over
the vocabulary use XLA's reductions.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from ec_jax.scoring import percentile
from ec_jax.scoring import sums


class TokenStatistics(NamedTuple):
  """Statistics of one position, each with the leading shape of the logits."""

  entropy_topk: jax.Array
  entropy_full: jax.Array
  logprob: jax.Array  # log-probability of the sampled token (untempered)
  self_certainty: jax.Array
  confidence: jax.Array


def _xlogx_terms(log_probs: jax.Array) -> jax.Array:
  """Return p * log p elementwise, 0 where p = 0 (log p = -inf)."""
  finite = jnp.isfinite(log_probs)
  safe = jnp.where(finite, log_probs, 0.0)
  return jnp.where(finite, jnp.exp(safe) * safe, 0.0)


def topk_statistics_from_logprobs(top_logprobs: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Return the top-k entropy and DeepConf confidence from k log-probabilities.

  Args:
    top_logprobs: `[..., k]` log-probabilities (or unnormalised log-weights) of the k most
      likely tokens, any order; -inf entries (absent tokens) are skipped. Imported traces that
      carry probabilities pass their logarithms.

  Returns:
    `entropy [...]` of the renormalised distribution q and `confidence [...]`
    = -(1/k') sum log q over the k' finite entries. Rows with no finite entry give NaN.
  """
  finite = jnp.isfinite(top_logprobs)
  count = jnp.sum(finite, axis=-1, dtype=jnp.int32)
  zero = jnp.zeros((), top_logprobs.dtype)
  # logsumexp over the finite entries, shifted by their maximum (0 for a row with none).
  masked = jnp.where(finite, top_logprobs, -jnp.inf)
  peak = jnp.max(masked, axis=-1, keepdims=True)
  peak = jnp.where(jnp.isfinite(peak), peak, zero)
  weights = jnp.where(finite, jnp.exp(masked - peak), zero)
  normaliser = jnp.log(sums.pairwise_sum(weights))[..., None] + peak
  log_q = jnp.where(finite, top_logprobs - normaliser, zero)
  # q log q, with the product rounded on its own (log_q is data, so the guard stays).
  terms = jnp.where(finite, percentile.rounded_product(jnp.exp(log_q), log_q), zero)
  entropy = -sums.pairwise_sum(terms)
  confidence = -sums.pairwise_sum(log_q) / jnp.maximum(count, 1).astype(log_q.dtype)
  nan = jnp.asarray(jnp.nan, entropy.dtype)
  return jnp.where(count > 0, entropy, nan), jnp.where(count > 0, confidence, nan)


def token_statistics(logits: jax.Array, token: jax.Array, entropy_k: int,
                     top_logits: jax.Array | None = None) -> TokenStatistics:
  """Compute every per-position statistic from logits, in float32 or wider.

  Args:
    logits: `[..., vocab]` untempered logits; -inf marks masked tokens.
    token: `[...]` int ids of the sampled tokens.
    entropy_k: static k of the top-k entropy and the confidence.
    top_logits: optional `[..., c]` largest logits in descending order with c >= entropy_k, from
      a `lax.top_k` call the caller already made (the sampler's candidate set); saves a second
      top-k over the vocabulary.
  """
  dtype = jnp.promote_types(logits.dtype, jnp.float32)
  logits = logits.astype(dtype)
  finite = jnp.isfinite(logits)
  log_normaliser = jax.nn.logsumexp(logits, axis=-1, keepdims=True)
  log_probs = logits - log_normaliser
  entropy_full = -jnp.sum(_xlogx_terms(log_probs), axis=-1)
  logprob = jnp.take_along_axis(log_probs, token[..., None].astype(jnp.int32), axis=-1)[..., 0]
  vocab = jnp.sum(finite, axis=-1).astype(dtype)
  mean_log_prob = jnp.sum(jnp.where(finite, log_probs, 0.0), axis=-1) / vocab
  self_certainty = -mean_log_prob - jnp.log(vocab)
  if top_logits is None:
    top_logits, _ = lax.top_k(logits, entropy_k)
  elif top_logits.shape[-1] < entropy_k:
    raise ValueError(f"top_logits has {top_logits.shape[-1]} entries per position; entropy_k = "
                     f"{entropy_k} needs at least that many (raise candidate_k).")
  top_logits = top_logits.astype(dtype)
  if top_logits.shape[-1] > entropy_k:
    # Masked entries count as absent. Slicing instead made XLA's CPU backend (jax 0.10.2) sort
    # the whole vocabulary in place of the caller's top-k, 120 times slower at [64, 151936].
    rank = jnp.arange(top_logits.shape[-1])
    top_logits = jnp.where(rank < entropy_k, top_logits, -jnp.inf)
  entropy_topk, confidence = topk_statistics_from_logprobs(top_logits)
  return TokenStatistics(entropy_topk=entropy_topk, entropy_full=entropy_full, logprob=logprob,
                         self_certainty=self_certainty, confidence=confidence)
