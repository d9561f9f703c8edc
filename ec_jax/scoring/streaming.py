"""Scoring of many trajectories in fixed-shape chunks, overlapped with reading them.

Trace files can hold more tokens than fit one `[rows, time]` array, and their reading is
Python-bound while compilation and scoring run in C++ without the GIL. `ChunkedScorer` packs the
trajectories it is given into chunks of a fixed row count and a power-of-two time bucket, and
scores each chunk on a worker thread while the caller goes on reading:

  reader (caller thread)  ──add()──►  pack chunk ──► jit(score chunk) on the worker thread
  results() ──► per-row numpy arrays in input order

A compilation costs far more than scoring a chunk (about 1.5 s against 50 ms for 256 x 1024
tokens and 27 settings on 2 CPU cores), so chunks reuse a larger time bucket already compiled
(up to MAX_PADDING times the length they need), and the first trajectory starts a compilation for
twice its length's bucket before its chunk is full.

Every chunk runs the same jitted function as `pipeline.score_trajectories`, plus the entropy and
DeepConf confidence from top-k log-probabilities when a trajectory carries those.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
from collections.abc import Sequence
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from ec_jax.scoring import deepconf
from ec_jax.scoring import pipeline
from ec_jax.scoring import settings as settings_lib
from ec_jax.scoring import token_stats

# Peak bytes of one chunk's largest input, used to shrink the row count for long sequences.
CHUNK_BYTES = 256 * 2**20
# A chunk may run in a compiled time bucket up to this many times larger than it needs.
MAX_PADDING = 4


@dataclasses.dataclass(frozen=True)
class ChunkOptions:
  """Static chunk layout and per-token inputs (changing them recompiles).

  Attributes:
    max_rows: rows per chunk for short sequences; long ones use fewer (CHUNK_BYTES).
    min_time: smallest time bucket; buckets are powers of two.
    entropy_from_topk: compute the entropies from top-k log-probabilities (vLLM-style traces).
    confidence_from_topk: compute DeepConf's confidence from top-k log-probabilities.
    topk: width of the top-k arrays (entropy_k).
  """

  max_rows: int = 256
  min_time: int = 256
  entropy_from_topk: bool = False
  confidence_from_topk: bool = False
  topk: int = 10


@dataclasses.dataclass
class TokenRow:
  """One trajectory's per-token inputs.

  Attributes:
    entropy: `[length]` float, NaN where missing or NaN; None when computed from `topk_logprobs`.
    missing: `[length]` bool, True where the value is absent (not counted as NaN).
    topk_logprobs: `[length, k]` float, -inf for absent entries; None when not needed.
    confidence: `[length]` precomputed DeepConf confidence, or None.
  """

  entropy: np.ndarray | None
  missing: np.ndarray
  topk_logprobs: np.ndarray | None = None
  confidence: np.ndarray | None = None

  @property
  def length(self) -> int:
    return int(self.missing.shape[0])


def time_bucket(length: int, min_time: int) -> int:
  """Return the smallest power of two that is at least `length` and `min_time`."""
  bucket = max(1, min_time)
  while bucket < length:
    bucket *= 2
  return bucket


def rows_for_bucket(time: int, options: ChunkOptions) -> int:
  """Return the chunk row count for a time bucket: a power of two from 1 to max_rows."""
  per_row = time * 8 * (options.topk if (options.entropy_from_topk or
                                         options.confidence_from_topk) else 1)
  rows = options.max_rows
  while rows > 1 and rows * per_row > CHUNK_BYTES:
    rows //= 2
  return rows


def _score_chunk(entropies, missing, lengths, topk_logprobs, confidence, settings, window, tail,
                 *, spec: pipeline.ScoringSpec, options: ChunkOptions):
  """Score one chunk; returns a flat dict of per-row arrays (see ChunkedScorer.results)."""
  real = jax.dtypes.canonicalize_dtype(jnp.float64)  # float32 unless x64 is enabled
  if options.entropy_from_topk or options.confidence_from_topk:
    topk_entropy, topk_confidence = token_stats.topk_statistics_from_logprobs(
        topk_logprobs.astype(real))
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
      "raw_entropy": scores.raw_entropy,
      "center_numerator": scores.center_numerator,
      "center_denominator": scores.center_denominator,
      "mean_entropy": deepconf.mean_entropy(entropies, lengths, valid),
  }
  for mass, methods in scores.centroids.items():
    for method, values in methods.items():
      out[f"{method}/{mass}"] = values
  if scores.details is not None:
    out["phases"] = scores.details.phases
    out["phase_overflow"] = scores.details.overflow
  if confidence is not None:
    out.update(deepconf.deepconf_scores(confidence.astype(real), lengths, ~jnp.isnan(confidence),
                                        window=window, tail=tail))
  return out


class _InlineExecutor:
  """An executor that runs each task at once in the calling thread."""

  def submit(self, function, *args) -> concurrent.futures.Future:
    future = concurrent.futures.Future()
    try:
      future.set_result(function(*args))
    except Exception as error:  # pylint: disable=broad-except
      future.set_exception(error)  # re-raised by future.result()
    return future

  def shutdown(self, wait: bool = True) -> None:
    del wait


class ChunkedScorer:
  """Scores trajectories chunk by chunk on a worker thread; see the module docstring.

  Usage: `scorer.add(row)` for each trajectory in order, then `scorer.results()`. With
  `overlap=False` chunks are scored in the caller's thread, when they fill up.
  """

  def __init__(self, settings: Sequence[settings_lib.PhaseSetting],
               spec: pipeline.ScoringSpec = pipeline.ScoringSpec(),
               options: ChunkOptions = ChunkOptions(), *, has_confidence: bool = False,
               window: int = deepconf.DEFAULT_WINDOW, tail: int = deepconf.DEFAULT_TAIL,
               overlap: bool = True):
    self._settings = pipeline.settings_inputs(settings)
    self._spec = spec
    self._options = options
    self._with_confidence = has_confidence or options.confidence_from_topk
    self._window = np.int32(window)
    self._tail = np.int32(tail)
    self._function = jax.jit(partial(_score_chunk, spec=spec, options=options))
    self._pending: list[tuple[int, TokenRow]] = []
    self._futures: list[tuple[list[int], concurrent.futures.Future]] = []
    self._executor = (concurrent.futures.ThreadPoolExecutor(max_workers=1) if overlap
                      else _InlineExecutor())
    self._compiled: set[int] = set()
    self._count = 0
    # Configuration contexts such as `jax.enable_x64` are thread-local: the worker re-enters the
    # caller's setting.
    self._x64 = bool(jax.config.jax_enable_x64)

  def add(self, row: TokenRow) -> None:
    """Queue one trajectory; a full chunk is handed to the worker thread at once."""
    if self._options.entropy_from_topk and row.topk_logprobs is None:
      raise ValueError("Trajectory has no top-k log-probabilities to compute entropies from.")
    if self._count == 0:
      self._warm_up(time_bucket(2 * row.length, self._options.min_time))
    longest = max([row.length] + [queued.length for _, queued in self._pending])
    if len(self._pending) >= rows_for_bucket(self._bucket_for(longest), self._options):
      self._submit()
    self._pending.append((self._count, row))
    self._count += 1
    longest = max(queued.length for _, queued in self._pending)
    if len(self._pending) == rows_for_bucket(self._bucket_for(longest), self._options):
      self._submit()

  def _bucket_for(self, length: int) -> int:
    """Return the time bucket for a chunk whose longest row has `length` tokens."""
    needed = time_bucket(length, self._options.min_time)
    reusable = [b for b in self._compiled if needed <= b <= MAX_PADDING * needed]
    return min(reusable) if reusable else needed

  def _warm_up(self, time: int) -> None:
    """Compile the chunk function for `time` on the worker thread, with empty rows."""
    self._compiled.add(time)
    rows = rows_for_bucket(time, self._options)
    self._executor.submit(self._run_chunk, time, rows, [])

  def _submit(self) -> None:
    if not self._pending:
      return
    entries, self._pending = self._pending, []
    time = self._bucket_for(max(row.length for _, row in entries))
    self._compiled.add(time)
    rows = rows_for_bucket(time, self._options)
    indices = [index for index, _ in entries]
    future = self._executor.submit(self._run_chunk, time, rows, [row for _, row in entries])
    self._futures.append((indices, future))

  def _run_chunk(self, time: int, rows: int, chunk: list[TokenRow]) -> dict[str, np.ndarray]:
    options = self._options
    entropies = np.zeros((rows, time), np.float64)
    missing = np.ones((rows, time), bool)
    lengths = np.zeros(rows, np.int32)
    topk = None
    if options.entropy_from_topk or options.confidence_from_topk:
      topk = np.full((rows, time, options.topk), -np.inf, np.float64)
    confidence = None
    if self._with_confidence and not options.confidence_from_topk:
      confidence = np.full((rows, time), np.nan, np.float64)
    for i, row in enumerate(chunk):
      length = row.length
      lengths[i] = length
      missing[i, :length] = row.missing
      if row.entropy is not None:
        entropies[i, :length] = row.entropy
      if topk is not None and row.topk_logprobs is not None:
        width = min(options.topk, row.topk_logprobs.shape[1])
        topk[i, :length, :width] = row.topk_logprobs[:, :width]
      if confidence is not None and row.confidence is not None:
        confidence[i, :length] = row.confidence
    with jax.enable_x64(self._x64):
      out = self._function(entropies, missing, lengths, topk, confidence, self._settings,
                           self._window, self._tail)
      out = jax.device_get(out)
    return {key: value[:len(chunk)] for key, value in out.items()}

  def results(self) -> dict[str, np.ndarray]:
    """Score what is still queued and return per-row arrays, rows in the order added.

    Keys: `num_valid`, `num_nan`, `raw_entropy`, `mean_entropy` `[rows]`; `high_threshold`,
    `low_threshold`, `num_phases`, `center_numerator`, `center_denominator` and
    `<method>/<phase_mass>` centroids `[rows, settings]`; with details, `phases
    [rows, max_phases, 2]` and `phase_overflow [rows]`; with confidence, the DeepConf scores.
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
    inverse = np.empty_like(order)
    inverse[order] = np.arange(self._count)
    return {key: np.concatenate(values)[inverse] for key, values in parts.items()}
