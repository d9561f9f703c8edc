"""Sums that give the same bits for a row whatever the array around it, and the scores built on them."""

import functools
import math

import jax
import numpy as np
import pytest

from ec_jax.scoring import centroids
from ec_jax.scoring import deepconf
from ec_jax.scoring import sums
from ec_jax.scoring import token_stats

# (rows, width) of the arrays a row of ROW_LENGTH values is embedded in; widths that are not
# powers of two are included on purpose.
LAYOUTS = ((1, 300), (3, 512), (12, 1024), (7, 333), (2, 2048))
# Fewer layouts for the scores, which compile for a few seconds each.
SCORE_LAYOUTS = ((1, 300), (12, 1024), (7, 333))
ROW_LENGTH = 300
PRECISIONS = [pytest.param(np.float64, True, id="float64"),
              pytest.param(np.float32, False, id="float32")]


def embed(row, rows, width, seed):
  """Return a `[rows, width]` table with `row` (zero-padded) at index rows // 2, noise elsewhere."""
  rng = np.random.default_rng(seed)
  table = rng.exponential(0.5, (rows, width)).astype(row.dtype)
  table[rows // 2] = 0
  table[rows // 2, :len(row)] = row
  return table


def padded_tree_sum(values):
  """Sum a 1-D numpy array by the documented tree: zero-pad to a power of two, add neighbours."""
  width = 1 << max(len(values) - 1, 0).bit_length()
  level = np.zeros(width, values.dtype)
  level[:len(values)] = values
  while len(level) > 1:
    level = level[0::2] + level[1::2]
  return level[0]


@pytest.mark.parametrize("dtype,x64", PRECISIONS)
def test_pairwise_sum_same_bits_in_any_layout(dtype, x64):
  row = np.random.default_rng(1).normal(1.0, 3.0, ROW_LENGTH).astype(dtype)
  with jax.enable_x64(x64):
    alone = np.asarray(jax.jit(sums.pairwise_sum)(row[None, :]))[0]
    for seed, (rows, width) in enumerate(LAYOUTS):
      table = embed(row, rows, width, seed)
      summed = np.asarray(jax.jit(sums.pairwise_sum)(table))[rows // 2]
      assert summed.tobytes() == alone.tobytes(), (rows, width)
  assert alone.dtype == dtype
  assert alone.tobytes() == padded_tree_sum(row).tobytes()


def test_pairwise_sum_leading_axes_and_small_widths():
  rng = np.random.default_rng(2)
  with jax.enable_x64(True):
    for width in (1, 2, 3, 5, 10, 16, 17):
      values = rng.normal(size=(4, 6, width))
      summed = np.asarray(jax.jit(sums.pairwise_sum)(values))
      assert summed.shape == (4, 6)
      expected = np.array([[padded_tree_sum(v) for v in block] for block in values])
      assert summed.tobytes() == expected.tobytes(), width


def test_pairwise_sum_accuracy():
  values = np.random.default_rng(3).exponential(0.5, 100_000)
  with jax.enable_x64(True):
    summed = float(sums.pairwise_sum(values[None, :])[0])
  assert summed == pytest.approx(math.fsum(values), rel=1e-14)


@pytest.mark.parametrize("dtype,x64", PRECISIONS)
def test_prefix_sum_same_bits_in_any_layout(dtype, x64):
  row = np.random.default_rng(4).normal(0.0, 2.0, ROW_LENGTH).astype(dtype)
  with jax.enable_x64(x64):
    alone = np.asarray(jax.jit(sums.prefix_sum)(row[None, :]))[0]
    for seed, (rows, width) in enumerate(LAYOUTS):
      table = embed(row, rows, width, seed)
      prefix = np.asarray(jax.jit(sums.prefix_sum)(table))[rows // 2, :ROW_LENGTH]
      assert prefix.tobytes() == alone.tobytes(), (rows, width)
    # A row within one block, summed alone and in arrays of one and of several levels of blocks.
    short = row[:10]
    short_alone = np.asarray(jax.jit(sums.prefix_sum)(short[None, :]))[0]
    for width in (sums.PREFIX_BLOCK, sums.PREFIX_BLOCK + 1, 300):
      table = embed(short, 3, width, seed=width)
      prefix = np.asarray(jax.jit(sums.prefix_sum)(table))[1, :10]
      assert prefix.tobytes() == short_alone.tobytes(), width
  tolerance = 1e-12 if x64 else 1e-4
  np.testing.assert_allclose(alone, np.cumsum(row.astype(np.float64)), rtol=tolerance,
                             atol=tolerance)


def test_zero_sums_are_positive_zero():
  """A row of -0.0 sums to +0.0 whether or not padding adds +0.0 to it."""
  with jax.enable_x64(True):
    for width in (4, 8, 5, 40):
      table = np.zeros((2, width))
      table[0, :4] = -0.0
      summed = np.asarray(jax.jit(sums.pairwise_sum)(table))
      prefix = np.asarray(jax.jit(sums.prefix_sum)(table))
      assert not np.signbit(summed).any(), width
      assert not np.signbit(prefix).any(), width


def test_empty_axis():
  assert np.asarray(sums.pairwise_sum(np.zeros((3, 0), np.float32))).tolist() == [0.0] * 3
  assert sums.prefix_sum(np.zeros((3, 0), np.float32)).shape == (3, 0)


# ---------------------------------------------------------------------------------------------
# Scores built on the sums: a trajectory gives the same bits in any batch.


def batches(row_values, row_valid, seed):
  """Yield (values, valid, lengths, index) tables of several layouts holding the same row."""
  length = len(row_values)
  for offset, (rows, width) in enumerate(SCORE_LAYOUTS):
    values = embed(row_values, rows, width, seed + offset)
    valid = np.ones((rows, width), bool)
    valid[rows // 2, :length] = row_valid
    lengths = np.full(rows, width, np.int32)
    lengths[rows // 2] = length
    yield values, valid, lengths, rows // 2


@pytest.mark.parametrize("dtype,x64", PRECISIONS)
def test_token_scores_same_bits_in_any_batch(dtype, x64):
  rng = np.random.default_rng(5)
  row = rng.exponential(1.0, ROW_LENGTH).astype(dtype)
  row[rng.random(ROW_LENGTH) < 0.05] = np.nan
  row_valid = rng.random(ROW_LENGTH) > 0.05

  @jax.jit
  def score(values, valid, lengths):
    used = deepconf.used_mask(values, lengths, valid)
    return {**deepconf.deepconf_scores(values, lengths, valid, window=16, tail=50),
            "mean_entropy": deepconf.mean_entropy(values, lengths, valid),
            "raw_entropy": centroids.raw_entropy_centroid(values, used, lengths)}

  results = []
  with jax.enable_x64(x64):
    for values, valid, lengths, index in batches(row, row_valid, seed=10):
      results.append({name: np.asarray(array)[index] for name, array in
                      score(values, valid, lengths).items()})
  for name, first in results[0].items():
    assert not np.isnan(first), name
    for layout, other in zip(SCORE_LAYOUTS[1:], results[1:]):
      assert other[name].tobytes() == first.tobytes(), (name, layout)


@pytest.mark.parametrize("dtype,x64", PRECISIONS)
def test_topk_statistics_same_bits_in_any_batch(dtype, x64):
  rng = np.random.default_rng(6)
  logits = rng.normal(0, 3, (40, 64))
  log_probs = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
  top = (-np.sort(-log_probs, axis=-1)[:, :10]).astype(dtype)
  top[:5, 7:] = -np.inf  # fewer than k tokens recorded
  top[6] = -np.inf  # none recorded
  statistics = jax.jit(token_stats.topk_statistics_from_logprobs)
  with jax.enable_x64(x64):
    entropy, confidence = (np.asarray(array) for array in statistics(top))
    for rows, width in ((3, 10), (5, 16), (2, 13)):
      table = np.full((rows, 40, width), -np.inf, dtype)
      table[rows // 2, :, :10] = top
      wide_entropy, wide_confidence = (np.asarray(array)[rows // 2]
                                       for array in statistics(table))
      assert wide_entropy.tobytes() == entropy.tobytes(), (rows, width)
      assert wide_confidence.tobytes() == confidence.tobytes(), (rows, width)
  assert np.isnan(entropy[6])
  assert np.isnan(confidence[6])


def test_token_statistics_topk_same_bits_for_any_batch():
  """The sampler's top-k entropy and confidence of a position do not depend on the batch size."""
  rng = np.random.default_rng(7)
  logits = rng.normal(0, 3, (9, 200)).astype(np.float32)
  tokens = np.zeros(9, np.int32)
  statistics = jax.jit(functools.partial(token_stats.token_statistics, entropy_k=10))
  every = statistics(logits, tokens)
  for rows in (1, 4):
    part = statistics(logits[:rows], tokens[:rows])
    for name in ("entropy_topk", "confidence"):
      expected = np.asarray(getattr(every, name))[:rows]
      assert np.asarray(getattr(part, name)).tobytes() == expected.tobytes(), (name, rows)


def test_raw_entropy_same_bits_in_any_chunk():
  """Some chunk shapes fuse the position * entropy products into the sums unless guarded."""
  rng = np.random.default_rng(8)
  trajectories = [rng.exponential(0.5, int(rng.integers(1, 700))) for _ in range(40)]
  raw_entropy = jax.jit(centroids.raw_entropy_centroid)
  results = []
  with jax.enable_x64(True):
    for rows, width in ((1, 1024), (4, 1024), (16, 1024), (8, 2048), (40, 768), (3, 4096)):
      layout_results = []
      for start in range(0, len(trajectories), rows):
        chunk = trajectories[start:start + rows]
        entropies = np.zeros((rows, width))
        lengths = np.zeros(rows, np.int32)
        for i, values in enumerate(chunk):
          entropies[i, :len(values)] = values
          lengths[i] = len(values)
        valid = np.arange(width)[None, :] < lengths[:, None]
        layout_results.extend(np.asarray(raw_entropy(entropies, valid, lengths))[:len(chunk)])
      results.append(np.array(layout_results))
  for layout_results in results[1:]:
    assert layout_results.tobytes() == results[0].tobytes()
  expected = [math.fsum(t * h for t, h in enumerate(values)) / math.fsum(values) / len(values)
              for values in trajectories]
  np.testing.assert_allclose(results[0], expected, rtol=1e-12)
