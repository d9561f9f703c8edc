"""Chunked scoring equals one call over all trajectories, in input order."""

import math

import jax
import numpy as np
import pytest

from ec_jax.scoring import pipeline
from ec_jax.scoring import settings as settings_lib
from ec_jax.scoring import streaming
from ec_jax.scoring import token_stats


def random_rows(count, seed):
  rng = np.random.default_rng(seed)
  rows = []
  for _ in range(count):
    length = int(rng.choice([0, 5, 40, 300, 700]))
    entropy = np.round(rng.exponential(0.5, length), 2)
    missing = rng.random(length) < 0.05
    entropy[missing] = np.nan
    entropy[rng.random(length) < 0.02] = np.nan  # NaN values, counted apart from missing ones
    rows.append(streaming.TokenRow(entropy=entropy, missing=missing))
  return rows


def direct_scores(rows, settings):
  time = max(1, max(r.length for r in rows))
  entropies = np.zeros((len(rows), time))
  present = np.zeros((len(rows), time), bool)
  for i, row in enumerate(rows):
    entropies[i, :row.length] = row.entropy
    present[i, :row.length] = ~row.missing
  lengths = np.asarray([r.length for r in rows], np.int32)
  return jax.device_get(pipeline.score_trajectories_jit(
      entropies, present, lengths, pipeline.settings_inputs(settings), pipeline.ScoringSpec()))


@pytest.mark.parametrize("overlap", [True, False], ids=["worker_thread", "inline"])
def test_chunks_match_one_call(overlap):
  rows = random_rows(45, seed=3)
  settings = settings_lib.sweep_grid()[:4]
  with jax.enable_x64(True):
    options = streaming.ChunkOptions(max_rows=8, min_time=64)
    scorer = streaming.ChunkedScorer(settings, options=options, overlap=overlap)
    for row in rows:
      scorer.add(row)
    chunked = scorer.results()
    expected = direct_scores(rows, settings)
  np.testing.assert_array_equal(chunked["num_phases"], expected.num_phases)
  np.testing.assert_array_equal(chunked["num_nan"], expected.num_nan)
  np.testing.assert_array_equal(chunked["high_threshold"], expected.high_threshold)
  np.testing.assert_array_equal(chunked["low_threshold"], expected.low_threshold)
  np.testing.assert_array_equal(chunked["phases"], expected.details.phases)
  for method, values in expected.centroids["length"].items():
    np.testing.assert_array_equal(chunked[f"{method}/length"], values, err_msg=method)
  # Sums over a different padded length may round differently in the last bit.
  np.testing.assert_allclose(chunked["raw_entropy"], expected.raw_entropy, rtol=1e-13)


def test_entropy_and_confidence_from_topk():
  rng = np.random.default_rng(0)
  logits = rng.normal(0, 2, (2, 30, 50))
  log_probs = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
  top = -np.sort(-log_probs, axis=-1)[..., :10]
  rows = [streaming.TokenRow(entropy=None, missing=np.zeros(30, bool), topk_logprobs=top[i])
          for i in range(2)]
  options = streaming.ChunkOptions(max_rows=4, min_time=32, entropy_from_topk=True,
                                   confidence_from_topk=True)
  with jax.enable_x64(True):
    scorer = streaming.ChunkedScorer([settings_lib.PhaseSetting()], options=options,
                                     window=8, tail=8)
    for row in rows:
      scorer.add(row)
    out = scorer.results()
    entropy, confidence = jax.device_get(token_stats.topk_statistics_from_logprobs(top))
  np.testing.assert_allclose(out["mean_entropy"], np.mean(entropy, axis=1), rtol=1e-12)
  np.testing.assert_allclose(out["deepconf_mean"], np.mean(confidence, axis=1), rtol=1e-12)
  assert out["num_valid"].tolist() == [30, 30]


def test_time_buckets_and_rows():
  assert streaming.time_bucket(0, 256) == 256
  assert streaming.time_bucket(257, 256) == 512
  options = streaming.ChunkOptions(max_rows=256, entropy_from_topk=True, topk=10)
  assert streaming.rows_for_bucket(2**15, options) == 64
  assert streaming.rows_for_bucket(256, options) == 256


def test_topk_rows_required():
  scorer = streaming.ChunkedScorer([settings_lib.PhaseSetting()],
                                   options=streaming.ChunkOptions(entropy_from_topk=True))
  with pytest.raises(ValueError, match="top-k"):
    scorer.add(streaming.TokenRow(entropy=None, missing=np.zeros(3, bool)))
