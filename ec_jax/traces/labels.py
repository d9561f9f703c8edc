"""Correctness labels from the reference implementation's `evaluation_cache.json`.

The file maps trajectory ids to grading results:
  {"version": 2, "task_type": ..., "trajectories": {"<id>": {"is_correct": bool,
   "extracted_answer": ..., "ground_truth": ..., "original_id": ...}}}
An id is `"<problem>_traj_<k>"`, or the bare problem id when each problem has one trajectory
(k = 0). A trajectory missing from the file is unlabelled (label None), never wrong: the
reference implementation counts it as wrong, which hides grading gaps.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
from typing import Any, Iterable, Mapping

from absl import logging

from ec_jax.traces import _fields
from ec_jax.traces.trajectory import TraceFormatError
from ec_jax.traces.trajectory import Trajectory

EVALUATION_CACHE_NAME = "evaluation_cache.json"
_NUM_EXAMPLES = 5


@dataclasses.dataclass(frozen=True)
class CacheEntry:
  """One grading result: `is_correct` is None when the file has null there."""

  problem_id: str
  trajectory_index: int
  is_correct: bool | None
  extracted_answer: str | None = None
  ground_truth: str | None = None


@dataclasses.dataclass(frozen=True)
class LabelMatch:
  """Match counts between trajectories and a label file.

  Attributes:
    num_labelled: trajectories that received a true/false label.
    num_unlabelled: trajectories with no entry (or a null `is_correct`) in the file.
    num_unused: file entries that match no trajectory.
    unlabelled_examples: up to 5 `problem_traj_k` ids of unlabelled trajectories.
    unused_examples: up to 5 ids from the file that match no trajectory.
  """

  num_labelled: int
  num_unlabelled: int
  num_unused: int
  unlabelled_examples: tuple[str, ...] = ()
  unused_examples: tuple[str, ...] = ()


def read_evaluation_cache(path: str | os.PathLike[str]) -> dict[str, CacheEntry]:
  """Read an `evaluation_cache.json` into a mapping from trajectory id to its entry.

  Also accepts a plain object mapping ids to entries (without the `trajectories` wrapper).

  Raises:
    TraceFormatError: the file is not valid JSON, or an entry lacks a boolean `is_correct`.
  """
  path = os.fspath(path)
  try:
    with open(path, "r", encoding="utf-8") as file:
      data = json.load(file)
  except json.JSONDecodeError as e:
    raise TraceFormatError(
        path, f"invalid JSON ({e.msg}); regenerate the evaluation cache",
        byte_offset=e.pos) from e
  if not isinstance(data, dict):
    raise TraceFormatError(
        path, f"expected a JSON object with a 'trajectories' mapping, got {_fields.describe(data)}")
  entries = data.get("trajectories", data)
  if not isinstance(entries, dict):
    raise TraceFormatError(
        path, f"'trajectories' must map trajectory ids to objects, got "
        f"{_fields.describe(entries)}", field="trajectories")

  result = {}
  keys_seen: dict[tuple[str, int], str] = {}
  for index, (trajectory_id, entry) in enumerate(entries.items()):
    entry = _parse_cache_entry(path, index, trajectory_id, entry)
    key = (entry.problem_id, entry.trajectory_index)
    if key in keys_seen:
      raise TraceFormatError(
          path,
          f"ids {keys_seen[key]!r} and {trajectory_id!r} both name problem {key[0]!r} "
          f"trajectory {key[1]}; remove one of them",
          record_index=index, record_id=trajectory_id)
    keys_seen[key] = trajectory_id
    result[trajectory_id] = entry
  return result


def _parse_cache_entry(path: str, index: int, trajectory_id: str, entry: Any) -> CacheEntry:
  ctx = _fields.RecordContext(path, index, trajectory_id)
  if not isinstance(entry, dict):
    raise ctx.error(
        f"trajectories[{trajectory_id!r}]",
        f"expected an object with 'is_correct', got {_fields.describe(entry)}")
  if "is_correct" not in entry:
    raise ctx.error("is_correct", "missing; every entry needs is_correct (true, false or null)")
  is_correct = _fields.parse_optional_bool(ctx, entry["is_correct"], "is_correct")

  problem_id, trajectory_index = _fields.split_trajectory_id(trajectory_id)
  if entry.get("original_id") is not None:
    original_id = _fields.parse_id(ctx, entry["original_id"], "original_id")
    if trajectory_id == original_id:
      # A bare id: the problem's only trajectory.
      problem_id, trajectory_index = original_id, None
    elif trajectory_index is not None:
      problem_id = original_id
  return CacheEntry(
      problem_id=problem_id,
      trajectory_index=0 if trajectory_index is None else trajectory_index,
      is_correct=is_correct,
      extracted_answer=_fields.collapse_answer(entry.get("extracted_answer")),
      ground_truth=_fields.collapse_answer(entry.get("ground_truth")),
  )


def read_labels(path: str | os.PathLike[str]) -> dict[str, bool]:
  """Read an `evaluation_cache.json` into {trajectory id: is_correct}, leaving out null labels."""
  return {
      trajectory_id: entry.is_correct
      for trajectory_id, entry in read_evaluation_cache(path).items()
      if entry.is_correct is not None
  }


def find_labels_file(trace_path: str | os.PathLike[str]) -> pathlib.Path | None:
  """Return the `evaluation_cache.json` in the trace file's folder (or in the folder itself)."""
  trace_path = pathlib.Path(trace_path)
  folder = trace_path if trace_path.is_dir() else trace_path.parent
  candidate = folder / EVALUATION_CACHE_NAME
  if candidate.is_file():
    logging.info("Using labels from %s (found next to %s).", candidate, trace_path)
    return candidate
  logging.info("No %s next to %s; trajectories keep the labels stored with them.",
               EVALUATION_CACHE_NAME, trace_path)
  return None


def attach_labels(
    trajectories: Iterable[Trajectory],
    cache: Mapping[str, CacheEntry | bool],
    *,
    source: str = "labels",
) -> tuple[list[Trajectory], LabelMatch]:
  """Set each trajectory's label (and missing answer and ground truth) from a label file.

  Trajectories are matched by (problem_id, trajectory_index). A trajectory without an entry
  gets label None (unlabelled), even if it had one before, so labels never mix two sources.

  Args:
    trajectories: the trajectories to label.
    cache: the entries from `read_evaluation_cache`, or {trajectory id: is_correct} as from
      `read_labels` (ids of the form `"<problem>_traj_<k>"`, or a bare problem id for k = 0).
    source: a name for the label file in log messages.

  Returns:
    The labelled trajectories in input order, and the match counts (also logged).
  """
  by_key = {}
  for trajectory_id, entry in cache.items():
    if not isinstance(entry, CacheEntry):
      entry = _entry_from_bool(trajectory_id, entry)
    by_key[(entry.problem_id, entry.trajectory_index)] = (trajectory_id, entry)
  used = set()
  labelled = []
  unlabelled_ids = []
  for trajectory in trajectories:
    found = by_key.get(trajectory.key)
    if found is None or found[1].is_correct is None:
      unlabelled_ids.append(f"{trajectory.problem_id}_traj_{trajectory.trajectory_index}")
    if found is None:
      labelled.append(dataclasses.replace(trajectory, label=None))
      continue
    used.add(trajectory.key)
    entry = found[1]
    labelled.append(dataclasses.replace(
        trajectory,
        label=entry.is_correct,
        answer=trajectory.answer if trajectory.answer is not None else entry.extracted_answer,
        ground_truth=(trajectory.ground_truth if trajectory.ground_truth is not None
                      else entry.ground_truth),
    ))

  unused_ids = [trajectory_id for key, (trajectory_id, _) in by_key.items() if key not in used]
  match = LabelMatch(
      num_labelled=len(labelled) - len(unlabelled_ids),
      num_unlabelled=len(unlabelled_ids),
      num_unused=len(unused_ids),
      unlabelled_examples=tuple(unlabelled_ids[:_NUM_EXAMPLES]),
      unused_examples=tuple(unused_ids[:_NUM_EXAMPLES]),
  )
  _log_match(source, match)
  return labelled, match


def _entry_from_bool(trajectory_id: str, is_correct: bool) -> CacheEntry:
  if not isinstance(is_correct, bool):
    raise TypeError(
        f"label of {trajectory_id!r} must be a bool or CacheEntry, got {is_correct!r}")
  problem_id, trajectory_index = _fields.split_trajectory_id(trajectory_id)
  return CacheEntry(problem_id, 0 if trajectory_index is None else trajectory_index, is_correct)


def _log_match(source: str, match: LabelMatch) -> None:
  logging.info("Labels from %s: %d trajectories labelled, %d unlabelled, %d entries unused.",
               source, match.num_labelled, match.num_unlabelled, match.num_unused)
  if match.num_unlabelled:
    logging.warning(
        "%d trajectories have no label in %s (e.g. %s); they count as unlabelled, not wrong.",
        match.num_unlabelled, source, ", ".join(match.unlabelled_examples))
  if match.num_unused:
    logging.warning(
        "%d entries of %s match no trajectory (e.g. %s); check that the ids belong to this "
        "trace file.", match.num_unused, source, ", ".join(match.unused_examples))
