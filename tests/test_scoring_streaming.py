"""Chunked scoring equals one call over all trajectories, in input order."""

import functools
import math
import weakref

import jax
import numpy as np
import pytest

from ec_jax.scoring import deepconf
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
  # The sums do not depend on the padded width, so even the last bit agrees.
  np.testing.assert_array_equal(chunked["raw_entropy"], expected.raw_entropy)


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


# ---------------------------------------------------------------------------------------------
# Results that do not depend on the chunk layout.


def topk_rows(count, seed, k=10, lengths=(0, 3, 40, 130)):
  """Rows with entropies, top-k log-probabilities (some absent), confidence and two series.

  The first row is empty, so the scorer's first compilation is for its smallest time bucket.
  """
  rng = np.random.default_rng(seed)
  rows = []
  for index in range(count):
    length = int(rng.choice(lengths)) if index else 0
    logits = rng.normal(0, 2, (length, 40))
    log_probs = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    top = -np.sort(-log_probs, axis=-1)[:, :k]
    top[rng.random(length) < 0.05] = np.nan  # positions without log-probabilities
    entropy = np.round(rng.exponential(0.5, length), 3)
    missing = rng.random(length) < 0.03
    entropy[missing] = np.nan
    confidence = rng.exponential(1.0, length)
    confidence[rng.random(length) < 0.05] = np.nan
    series = {"self_certainty": rng.exponential(2.0, length)}
    if rng.random() < 0.8:
      series["entropy_full"] = rng.exponential(1.0, length)
    rows.append(streaming.TokenRow(entropy=entropy, missing=missing, topk_logprobs=top,
                                   confidence=confidence, series=series))
  return rows


def score_rows(rows, options, **kwargs):
  settings = settings_lib.sweep_grid()[:2]
  scorer = streaming.ChunkedScorer(settings, options=options, window=16, tail=10, **kwargs)
  with scorer:
    for row in rows:
      scorer.add(row)
    return scorer.results()


@pytest.mark.parametrize("from_topk", [False, True], ids=["precomputed", "topk"])
def test_chunk_layout_same_results(from_topk):
  rows = topk_rows(14, seed=7)
  series = ("self_certainty", "entropy_full")
  # One chunk of [16, 256]; chunks of [4, 512] scored inline.
  layouts = [dict(max_rows=16, min_time=256), dict(max_rows=4, min_time=512)]
  results = []
  with jax.enable_x64(True):
    for index, layout in enumerate(layouts):
      options = streaming.ChunkOptions(**layout, entropy_from_topk=from_topk,
                                       confidence_from_topk=from_topk, series=series)
      results.append(score_rows(rows, options, has_confidence=not from_topk,
                                overlap=index != 1))
  assert set(results[0]) >= {"deepconf_bottom10", "self_certainty", "mean_entropy_full",
                             "raw_entropy", "mean_entropy", "phases"}
  for other in results[1:]:
    assert set(other) == set(results[0])
    for key, values in results[0].items():
      np.testing.assert_array_equal(other[key], values, err_msg=key)


def test_series_and_confidence_match_one_call():
  rows = topk_rows(9, seed=8, lengths=(0, 5, 60, 120))
  options = streaming.ChunkOptions(max_rows=4, min_time=128,
                                   series=("self_certainty", "entropy_full"))
  with jax.enable_x64(True):
    out = score_rows(rows, options, has_confidence=True)
    time = max(row.length for row in rows)
    confidence = np.full((len(rows), time), np.nan)
    for i, row in enumerate(rows):
      confidence[i, :row.length] = row.confidence
    lengths = np.array([row.length for row in rows], np.int32)
    one_call = jax.jit(functools.partial(deepconf.deepconf_scores, window=16, tail=10))
    expected = jax.device_get(one_call(confidence, lengths))
  for name, values in expected.items():
    np.testing.assert_array_equal(out[name], values, err_msg=name)
  for i, row in enumerate(rows):
    if row.length == 0:
      assert math.isnan(out["self_certainty"][i])
      continue
    assert out["self_certainty"][i] == pytest.approx(row.series["self_certainty"].mean(),
                                                     rel=1e-12)
    if "entropy_full" in row.series:
      assert out["mean_entropy_full"][i] == pytest.approx(row.series["entropy_full"].mean(),
                                                          rel=1e-12)
    else:
      assert math.isnan(out["mean_entropy_full"][i])
    used = ~np.isnan(row.entropy)
    assert out["mean_entropy"][i] == pytest.approx(row.entropy[used].mean(), rel=1e-12)
    assert out["num_valid"][i] == used.sum()


def test_compact_phases_lists_most_phases():
  rows = random_rows(12, seed=10)
  settings = [settings_lib.PhaseSetting()]
  with jax.enable_x64(True):
    options = streaming.ChunkOptions(max_rows=6, min_time=1024)
    full = streaming.ChunkedScorer(settings, options=options, overlap=False)
    compact = streaming.ChunkedScorer(settings, options=options, overlap=False,
                                      compact_phases=True)
    for row in rows:
      full.add(row)
      compact.add(row)
    full, compact = full.results(), compact.results()
  listed = int(np.minimum(full["num_phases"][:, 0], settings_lib.DEFAULT_MAX_PHASES).max())
  assert full["phases"].shape == (12, settings_lib.DEFAULT_MAX_PHASES, 2)
  assert compact["phases"].shape == (12, listed, 2)
  np.testing.assert_array_equal(compact["phases"], full["phases"][:, :listed])


def test_rows_released_after_scoring():
  """Only the queued chunks hold per-token arrays: memory grows with the chunk, not the input."""
  rng = np.random.default_rng(11)
  options = streaming.ChunkOptions(max_rows=4, min_time=32)
  alive_max = 0
  with jax.enable_x64(True):
    scorer = streaming.ChunkedScorer([settings_lib.PhaseSetting()], options=options)
    references = []
    for _ in range(40):
      entropy = rng.exponential(0.5, 30)
      references.append(weakref.ref(entropy))
      scorer.add(streaming.TokenRow(entropy=entropy, missing=np.zeros(30, bool)))
      del entropy  # numpy arrays are freed by reference counting, without gc
      alive_max = max(alive_max, sum(ref() is not None for ref in references))
    results = scorer.results()
  assert results["num_valid"].tolist() == [30] * 40
  # The row being filled, the chunks waiting for the worker and the one it scores.
  bound = options.max_rows * (streaming.MAX_QUEUED_CHUNKS + 1)
  assert alive_max <= bound


def test_series_rows_checked():
  options = streaming.ChunkOptions(series=("self_certainty",))
  scorer = streaming.ChunkedScorer([settings_lib.PhaseSetting()], options=options)
  with pytest.raises(ValueError, match="does not list"):
    scorer.add(streaming.TokenRow(entropy=np.zeros(3), missing=np.zeros(3, bool),
                                  series={"entropy_full": np.zeros(3)}))
  with pytest.raises(ValueError, match=r"shape \(2,\)"):
    scorer.add(streaming.TokenRow(entropy=np.zeros(3), missing=np.zeros(3, bool),
                                  series={"self_certainty": np.zeros(2)}))
  with pytest.raises(ValueError, match="as TokenRow.confidence"):
    streaming.ChunkOptions(series=("confidence",))
  scorer.close()


def test_long_row_without_x64():
  with jax.enable_x64(False):
    scorer = streaming.ChunkedScorer([settings_lib.PhaseSetting()], overlap=False)
    length = streaming.MAX_TIME_WITHOUT_X64 + 1
    with pytest.raises(ValueError, match="enable x64"):
      scorer.add(streaming.TokenRow(entropy=np.zeros(length), missing=np.zeros(length, bool)))
  assert streaming.time_bucket(40000, 256, streaming.MAX_TIME_WITHOUT_X64) == 40064
  assert streaming.time_bucket(30000, 256, streaming.MAX_TIME_WITHOUT_X64) == 32768


def test_failed_chunk_stops_reading():
  """A chunk that fails raises from add() once the scorer waits for it, not only at the end."""
  options = streaming.ChunkOptions(max_rows=2, min_time=32)
  with jax.enable_x64(True):
    scorer = streaming.ChunkedScorer([settings_lib.PhaseSetting()], options=options)
    # Text entropies pass the shape checks but fail when the worker packs them as floats.
    broken = streaming.TokenRow(entropy=np.array(["high"] * 10), missing=np.zeros(10, bool))
    with pytest.raises(ValueError, match="could not convert"):
      for _ in range(2 * streaming.MAX_QUEUED_CHUNKS + 2):
        scorer.add(broken)
    scorer.close()
