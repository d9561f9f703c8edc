"""Scoring of many trajectories in fixed-shape chunks, overlapped with reading them.

Trace files can hold more tokens than fit one `[rows, time]` array, and their reading is
Python-bound while compilation and scoring run in C++ without the GIL. `ChunkedScorer` packs the
trajectories it is given into chunks of a fixed row count and a power-of-two time bucket, and
scores each chunk on a worker thread while the caller goes on reading:

  reader (caller thread)  ──add()──►  pack chunk ──► jit(score chunk) on the worker thread
  results() ──► per-row numpy arrays in input order

A compilation costs far more than scoring a chunk: about 2.5 s against 0.15 s for 256 x 1024
tokens and 28 settings, measured on 2 loaded CPU cores. Chunks therefore reuse a larger time
bucket already compiled, up to MAX_PADDING times the bucket they need. More padding would cost
every later chunk of that size more than one compilation, because the phase scan's time grows
with the bucket. The first compilation waits for the first full chunk: a guess from the first
trajectory's length was often several times too long or too short. At most MAX_QUEUED_CHUNKS chunks
wait for the worker, so memory stays bounded when reading is faster than scoring.

Every chunk runs `pipeline.score_trajectories` (thresholds, phases, centroids, exact tie keys),
plus the per-trajectory means, the DeepConf scores and, for top-k traces, the per-token entropy
and confidence. Results do not depend on how trajectories are split into chunks: every
floating-point sum over tokens or top-k entries below is a pairwise sum over a power-of-two width
(zeros added at the end), built from elementwise additions, so a row's result depends neither on
the padded width nor on the other rows. XLA's own reductions (`jnp.sum`) pick their summation
order from the whole array's shape, which changes the last bit between chunk shapes.
"""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import functools
from collections.abc import Mapping, Sequence
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from ec_jax.scoring import deepconf
from ec_jax.scoring import percentile
from ec_jax.scoring import phases as phases_lib
from ec_jax.scoring import pipeline
from ec_jax.scoring import settings as settings_lib

# Peak bytes of one chunk's largest input, used to shrink the row count for long sequences.
CHUNK_BYTES = 256 * 2**20
# A chunk may run in a compiled time bucket up to this many times larger than it needs.
MAX_PADDING = 2
# Chunks handed to the worker and not yet scored; add() waits for the oldest beyond this.
MAX_QUEUED_CHUNKS = 2
# Without x64 the exact phase sums are 32-bit, so a bucket may not exceed this many positions:
# the largest multiple of 128 that fits phases.MAX_TIME_UINT32.
MAX_TIME_WITHOUT_X64 = phases_lib.MAX_TIME_UINT32 // 128 * 128
# Share of the window means averaged by `deepconf_bottom10`, as tenths (see deepconf.py).
_BOTTOM_TENTHS = 1


# ---------------------------------------------------------------------------------------------
# Sums whose rounding does not depend on the array's shape.


def pairwise_sum(values: jax.Array) -> jax.Array:
  """Sum the last axis by adding neighbours level by level: `[..., n]` -> `[...]`.

  The axis is padded with zeros to a power of two, and level l adds the sums of aligned blocks
  of 2**l entries. Entries past the last non-zero one only add exact zeros, so the result is the
  same for any padded width, and each row is summed on its own.
  """
  size = values.shape[-1]
  if size == 0:
    return jnp.zeros(values.shape[:-1], values.dtype)
  width = 1 << (size - 1).bit_length()
  if width != size:
    padding = [(0, 0)] * (values.ndim - 1) + [(0, width - size)]
    values = jnp.pad(values, padding)
  while values.shape[-1] > 1:
    values = values[..., 0::2] + values[..., 1::2]
  return values[..., 0]


def prefix_sum(values: jax.Array) -> jax.Array:
  """Return inclusive prefix sums of the last axis (Hillis-Steele doubling steps).

  Step s adds the value 2**s positions to the left. Entry i only ever adds entries at or before
  it (or exact zeros), so it does not depend on the axis length.
  """
  time = values.shape[-1]
  shift = 1
  while shift < time:
    padding = [(0, 0)] * (values.ndim - 1) + [(shift, 0)]
    values = values + jnp.pad(values[..., :-shift], padding)
    shift *= 2
  return values


def masked_mean(values: jax.Array, used: jax.Array) -> jax.Array:
  """Return `[rows]` means of the used entries of `values [rows, time]`, NaN for none."""
  total = pairwise_sum(jnp.where(used, values, jnp.zeros((), values.dtype)))
  count = jnp.sum(used, axis=-1, dtype=jnp.int32)
  return jnp.where(count > 0, total / jnp.maximum(count, 1).astype(values.dtype), jnp.nan)


def raw_entropy_centroid(entropies: jax.Array, valid: jax.Array, lengths: jax.Array) -> jax.Array:
  """Return `[rows]` sum_t H_t t / sum_t H_t / L over valid positions (NaN when sum H = 0).

  The formula of `centroids.raw_entropy_centroid`, with pairwise sums.
  """
  real = entropies.dtype
  h = jnp.where(valid, entropies, jnp.zeros((), real))
  positions = jnp.arange(entropies.shape[1], dtype=real)
  total = pairwise_sum(h)
  # Each product is rounded before it is summed, because some chunk shapes fuse a product and an
  # addition into one fused multiply-add. `rounded_product` selects on its second operand being
  # NaN, so that operand must be data: LLVM removes the select for positions, which cannot be NaN.
  moment = pairwise_sum(percentile.rounded_product(positions, h))
  length = lengths.astype(real)
  has = (total != 0) & (length > 0)
  denominator = jnp.where(has, total * length, jnp.ones((), real))
  return jnp.where(has, moment / denominator, jnp.asarray(jnp.nan, real))


def topk_statistics(top_logprobs: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Return the top-k entropy and DeepConf confidence of `[..., k]` log-probabilities.

  The formulas of `token_stats.topk_statistics_from_logprobs` (renormalised top-k entropy and
  -(1/k') sum log q over the k' finite entries), with pairwise sums over k. -inf entries are
  absent tokens; rows with no finite entry give NaN.
  """
  finite = jnp.isfinite(top_logprobs)
  count = jnp.sum(finite, axis=-1)
  masked = jnp.where(finite, top_logprobs, -jnp.inf)
  peak = jnp.max(masked, axis=-1, keepdims=True)
  peak = jnp.where(jnp.isfinite(peak), peak, jnp.zeros((), peak.dtype))
  weights = jnp.where(finite, jnp.exp(masked - peak), jnp.zeros((), peak.dtype))
  normaliser = jnp.log(pairwise_sum(weights))[..., None] + peak
  log_q = top_logprobs - normaliser
  safe = jnp.where(finite, log_q, jnp.zeros((), log_q.dtype))
  terms = jnp.where(finite, percentile.rounded_product(jnp.exp(safe), safe), 0.0)
  entropy = -pairwise_sum(terms)
  confidence = -pairwise_sum(safe) / jnp.maximum(count, 1).astype(safe.dtype)
  nan = jnp.asarray(jnp.nan, entropy.dtype)
  return jnp.where(count > 0, entropy, nan), jnp.where(count > 0, confidence, nan)


def _order_keys(values: jax.Array) -> jax.Array:
  """Map floats to unsigned integers of the same width whose order is the float order."""
  bits = 8 * values.dtype.itemsize
  unsigned = jnp.uint64 if bits == 64 else jnp.uint32
  raw = jax.lax.bitcast_convert_type(values, unsigned)
  flip = jnp.where(raw >> (bits - 1) == 1, unsigned((1 << bits) - 1), unsigned(1 << (bits - 1)))
  return raw ^ flip


def _from_order_keys(keys: jax.Array, dtype: jnp.dtype) -> jax.Array:
  bits = 8 * keys.dtype.itemsize
  unsigned = keys.dtype.type
  flip = jnp.where(keys >> (bits - 1) == 1, unsigned(1 << (bits - 1)), unsigned((1 << bits) - 1))
  return jax.lax.bitcast_convert_type(keys ^ flip, dtype)


def _sum_of_smallest(values: jax.Array, exists: jax.Array, count: jax.Array) -> jax.Array:
  """Return the sum of the `count [rows]` smallest existing entries of each row.

  A bisection over order-preserving integer keys finds the count-th smallest value, as in
  deepconf.py. Entries below it are summed, and copies of it make up the count.
  """
  keys = _order_keys(jnp.where(exists, values, jnp.inf))
  bits = 8 * keys.dtype.itemsize

  def halve(_, bounds):
    low, high = bounds
    middle = low + ((high - low) >> 1)
    enough = jnp.sum(keys <= middle[:, None], axis=-1) >= count
    return jnp.where(enough, low, middle + 1), jnp.where(enough, middle, high)

  bounds = (jnp.min(keys, axis=-1), jnp.max(keys, axis=-1))
  _, threshold_key = jax.lax.fori_loop(0, bits, halve, bounds)
  below = keys < threshold_key[:, None]
  threshold = _from_order_keys(threshold_key, values.dtype)
  remainder = (count - jnp.sum(below, axis=-1)).astype(values.dtype)
  below_sum = pairwise_sum(jnp.where(below, values, jnp.zeros((), values.dtype)))
  return below_sum + percentile.rounded_product(remainder, threshold)


def deepconf_scores(confidence: jax.Array, used: jax.Array, window: jax.Array,
                    tail: jax.Array) -> dict[str, jax.Array]:
  """Return the four DeepConf scores of `deepconf.deepconf_scores`, with pairwise sums.

  Args:
    confidence: `[rows, time]` per-token confidence.
    used: `[rows, time]` bool, the positions that count (below the length, valid, not NaN).
      Unused positions are skipped, as if removed from the sequence.
    window: int32 scalar sliding-window size in tokens (at least 1).
    tail: int32 scalar number of final tokens of `deepconf_tail` (at least 1).

  Returns:
    `deepconf_tail`, `deepconf_mean`, `deepconf_lowest_window`, `deepconf_bottom10`, each
    `[rows]`, NaN for a row with no used token.
  """
  rows, time = confidence.shape
  dtype = confidence.dtype
  count = jnp.sum(used, axis=-1, dtype=jnp.int32)
  # Move the used values to the front of each row, in order; unused ones scatter out of range.
  rank = jnp.cumsum(used, axis=-1, dtype=jnp.int32) - 1
  target = jnp.where(used, rank, time)
  row_index = jnp.broadcast_to(jnp.arange(rows)[:, None], (rows, time))
  compact = jnp.zeros((rows, time), dtype).at[row_index, target].set(confidence, mode="drop")

  # Prefix sums of the values minus the row mean, which keeps them small.
  mean = pairwise_sum(compact) / jnp.maximum(count, 1).astype(dtype)
  inside = jnp.arange(time)[None, :] < count[:, None]
  centred = jnp.where(inside, compact - mean[:, None], jnp.zeros((), dtype))
  prefix = jnp.concatenate([jnp.zeros((rows, 1), dtype), prefix_sum(centred)], axis=-1)

  tail_size = jnp.maximum(jnp.minimum(jnp.maximum(tail, 1), count), 1)
  tail_end = jnp.take_along_axis(prefix, count[:, None], axis=-1)[:, 0]
  tail_start = jnp.take_along_axis(prefix, jnp.maximum(count - tail_size, 0)[:, None],
                                   axis=-1)[:, 0]
  tail_mean = (tail_end - tail_start) / tail_size.astype(dtype) + mean

  # Window e - 1 ends before compact position e; a row shorter than the window has one window.
  size = jnp.maximum(jnp.minimum(jnp.maximum(window, 1), count), 1)
  stop = jnp.broadcast_to(jnp.arange(1, time + 1, dtype=jnp.int32)[None, :], (rows, time))
  start = stop - size[:, None]
  exists = (start >= 0) & (stop <= count[:, None])
  upper = jnp.take_along_axis(prefix, stop, axis=-1)
  lower = jnp.take_along_axis(prefix, jnp.maximum(start, 0), axis=-1)
  means = (upper - lower) / size[:, None].astype(dtype) + mean[:, None]
  windows = jnp.where(count > 0, count - size + 1, 0)
  lowest = jnp.min(jnp.where(exists, means, jnp.inf), axis=-1)
  # ceil(10 % of the windows) in integers: at least one for a non-empty row.
  bottom_count = (windows * _BOTTOM_TENTHS + 9) // 10
  bottom_mean = (_sum_of_smallest(means, exists, bottom_count)
                 / jnp.maximum(bottom_count, 1).astype(dtype))

  empty = count == 0
  nan = jnp.asarray(jnp.nan, dtype)
  return {
      "deepconf_tail": jnp.where(empty, nan, tail_mean),
      "deepconf_mean": jnp.where(empty, nan, mean),
      "deepconf_lowest_window": jnp.where(empty, nan, lowest),
      "deepconf_bottom10": jnp.where(empty, nan, bottom_mean),
  }


# ---------------------------------------------------------------------------------------------
# Chunk layout and inputs.


def series_score_name(name: str) -> str:
  """Return the per-trajectory score of a per-token series: the mean of its used values.

  `self_certainty` keeps its name, `entropy_<kind>` gives `mean_entropy_<kind>`, and any other
  series `mean_<name>`.
  """
  if name == "self_certainty":
    return name
  return f"mean_{name}"


@dataclasses.dataclass(frozen=True)
class ChunkOptions:
  """Static chunk layout and per-token inputs (changing them recompiles).

  Attributes:
    max_rows: rows per chunk for short sequences; long ones use fewer (CHUNK_BYTES).
    min_time: smallest time bucket; buckets are powers of two.
    entropy_from_topk: compute the entropies from top-k log-probabilities (vLLM-style traces).
    confidence_from_topk: compute DeepConf's confidence from top-k log-probabilities.
    topk: width of the top-k arrays (entropy_k). A chunk with a wider row uses that row's
      width rounded up to a power of two, with the same results.
    series: names of extra per-token series (`self_certainty`, `entropy_full`, ...) whose
      per-trajectory means are computed (see `series_score_name`).
  """

  max_rows: int = 256
  min_time: int = 256
  entropy_from_topk: bool = False
  confidence_from_topk: bool = False
  topk: int = 10
  series: tuple[str, ...] = ()

  def __post_init__(self):
    if len(set(self.series)) != len(self.series):
      raise ValueError(f"ChunkOptions.series has a name twice: {self.series!r}.")
    if "confidence" in self.series:
      raise ValueError("Pass DeepConf confidence as TokenRow.confidence with has_confidence=True, "
                       "not as a series.")

  @property
  def uses_topk(self) -> bool:
    return self.entropy_from_topk or self.confidence_from_topk


@dataclasses.dataclass
class TokenRow:
  """One trajectory's per-token inputs.

  Attributes:
    entropy: `[length]` float, NaN where missing or NaN; None when computed from `topk_logprobs`.
    missing: `[length]` bool, True where the entropy is absent or unusable (not counted as NaN).
    topk_logprobs: `[length, k]` float, -inf for absent entries; a row with a NaN entry has no
      top-k values (no entropy and confidence from it). None when not needed or not recorded.
    confidence: `[length]` precomputed DeepConf confidence (NaN: skipped), or None.
    series: name -> `[length]` values of the scorer's `ChunkOptions.series` (NaN: skipped); a
      name absent here gives the row a NaN mean.
  """

  entropy: np.ndarray | None
  missing: np.ndarray
  topk_logprobs: np.ndarray | None = None
  confidence: np.ndarray | None = None
  series: Mapping[str, np.ndarray] = dataclasses.field(default_factory=dict)

  @property
  def length(self) -> int:
    return int(self.missing.shape[0])


def time_bucket(length: int, min_time: int, max_time: int | None = None) -> int:
  """Return the smallest power of two that is at least `length` and `min_time`.

  With `max_time`, a power of two above it is replaced by `length` rounded up to a multiple of
  128 (at most `max_time` when `length` fits).
  """
  bucket = max(1, min_time)
  while bucket < length:
    bucket *= 2
  if max_time is not None and bucket > max_time:
    bucket = max(128, -(-length // 128) * 128)
  return bucket


def rows_for_bucket(time: int, options: ChunkOptions) -> int:
  """Return the chunk row count for a time bucket: a power of two from 1 to max_rows."""
  per_row = time * 8 * (options.topk if options.uses_topk else 1)
  rows = options.max_rows
  while rows > 1 and rows * per_row > CHUNK_BYTES:
    rows //= 2
  return rows


def _topk_width(chunk: Sequence[TokenRow], minimum: int) -> int:
  """Return the top-k width of a chunk: `minimum`, or a power of two for wider rows."""
  widest = max((row.topk_logprobs.shape[1] for row in chunk if row.topk_logprobs is not None),
               default=0)
  if widest <= minimum:
    return minimum
  return 1 << (widest - 1).bit_length()


# ---------------------------------------------------------------------------------------------
# The compiled chunk function.


def _score_chunk(entropies, missing, lengths, topk_logprobs, confidence, series, settings, window,
                 tail, *, spec: pipeline.ScoringSpec, options: ChunkOptions):
  """Score one chunk; returns a flat dict of per-row arrays (see ChunkedScorer.results)."""
  real = jax.dtypes.canonicalize_dtype(jnp.float64)  # float32 unless x64 is enabled
  if options.uses_topk:
    topk_entropy, topk_confidence = topk_statistics(topk_logprobs.astype(real))
    if options.entropy_from_topk:
      entropies = topk_entropy
    if options.confidence_from_topk:
      confidence = topk_confidence
  entropies = entropies.astype(real)
  present = ~missing
  scores = pipeline.score_trajectories(entropies, present, lengths, settings, spec)
  valid, _ = pipeline.clean_validity(entropies, present, lengths)
  out = {
      "num_valid": scores.num_valid,
      "num_nan": scores.num_nan,
      "high_threshold": scores.high_threshold,
      "low_threshold": scores.low_threshold,
      "num_phases": scores.num_phases,
      "raw_entropy": raw_entropy_centroid(entropies, valid, lengths),
      "center_numerator": scores.center_numerator,
      "center_denominator": scores.center_denominator,
      "mean_entropy": masked_mean(entropies, valid),
  }
  for mass, methods in scores.centroids.items():
    for method, values in methods.items():
      out[f"{method}/{mass}"] = values
  if scores.details is not None:
    out["phases"] = scores.details.phases
    out["phase_overflow"] = scores.details.overflow
  inside = jnp.arange(entropies.shape[1])[None, :] < lengths[:, None]
  if confidence is not None:
    confidence = confidence.astype(real)
    out.update(deepconf_scores(confidence, inside & ~jnp.isnan(confidence), window, tail))
  for name, values in series.items():
    values = values.astype(real)
    out[series_score_name(name)] = masked_mean(values, inside & ~jnp.isnan(values))
  return out


@functools.lru_cache(maxsize=16)
def _chunk_function(spec: pipeline.ScoringSpec, options: ChunkOptions):
  """Return the jitted chunk function; scorers with the same static options share compilations."""
  return jax.jit(partial(_score_chunk, spec=spec, options=options))


class _InlineExecutor:
  """An executor that runs each task at once in the calling thread."""

  def submit(self, function, *args) -> concurrent.futures.Future:
    future = concurrent.futures.Future()
    try:
      future.set_result(function(*args))
    except Exception as error:  # pylint: disable=broad-except
      future.set_exception(error)  # re-raised by future.result()
    return future

  def shutdown(self, wait: bool = True, cancel_futures: bool = False) -> None:
    del wait, cancel_futures


class ChunkedScorer:
  """Scores trajectories chunk by chunk on a worker thread; see the module docstring.

  Usage: `scorer.add(row)` for each trajectory in order, then `scorer.results()`. With
  `overlap=False` chunks are scored in the caller's thread, when they fill up. With
  `compact_phases=True` the phase list of `results()` is only as wide as the most phases any row
  lists, rather than max_phases. As a context manager, leaving the block early (an exception
  while reading) cancels the queued chunks.
  """

  def __init__(self, settings: Sequence[settings_lib.PhaseSetting],
               spec: pipeline.ScoringSpec = pipeline.ScoringSpec(),
               options: ChunkOptions = ChunkOptions(), *, has_confidence: bool = False,
               window: int = deepconf.DEFAULT_WINDOW, tail: int = deepconf.DEFAULT_TAIL,
               overlap: bool = True, compact_phases: bool = False):
    for name, value in (("window", window), ("tail", tail)):
      if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"deepconf.{name} must be an integer >= 1 (tokens), got {value!r}.")
    self._settings = pipeline.settings_inputs(settings)
    self._spec = spec
    self._options = options
    self._with_confidence = has_confidence or options.confidence_from_topk
    self._window = np.int32(window)
    self._tail = np.int32(tail)
    self._function = _chunk_function(spec, options)
    self._pending: list[tuple[int, TokenRow]] = []
    self._futures: list[tuple[list[int], concurrent.futures.Future]] = []
    self._queued: collections.deque[concurrent.futures.Future] = collections.deque()
    self._executor = (concurrent.futures.ThreadPoolExecutor(max_workers=1) if overlap
                      else _InlineExecutor())
    self._compiled: set[tuple[int, int]] = set()
    self._count = 0
    # Configuration contexts such as `jax.enable_x64` are thread-local: the worker re-enters the
    # caller's setting.
    self._x64 = bool(jax.config.jax_enable_x64)
    self._max_time = None if self._x64 else MAX_TIME_WITHOUT_X64
    self._compact_phases = compact_phases

  def __enter__(self) -> ChunkedScorer:
    return self

  def __exit__(self, *exc_info) -> None:
    self.close()

  @property
  def num_chunks(self) -> int:
    """Chunks handed to the worker so far."""
    return len(self._futures)

  @property
  def compiled_shapes(self) -> list[tuple[int, int]]:
    """The (rows, time) chunk shapes compiled so far."""
    return sorted(self._compiled)

  def close(self) -> None:
    """Cancel the chunks that have not started and wait for the running one."""
    self._executor.shutdown(wait=True, cancel_futures=True)

  def add(self, row: TokenRow) -> None:
    """Queue one trajectory; a full chunk is handed to the worker thread at once.

    Raises:
      ValueError: the row lacks an input the options need, has a series of another length or
        name, or (without x64) is longer than MAX_TIME_WITHOUT_X64 tokens.
      Whatever scoring an earlier chunk raised, once add() waits for that chunk.
    """
    self._check_row(row)
    longest = max([row.length] + [queued.length for _, queued in self._pending])
    if len(self._pending) >= rows_for_bucket(self._bucket_for(longest), self._options):
      self._submit()
    self._pending.append((self._count, row))
    self._count += 1
    longest = max(queued.length for _, queued in self._pending)
    if len(self._pending) == rows_for_bucket(self._bucket_for(longest), self._options):
      self._submit()

  def _check_row(self, row: TokenRow) -> None:
    length = row.length
    if self._options.entropy_from_topk and row.topk_logprobs is None:
      raise ValueError("Trajectory has no top-k log-probabilities to compute entropies from.")
    if not self._options.entropy_from_topk and row.entropy is None:
      raise ValueError("Trajectory has no entropies; pass them, or set entropy_from_topk.")
    unknown = set(row.series) - set(self._options.series)
    if unknown:
      raise ValueError(f"Trajectory has series {sorted(unknown)} that ChunkOptions.series "
                       f"{self._options.series!r} does not list; add them there.")
    arrays = {"entropy": row.entropy, "confidence": row.confidence, **row.series}
    for name, values in arrays.items():
      if values is not None and values.shape != (length,):
        raise ValueError(f"{name!r} has shape {values.shape}; expected ({length},) like missing.")
    if row.topk_logprobs is not None and (row.topk_logprobs.ndim != 2
                                          or row.topk_logprobs.shape[0] != length):
      raise ValueError(f"topk_logprobs has shape {row.topk_logprobs.shape}; expected "
                       f"({length}, k) like missing.")
    if self._max_time is not None and length > self._max_time:
      raise ValueError(
          f"A trajectory has {length} tokens, but without x64 the exact phase sums allow at "
          f"most {self._max_time}; enable x64.")

  def _time_bucket(self, length: int) -> int:
    return time_bucket(length, self._options.min_time, self._max_time)

  def _bucket_for(self, length: int) -> int:
    """Return the time bucket for a chunk whose longest row has `length` tokens."""
    needed = self._time_bucket(length)
    reusable = [time for _, time in self._compiled if needed <= time <= MAX_PADDING * needed]
    return min(reusable) if reusable else needed

  def _queue(self, *task) -> concurrent.futures.Future:
    """Hand a task to the worker once fewer than MAX_QUEUED_CHUNKS tasks are unfinished."""
    while len(self._queued) >= MAX_QUEUED_CHUNKS:
      # A chunk that failed stops the reading here, rather than after the whole input.
      error = self._queued.popleft().exception()
      if error is not None:
        raise error
    future = self._executor.submit(*task)
    self._queued.append(future)
    return future

  def _submit(self) -> None:
    if not self._pending:
      return
    entries, self._pending = self._pending, []
    time = self._bucket_for(max(row.length for _, row in entries))
    rows = rows_for_bucket(time, self._options)
    self._compiled.add((rows, time))
    indices = [index for index, _ in entries]
    future = self._queue(self._run_chunk, time, rows, [row for _, row in entries])
    self._futures.append((indices, future))

  def _pack(self, time: int, rows: int, chunk: list[TokenRow]) -> tuple:
    """Return the chunk's padded host inputs, in `_score_chunk`'s argument order."""
    options = self._options
    entropies = np.zeros((rows, time), np.float64)
    missing = np.ones((rows, time), bool)
    lengths = np.zeros(rows, np.int32)
    topk = None
    if options.uses_topk:
      width = _topk_width(chunk, options.topk)
      topk = np.full((rows, time, width), -np.inf, np.float64)
    confidence = None
    if self._with_confidence and not options.confidence_from_topk:
      confidence = np.full((rows, time), np.nan, np.float64)
    series = {name: np.full((rows, time), np.nan, np.float64) for name in options.series}
    for i, row in enumerate(chunk):
      length = row.length
      lengths[i] = length
      missing[i, :length] = row.missing
      if row.entropy is not None:
        entropies[i, :length] = row.entropy
      if topk is not None and row.topk_logprobs is not None and length:
        table = row.topk_logprobs
        present = ~np.isnan(table).any(axis=1)
        topk[i, :length, :table.shape[1]] = np.where(present[:, None], table, -np.inf)
      if confidence is not None and row.confidence is not None:
        confidence[i, :length] = row.confidence
      for name, values in row.series.items():
        series[name][i, :length] = values
    return entropies, missing, lengths, topk, confidence, series

  def _run_chunk(self, time: int, rows: int, chunk: list[TokenRow]) -> dict[str, np.ndarray]:
    inputs = self._pack(time, rows, chunk)
    with jax.enable_x64(self._x64):
      out = self._function(*inputs, self._settings, self._window, self._tail)
      out = jax.device_get(out)
    out = {key: value[:len(chunk)] for key, value in out.items()}
    if "phases" in out:
      # Keep only the listed phases (the chunk's most, not max_phases, per row) while queued.
      listed = np.minimum(out["num_phases"][:, 0], out["phases"].shape[1])
      out["phases"] = out["phases"][:, :int(listed.max(initial=0))]
    return out

  def results(self) -> dict[str, np.ndarray]:
    """Score what is still queued and return per-row arrays, rows in the order added.

    Keys: `num_valid`, `num_nan`, `raw_entropy`, `mean_entropy` `[rows]`; `high_threshold`,
    `low_threshold`, `num_phases`, `center_numerator`, `center_denominator` and
    `<method>/<phase_mass>` centroids `[rows, settings]`; with details, `phases
    [rows, max_phases, 2]` (with `compact_phases`, `[rows, P, 2]` where P is the most phases
    any row lists; -1 pads) and `phase_overflow [rows]`; with confidence, the DeepConf scores;
    for each series, its `series_score_name`.

    Raises:
      Whatever scoring a chunk raised.
    """
    self._submit()
    self._executor.shutdown(wait=True)
    order = np.empty(self._count, np.int64)
    parts: dict[str, list[np.ndarray]] = {}
    position = 0
    for indices, future in self._futures:
      chunk = future.result()
      for key, value in chunk.items():
        parts.setdefault(key, []).append(value)
      order[position:position + len(indices)] = indices
      position += len(indices)
    if "phases" in parts:
      width = self._spec.max_phases
      if self._compact_phases:
        width = max(part.shape[1] for part in parts["phases"])
      parts["phases"] = [np.pad(part, ((0, 0), (0, width - part.shape[1]), (0, 0)),
                                constant_values=-1) for part in parts["phases"]]
    inverse = np.empty_like(order)
    inverse[order] = np.arange(self._count)
    return {key: np.concatenate(values)[inverse] for key, values in parts.items()}
