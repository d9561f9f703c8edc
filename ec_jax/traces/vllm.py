"""Reader of vLLM-style JSONL traces: top-k log-probabilities per generated token.

One JSON object per line:
  problem_id: string or integer (required).
  trajectory_index: non-negative integer; when absent, the number of earlier records of the
    same problem in the file.
  logprobs: list with one entry per generated token (required). An entry maps token ids
    (strings) to log-probabilities, holding the top k or k + 1 (when the sampled token was
    outside the top k), or is null when the model returned none. A value may also be an
    object with a `logprob` key, as vLLM's `Logprob` serialises.
  token_ids: the generated ids (optional; same length as `logprobs`).
  text, answer (the extracted final answer), ground_truth, reward, correct: optional.

Entropies are not computed here: the scoring code derives them from `topk_logprobs`, so the
trajectories carry `entropy=None`.
"""

from __future__ import annotations

import itertools
import os
from typing import Any, Iterator

import numpy as np

from ec_jax.traces import _fields
from ec_jax.traces import _json_stream
from ec_jax.traces.trajectory import Trajectory

_NoneType = type(None)
# log_softmax is <= 0 in exact arithmetic; allow rounding noise above zero.
_MAX_LOGPROB = 1e-5


def iter_vllm_jsonl(path: str | os.PathLike[str], k: int = 10) -> Iterator[Trajectory]:
  """Yield the trajectories of a vLLM-style JSONL file, one by one.

  Args:
    path: the JSONL file.
    k: entropy_k, the number of largest log-probabilities kept per position. Entries with
      more than k values keep the k largest.

  Raises:
    TraceFormatError: a record is malformed, or a position has fewer than k finite
      log-probabilities. The message names the file, the record, the field and the position.
  """
  if isinstance(k, bool) or not isinstance(k, int) or k < 1:
    raise ValueError(f"k (entropy_k) must be a positive integer, got {k!r}")
  path = os.fspath(path)
  keys = _fields.KeyTracker(path)
  for index, record in _json_stream.iter_json_lines(path):
    yield parse_vllm_record(record, path=path, index=index, k=k, keys=keys)


def parse_vllm_record(
    record: dict[str, Any],
    *,
    path: str,
    index: int,
    k: int,
    keys: _fields.KeyTracker,
) -> Trajectory:
  """Convert one parsed vLLM-style record to a Trajectory (arguments as `iter_vllm_jsonl`)."""
  ctx = _fields.RecordContext(path, index)
  if record.get("problem_id") is None:
    raise ctx.error("problem_id", "missing; every record needs its problem id")
  problem_id = _fields.parse_id(ctx, record["problem_id"], "problem_id")
  if record.get("trajectory_index") is not None:
    trajectory_index = _fields.parse_index(ctx, record["trajectory_index"], "trajectory_index")
  else:
    trajectory_index = keys.order_within_problem(problem_id)
  ctx = _fields.RecordContext(path, index, f"{problem_id}_traj_{trajectory_index}")

  if "logprobs" not in record:
    raise ctx.error("logprobs", "missing; every record needs a logprobs list")
  entries = record["logprobs"]
  if not isinstance(entries, list):
    raise ctx.error(
        "logprobs",
        f"expected a list with one entry per generated token, got {_fields.describe(entries)}")
  missing, topk_logprobs = _parse_logprob_entries(ctx, entries, k)

  token_ids = None
  per_token = {}
  if record.get("token_ids") is not None:
    token_ids = _fields.parse_token_ids(ctx, record["token_ids"], "token_ids")
    if token_ids.shape[0] != len(entries):
      raise ctx.error(
          "token_ids",
          f"has {token_ids.shape[0]} entries but logprobs has {len(entries)}; both list the "
          "generated tokens, so they must have the same length")
    per_token["logprob"] = _sampled_logprobs(entries, token_ids)

  reward = _fields.parse_optional_float(ctx, record.get("reward"), "reward")
  label = _fields.parse_optional_bool(ctx, record.get("correct"), "correct")
  if label is None and reward is not None:
    label = reward > 0

  keys.register(ctx, problem_id, trajectory_index)
  return Trajectory(
      problem_id=problem_id,
      trajectory_index=trajectory_index,
      entropy=None,
      missing=missing,
      topk_logprobs=topk_logprobs,
      token_ids=token_ids,
      text=_fields.parse_optional_str(ctx, record.get("text"), "text"),
      ground_truth=_fields.collapse_answer(record.get("ground_truth")),
      reward=reward,
      label=label,
      answer=_fields.collapse_answer(record.get("answer")),
      per_token=per_token,
  )


def _parse_logprob_entries(
    ctx: _fields.RecordContext, entries: list[Any], k: int) -> tuple[np.ndarray, np.ndarray]:
  """[length] bool missing and [length, k] largest log-probabilities (NaN rows where missing)."""
  bad = _fields.first_bad_index(entries, (dict, _NoneType))
  if bad is not None:
    raise ctx.error(
        f"logprobs[{bad}]",
        f"expected an object mapping token ids to log-probabilities, or null, got "
        f"{_fields.describe(entries[bad])}",
        position=bad)
  length = len(entries)
  missing = np.fromiter((entry is None for entry in entries), dtype=np.bool_, count=length)
  counts = np.fromiter(
      (len(entry) if entry is not None else 0 for entry in entries), dtype=np.int64, count=length)
  flat = list(itertools.chain.from_iterable(
      entry.values() for entry in entries if entry is not None))
  ends = np.cumsum(counts)

  def position_of(flat_index: int) -> int:
    return int(np.searchsorted(ends, flat_index, side="right"))

  if _fields.first_bad_index(flat, (float, int)) is not None:
    flat = _unwrap_logprob_objects(ctx, flat, position_of)
  values = np.array(flat, dtype=np.float64).reshape(len(flat))
  positive = np.flatnonzero(values > _MAX_LOGPROB)
  if positive.size:
    position = position_of(int(positive[0]))
    raise ctx.error(
        f"logprobs[{position}]",
        f"log-probability {values[positive[0]]} is positive; expected log-probabilities (<= 0), "
        "not logits or probabilities",
        position=position)

  width = max(k, int(counts.max()) if length else 0)
  table = np.full((length, width), -np.inf)
  row_index = np.repeat(np.arange(length), counts)
  column_index = np.arange(len(flat)) - np.repeat(ends - counts, counts)
  table[row_index, column_index] = values
  # Descending order; NaN entries sort last and count as not finite.
  table = -np.sort(-table, axis=1)[:, :k]

  num_finite = np.isfinite(table).sum(axis=1)
  short = np.flatnonzero((num_finite < k) & ~missing)
  if short.size:
    position = int(short[0])
    raise ctx.error(
        f"logprobs[{position}]",
        f"has {num_finite[position]} finite log-probabilities ({counts[position]} entries); "
        f"entropy_k = {k} needs at least {k}. Set entropy_k to at most the number of "
        "log-probabilities the file stores per token, or regenerate the traces with more",
        position=position)
  table[missing] = np.nan
  return missing, table


def _unwrap_logprob_objects(ctx: _fields.RecordContext, flat: list[Any], position_of) -> list:
  """Replace `{"logprob": x, ...}` values by x, checking that every value is a number."""
  numbers = []
  for flat_index, value in enumerate(flat):
    if isinstance(value, dict):
      value = value.get("logprob")
    if not _fields.is_number(value):
      position = position_of(flat_index)
      raise ctx.error(
          f"logprobs[{position}]",
          f"expected a log-probability (a number, or an object with a numeric 'logprob'), got "
          f"{_fields.describe(flat[flat_index])}",
          position=position)
    numbers.append(value)
  return numbers


def _sampled_logprobs(entries: list[Any], token_ids: np.ndarray) -> np.ndarray:
  """[length] log-probability of each generated token, NaN where its entry lacks it."""
  result = np.full(len(entries), np.nan)
  for position, (entry, token_id) in enumerate(zip(entries, token_ids.tolist())):
    if entry is None:
      continue
    value = entry.get(str(token_id))
    if isinstance(value, dict):
      value = value.get("logprob")
    if _fields.is_number(value):
      result[position] = value
  return result
