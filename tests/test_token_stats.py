"""Token statistics from logits and from top-k log-probability lists, against numpy in float64."""

import jax
import numpy as np
import pytest

from ec_jax.scoring import token_stats


def reference_statistics(logits, token, k):
  """Float64 numpy statistics of one `[vocab]` row, masked (-inf) tokens excluded."""
  finite = np.isfinite(logits)
  z = logits[finite]
  log_p = z - np.log(np.sum(np.exp(z - z.max()))) - z.max()
  p = np.exp(log_p)
  top = np.sort(z)[::-1][:k]
  log_q = top - np.log(np.sum(np.exp(top - top.max()))) - top.max()
  q = np.exp(log_q)
  full_index = np.flatnonzero(finite)
  return {
      "entropy_full": -np.sum(p * log_p),
      "entropy_topk": -np.sum(q * log_q),
      "logprob": log_p[np.searchsorted(full_index, token)],
      "self_certainty": -np.mean(log_p) - np.log(len(z)),
      "confidence": -np.mean(log_q),
  }


@pytest.mark.parametrize("masked", [False, True], ids=["dense", "masked"])
def test_statistics_match_float64(masked):
  rng = np.random.default_rng(0)
  rows, vocab, k = 6, 300, 10
  logits = rng.normal(0, 3, (rows, vocab)).astype(np.float32)
  if masked:
    logits[:, ::3] = -np.inf  # a third of the vocabulary masked, as by a grammar
  tokens = np.asarray([np.flatnonzero(np.isfinite(row))[i * 7] for i, row in enumerate(logits)])
  stats = jax.jit(token_stats.token_statistics, static_argnums=2)(logits, tokens, k)
  for name, values in stats._asdict().items():
    assert values.shape == (rows,)
    assert np.isfinite(values).all(), name
  for i in range(rows):
    expected = reference_statistics(logits[i].astype(np.float64), tokens[i], k)
    for name, value in expected.items():
      got = float(getattr(stats, name)[i])
      assert abs(got - value) <= 2e-5 * max(1.0, abs(value)), f"row {i} {name}: {got} vs {value}"


def test_topk_entropy_bounds():
  logits = np.zeros((2, 50), np.float32)
  logits[1, 0] = 100.0  # one certain token
  stats = token_stats.token_statistics(logits, np.zeros(2, np.int32), 10)
  np.testing.assert_allclose(stats.entropy_topk[0], np.log(10), rtol=1e-6)
  np.testing.assert_allclose(stats.entropy_full[0], np.log(50), rtol=1e-6)
  np.testing.assert_allclose(stats.self_certainty[0], 0.0, atol=1e-6)
  assert float(stats.entropy_topk[1]) < 1e-6
  assert float(stats.logprob[1]) > -1e-6


def test_statistics_leading_dimensions():
  logits = np.random.default_rng(1).normal(size=(2, 3, 40)).astype(np.float32)
  stats = token_stats.token_statistics(logits, np.ones((2, 3), np.int32), 5)
  flat = token_stats.token_statistics(logits.reshape(6, 40), np.ones(6, np.int32), 5)
  for name in stats._fields:
    np.testing.assert_allclose(np.asarray(getattr(stats, name)).ravel(), getattr(flat, name),
                               rtol=1e-6, err_msg=name)


def test_topk_lists_skip_absent_entries():
  log_probs = np.array([[0.5, 0.3, 0.2, 1.0], [0.25, 0.25, 0.25, 0.25]])
  log_probs = np.log(log_probs)
  log_probs[0, 3] = -np.inf  # an absent entry
  with jax.enable_x64(True):
    entropy, confidence = token_stats.topk_statistics_from_logprobs(log_probs)
  q = np.array([0.5, 0.3, 0.2])
  np.testing.assert_allclose(entropy[0], -np.sum(q * np.log(q)), rtol=1e-12)
  np.testing.assert_allclose(confidence[0], -np.mean(np.log(q)), rtol=1e-12)
  np.testing.assert_allclose(entropy[1], np.log(4), rtol=1e-12)
  with jax.enable_x64(True):
    empty_entropy, empty_confidence = token_stats.topk_statistics_from_logprobs(
        np.full((1, 4), -np.inf))
  assert np.isnan(empty_entropy[0]) and np.isnan(empty_confidence[0])


def test_topk_lists_renormalise_unnormalised_input():
  # vLLM reports log-probabilities of the full distribution; the top-k entropy renormalises them.
  full = np.log(np.array([0.4, 0.2, 0.1, 0.1, 0.1, 0.1]))
  with jax.enable_x64(True):
    entropy, _ = token_stats.topk_statistics_from_logprobs(full[None, :3])
  q = np.array([0.4, 0.2, 0.1]) / 0.7
  np.testing.assert_allclose(entropy[0], -np.sum(q * np.log(q)), rtol=1e-12)
