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
plus the per-trajectory means and the DeepConf scores of deepconf.py and, for top-k traces, the
per-token entropy and confidence of token_stats.py. Results do not depend on how trajectories are
split into chunks: those modules take every floating-point sum over tokens or top-k entries from
sums.py, whose order of additions depends neither on the padded width nor on the other rows.
XLA's own reductions (`jnp.sum`) pick their order from the whole array's shape, which changes the
last bit between chunk shapes.
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
from ec_jax.scoring import phases as phases_lib
from ec_jax.scoring import pipeline
from ec_jax.scoring import settings as settings_lib
from ec_jax.scoring import token_stats

# Peak bytes of one chunk's largest input, used to shrink the row count for long sequences.
CHUNK_BYTES = 256 * 2**20
# A chunk may run in a compiled time bucket up to this many times larger than it needs.
MAX_PADDING = 2
# Chunks handed to the worker and not yet scored; add() waits for the oldest beyond this.
MAX_QUEUED_CHUNKS = 2
# Without x64 the exact phase sums are 32-bit, so a bucket may not exceed this many positions:
# the largest multiple of 128 that fits phases.MAX_TIME_UINT32.
MAX_TIME_WITHOUT_X64 = phases_lib.MAX_TIME_UINT32 // 128 * 128


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
    topk_entropy, topk_confidence = token_stats.topk_statistics_from_logprobs(
        topk_logprobs.astype(real))
    if options.entropy_from_topk:
      entropies = topk_entropy
    if options.confidence_from_topk:
      confidence = topk_confidence
  entropies = entropies.astype(real)
  present = ~missing
  scores = pipeline.score_trajectories(entropies, present, lengths, settings, spec)
  out = {
      "num_valid": scores.num_valid,
      "num_nan": scores.num_nan,
      "high_threshold": scores.high_threshold,
      "low_threshold": scores.low_threshold,
      "num_phases": scores.num_phases,
      "raw_entropy": scores.raw_entropy,
      "center_numerator": scores.center_numerator,
      "center_denominator": scores.center_denominator,
      "mean_entropy": deepconf.mean_entropy(entropies, lengths, present),
  }
  for mass, methods in scores.centroids.items():
    for method, values in methods.items():
      out[f"{method}/{mass}"] = values
  if scores.details is not None:
    out["phases"] = scores.details.phases
    out["phase_overflow"] = scores.details.overflow
  if confidence is not None:
    out.update(deepconf.deepconf_scores(confidence.astype(real), lengths, window=window,
                                        tail=tail))
  for name, values in series.items():
    out[series_score_name(name)] = deepconf.masked_mean(values.astype(real), lengths)
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
