"""Reader of an ec_jax run folder: `trajectories.jsonl` plus `arrays/batch_<b>.npz`.

The records give text, answers and labels; the shards give the per-token arrays. Rows and
records are joined by (problem_id, trajectory_index).
"""

from __future__ import annotations

import os
import pathlib
from typing import Any

from absl import logging
import numpy as np

from ec_jax.traces import _fields
from ec_jax.traces import records
from ec_jax.traces import shards
from ec_jax.traces.trajectory import TraceFormatError
from ec_jax.traces.trajectory import Trajectory

TRAJECTORIES_NAME = "trajectories.jsonl"
ENTROPY_KINDS = ("topk", "full", "sampling")


def is_run_folder(path: str | os.PathLike[str]) -> bool:
  """Return whether `path` is a folder that contains `trajectories.jsonl`."""
  return (pathlib.Path(path) / TRAJECTORIES_NAME).is_file()


def read_run_folder(path: str | os.PathLike[str], entropy_kind: str = "topk") -> list[Trajectory]:
  """Read the trajectories of an ec_jax run folder.

  Args:
    path: the run folder.
    entropy_kind: which recorded entropy becomes `Trajectory.entropy`: `topk`, `full` or
      `sampling` (the arrays `entropy_<kind>`).

  Returns:
    Trajectories in shard order, then row order. `entropy` is the chosen kind as float64,
    `missing` is all False (sampled positions always have a value), `label` is the record's
    `correct`, and `per_token` contains the other per-token arrays of the shard, cut to the
    trajectory's length. A shard row without a record is returned unlabelled, with a warning.

  Raises:
    TraceFormatError: the folder has no records or no shards, a shard lacks the chosen entropy,
      or a record has no shard row or disagrees with it.
  """
  if entropy_kind not in ENTROPY_KINDS:
    raise ValueError(f"entropy_kind must be one of {ENTROPY_KINDS}, got {entropy_kind!r}")
  folder = pathlib.Path(path)
  records_path = folder / TRAJECTORIES_NAME
  if not records_path.is_file():
    raise TraceFormatError(
        folder, f"not an ec_jax run folder: {TRAJECTORIES_NAME} not found")
  records_by_key = _read_trajectory_records(records_path)

  shard_list = shards.list_shards(folder)
  if not shard_list:
    raise TraceFormatError(
        folder / shards.ARRAYS_FOLDER,
        "no batch_<b>.npz shards found; the per-token arrays are needed to score trajectories")

  entropy_key = f"entropy_{entropy_kind}"
  trajectories = []
  seen = set()
  num_without_record = 0
  for _, shard_file in shard_list:
    arrays = shards.read_shard(shard_file)
    if entropy_key not in arrays:
      raise TraceFormatError(
          shard_file,
          f"has no {entropy_key!r} array (it contains {sorted(arrays)}); choose an entropy kind "
          "that the run recorded", field=entropy_key)
    for row in range(arrays["problem_id"].shape[0]):
      trajectory = _row_to_trajectory(shard_file, arrays, row, entropy_key, records_by_key)
      if trajectory.key in seen:
        raise TraceFormatError(
            shard_file,
            f"problem {trajectory.problem_id!r} trajectory {trajectory.trajectory_index} "
            "appears in more than one shard row; remove the stale shard",
            record_index=row)
      seen.add(trajectory.key)
      if trajectory.key not in records_by_key:
        num_without_record += 1
      trajectories.append(trajectory)

  without_rows = [key for key in records_by_key if key not in seen]
  if without_rows:
    problem_id, trajectory_index = without_rows[0]
    raise TraceFormatError(
        records_path,
        f"{len(without_rows)} records have no row in the array shards (first: problem "
        f"{problem_id!r} trajectory {trajectory_index}); the arrays folder is incomplete",
        record_id=f"{problem_id}_traj_{trajectory_index}")
  if num_without_record:
    logging.warning(
        "%d shard rows in %s have no record in %s; they are read without text and label.",
        num_without_record, folder, TRAJECTORIES_NAME)
  logging.info("Read %d trajectories from run folder %s (entropy: %s).",
               len(trajectories), folder, entropy_key)
  return trajectories


def _read_trajectory_records(
    path: pathlib.Path) -> dict[tuple[str, int], tuple[int, dict[str, Any]]]:
  """(line index, record) of `trajectories.jsonl` by (problem_id, trajectory_index)."""
  result = {}
  for index, record in enumerate(records.read_jsonl(path)):
    ctx = _fields.RecordContext(os.fspath(path), index)
    if record.get("problem_id") is None:
      raise ctx.error("problem_id", "missing; every record needs its problem id")
    problem_id = _fields.parse_id(ctx, record["problem_id"], "problem_id")
    if record.get("trajectory_index") is None:
      raise ctx.error("trajectory_index", "missing; every record needs its trajectory index")
    trajectory_index = _fields.parse_index(ctx, record["trajectory_index"], "trajectory_index")
    key = (problem_id, trajectory_index)
    if key in result:
      raise ctx.error(
          "trajectory_index",
          f"problem {problem_id!r} trajectory {trajectory_index} appears twice; remove the "
          "duplicate record")
    result[key] = (index, record)
  return result


def _row_to_trajectory(
    shard_file: pathlib.Path,
    arrays: dict[str, np.ndarray],
    row: int,
    entropy_key: str,
    records_by_key: dict[tuple[str, int], tuple[int, dict[str, Any]]],
) -> Trajectory:
  problem_id = str(arrays["problem_id"][row])
  trajectory_index = int(arrays["trajectory_index"][row])
  length = int(arrays["lengths"][row])
  record_id = f"{problem_id}_traj_{trajectory_index}"
  ctx = _fields.RecordContext(os.fspath(shard_file), row, record_id)

  per_token = {}
  for key, values in arrays.items():
    if key in shards.ROW_KEYS or key in (entropy_key, "token_ids") or values.ndim < 2:
      continue
    per_token[key] = values[row, :length]
  token_ids = arrays["token_ids"][row, :length].astype(np.int64) if "token_ids" in arrays else None
  entropy = arrays[entropy_key][row, :length].astype(np.float64)

  record_index, record = records_by_key.get((problem_id, trajectory_index), (None, {}))
  num_tokens = record.get("num_tokens")
  if num_tokens is not None and num_tokens != length:
    raise ctx.error(
        "lengths",
        f"is {length} but the record in {TRAJECTORIES_NAME} has num_tokens {num_tokens}; the "
        "shard and the records come from different runs")
  path = os.fspath(shard_file.parent.parent / TRAJECTORIES_NAME)
  record_ctx = _fields.RecordContext(path, record_index, record_id)
  return Trajectory(
      problem_id=problem_id,
      trajectory_index=trajectory_index,
      entropy=entropy,
      missing=np.zeros(length, dtype=np.bool_),
      token_ids=token_ids,
      text=_fields.parse_optional_str(record_ctx, record.get("text"), "text"),
      label=_fields.parse_optional_bool(record_ctx, record.get("correct"), "correct"),
      answer=_fields.collapse_answer(record.get("answer")),
      record_id=record_id,
      per_token=per_token,
  )
