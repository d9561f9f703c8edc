"""Reader of the reference implementation's `entropy_results.json` and its `.jsonl` variant.

Each record is one trajectory with an `entropy_sequence`: one object per generated token holding
its top-10 renormalised `entropy` in nats (null when the model returned no log-probabilities)
and optionally the renormalised `top_k_probs`. Records are parsed one at a time and converted
to numpy arrays at once, so a large file never exists as Python objects all at the same time.

Identity rules:
  problem id: `original_id`, else `id` with a trailing `_traj_<k>` removed (as a string).
  trajectory index: `trajectory_index`, else the `_traj_<k>` suffix of `id`, else the number
    of earlier records of the same problem in the file.
"""

from __future__ import annotations

import itertools
import os
from typing import Any, Iterable, Iterator

import numpy as np

from ec_jax.traces import _fields
from ec_jax.traces import _json_stream
from ec_jax.traces.trajectory import Trajectory

_NoneType = type(None)


def iter_reference_json(path: str | os.PathLike[str]) -> Iterator[Trajectory]:
  """Yield the trajectories of a reference `entropy_results.json` (a JSON array), one by one.

  Raises:
    TraceFormatError: the file is malformed. The message names the file, the record (index
      and id) and the field, or gives the byte offset of a JSON syntax error.
  """
  return _iter_records(os.fspath(path), _json_stream.iter_json_array(path))


def iter_reference_jsonl(path: str | os.PathLike[str]) -> Iterator[Trajectory]:
  """Yield the trajectories of a reference `.jsonl` file (one record per line), one by one.

  Agentic runs write this variant with a `reward` per record; `label` is then `reward > 0`.

  Raises:
    TraceFormatError: as for `iter_reference_json`.
  """
  return _iter_records(os.fspath(path), _json_stream.iter_json_lines(path))


def _iter_records(path: str, records: Iterable[tuple[int, dict[str, Any]]]) -> Iterator[Trajectory]:
  keys = _fields.KeyTracker(path)
  for index, record in records:
    yield parse_reference_record(record, path=path, index=index, keys=keys)


def parse_reference_record(
    record: dict[str, Any],
    *,
    path: str,
    index: int,
    keys: _fields.KeyTracker,
) -> Trajectory:
  """Convert one parsed reference record to a Trajectory.

  Args:
    record: the JSON object of one trajectory.
    path: the file it came from (for error messages).
    index: its 0-based position in the file.
    keys: tracker of the keys seen so far in this file, for the fallback trajectory index and
      the duplicate check.
  """
  ctx = _fields.RecordContext(path, index)
  record_id = None
  if record.get("id") is not None:
    record_id = _fields.parse_id(ctx, record["id"], "id")
  ctx = _fields.RecordContext(path, index, record_id)

  problem_id, trajectory_index = _parse_identity(ctx, record, record_id, keys)
  ctx = _fields.RecordContext(
      path, index, record_id if record_id is not None else f"{problem_id}_traj_{trajectory_index}")

  if "entropy_sequence" not in record:
    raise ctx.error(
        "entropy_sequence",
        "missing; every record needs an entropy_sequence list (empty for a failed generation)")
  sequence = record["entropy_sequence"]
  if not isinstance(sequence, list):
    raise ctx.error(
        "entropy_sequence",
        f"expected a list of per-token objects, got {_fields.describe(sequence)}; write [] for a "
        "failed generation")
  entropy, missing = _parse_entropies(ctx, sequence)
  topk_logprobs = _parse_top_k_probs(ctx, sequence)
  token_ids = _parse_reference_token_ids(ctx, record, sequence)

  reward = _fields.parse_optional_float(ctx, record.get("reward"), "reward")
  label = None if reward is None else reward > 0

  keys.register(ctx, problem_id, trajectory_index)
  return Trajectory(
      problem_id=problem_id,
      trajectory_index=trajectory_index,
      entropy=entropy,
      missing=missing,
      topk_logprobs=topk_logprobs,
      token_ids=token_ids,
      text=_fields.parse_optional_str(ctx, record.get("generated_text"), "generated_text"),
      ground_truth=_fields.collapse_answer(record.get("solution")),
      reward=reward,
      label=label,
      record_id=record_id,
  )


def _parse_identity(
    ctx: _fields.RecordContext,
    record: dict[str, Any],
    record_id: str | None,
    keys: _fields.KeyTracker,
) -> tuple[str, int]:
  """(problem id, trajectory index) by the rules in the module docstring."""
  id_base, id_suffix = (None, None)
  if record_id is not None:
    id_base, id_suffix = _fields.split_trajectory_id(record_id)

  if record.get("original_id") is not None:
    problem_id = _fields.parse_id(ctx, record["original_id"], "original_id")
    if record_id is not None and record_id == problem_id:
      # A bare id equal to the problem id carries no trajectory index.
      id_suffix = None
  elif id_base is not None:
    problem_id = id_base
  else:
    raise ctx.error(
        "original_id",
        "missing; the record needs `original_id` (the problem id) or an `id` of the form "
        "'<problem>_traj_<k>'")

  if record.get("trajectory_index") is not None:
    trajectory_index = _fields.parse_index(ctx, record["trajectory_index"], "trajectory_index")
  elif id_suffix is not None:
    trajectory_index = id_suffix
  else:
    trajectory_index = keys.order_within_problem(problem_id)
  return problem_id, trajectory_index


def _parse_entropies(
    ctx: _fields.RecordContext, sequence: list[Any]) -> tuple[np.ndarray, np.ndarray]:
  """[length] float64 entropies (NaN for null) and [length] bool missing (True for null)."""
  bad = _fields.first_bad_index(sequence, (dict,))
  if bad is not None:
    raise ctx.error(
        f"entropy_sequence[{bad}]",
        f"expected an object with an 'entropy' key, got {_fields.describe(sequence[bad])}",
        position=bad)
  try:
    values = [entry["entropy"] for entry in sequence]
  except KeyError:
    position = next(i for i, entry in enumerate(sequence) if "entropy" not in entry)
    raise ctx.error(
        f"entropy_sequence[{position}].entropy",
        "missing; every entry needs 'entropy' (a number in nats, null or NaN)",
        position=position) from None

  bad = _fields.first_bad_index(values, (float, int, _NoneType))
  if bad is not None:
    raise ctx.error(
        f"entropy_sequence[{bad}].entropy",
        f"expected a number, null or NaN, got {_fields.describe(values[bad])}",
        position=bad)
  missing = np.fromiter((value is None for value in values), dtype=np.bool_, count=len(values))
  # NumPy converts None to NaN in a float64 array.
  entropy = np.array(values, dtype=np.float64).reshape(len(values))
  _fields.check_finite_or_nan(ctx, entropy, "entropy_sequence[{}].entropy")
  return entropy, missing


def _parse_top_k_probs(ctx: _fields.RecordContext, sequence: list[Any]) -> np.ndarray | None:
  """[length, k] log of each entry's `top_k_probs` in descending order, or None if none has any.

  k is the longest list in the trajectory. Shorter lists are padded with -inf (probability
  zero), and entries without probabilities give a NaN row.
  """
  rows = [entry.get("top_k_probs") for entry in sequence]
  for position, row in enumerate(rows):
    if row is not None and not isinstance(row, list):
      raise ctx.error(
          f"entropy_sequence[{position}].top_k_probs",
          f"expected a list of probabilities, got {_fields.describe(row)}", position=position)
  counts = np.fromiter((len(row) if row else 0 for row in rows), dtype=np.int64, count=len(rows))
  k = int(counts.max()) if counts.size else 0
  if k == 0:
    return None

  flat = list(itertools.chain.from_iterable(row for row in rows if row))
  bad = _fields.first_bad_index(flat, (float, int))
  if bad is not None:
    position = int(np.searchsorted(np.cumsum(counts), bad, side="right"))
    raise ctx.error(
        f"entropy_sequence[{position}].top_k_probs",
        f"expected numbers, got {_fields.describe(flat[bad])}", position=position)
  probs = np.array(flat, dtype=np.float64)
  negative = np.flatnonzero(~(probs >= 0))
  if negative.size:
    position = int(np.searchsorted(np.cumsum(counts), negative[0], side="right"))
    raise ctx.error(
        f"entropy_sequence[{position}].top_k_probs",
        f"probability {probs[negative[0]]} is negative or NaN; expected values in [0, 1]",
        position=position)

  with np.errstate(divide="ignore"):
    logprobs = np.log(probs)
  table = np.full((len(rows), k), -np.inf)
  row_index = np.repeat(np.arange(len(rows)), counts)
  starts = np.cumsum(counts) - counts
  column_index = np.arange(len(flat)) - np.repeat(starts, counts)
  table[row_index, column_index] = logprobs
  table = -np.sort(-table, axis=1)
  table[counts == 0] = np.nan
  return table


def _parse_reference_token_ids(
    ctx: _fields.RecordContext, record: dict[str, Any], sequence: list[Any]) -> np.ndarray | None:
  """[length] token ids from `token_ids`, else from each entry's `token_id`, else None."""
  length = len(sequence)
  if record.get("token_ids") is not None:
    token_ids = _fields.parse_token_ids(ctx, record["token_ids"], "token_ids")
    if token_ids.shape[0] != length:
      raise ctx.error(
          "token_ids",
          f"has {token_ids.shape[0]} entries but entropy_sequence has {length}; both list the "
          "generated tokens, so they must have the same length")
    return token_ids
  if length and all("token_id" in entry for entry in sequence):
    return _fields.parse_token_ids(
        ctx, [entry["token_id"] for entry in sequence], "entropy_sequence[].token_id")
  return None
