"""Packing trajectories into the padded [rows, time] arrays that the scoring code takes.

The time axis is padded to a multiple of `pad_multiple`, so batches of similar length share one
compiled shape. Invalid and padded positions contain 0.0 so that no NaN reaches a masked
computation, and the masks mark which values count.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

from absl import logging
import numpy as np

from ec_jax.traces.trajectory import Trajectory


@dataclasses.dataclass(frozen=True, eq=False)
class PackedTraces:
  """Trajectories as padded arrays, one row per trajectory in input order.

  Attributes:
    entropies: [rows, time] float64 entropies in nats, 0.0 where `valid` is False. None when
      the trajectories store log-probabilities instead of entropies (vLLM-style traces).
    valid: [rows, time] bool, True where the position is inside the trajectory and has a value
      that is not NaN. With `entropies` None, a position is valid when its top-k row is present.
    lengths: [rows] int32, the length L of each trajectory (invalid positions included).
    num_nan: [rows] int32, positions inside L whose value is NaN (not null).
    num_missing: [rows] int32, positions inside L with no value (null in the file).
    topk_logprobs: [rows, time, k] float64, the k largest log-probabilities in descending order,
      0.0 where `topk_valid` is False; -inf marks a zero probability or a row shorter than k.
      None when some trajectory has none or `include_topk` was False.
    topk_valid: [rows, time] bool, where `topk_logprobs` contains a row from the file; None with it.
    problem_ids: the problem id of each row.
    trajectory_index: [rows] int32.
    labels: [rows] bool, the labels (False where unlabelled).
    labelled: [rows] bool, True where the trajectory has a label.
  """

  entropies: np.ndarray | None
  valid: np.ndarray
  lengths: np.ndarray
  num_nan: np.ndarray
  num_missing: np.ndarray
  topk_logprobs: np.ndarray | None
  topk_valid: np.ndarray | None
  problem_ids: list[str]
  trajectory_index: np.ndarray
  labels: np.ndarray
  labelled: np.ndarray

  @property
  def num_rows(self) -> int:
    return int(self.lengths.shape[0])

  @property
  def time(self) -> int:
    return int(self.valid.shape[1])


def padded_time(max_length: int, pad_multiple: int) -> int:
  """Return the smallest positive multiple of `pad_multiple` that is at least `max_length`."""
  if isinstance(pad_multiple, bool) or not isinstance(pad_multiple, int) or pad_multiple < 1:
    raise ValueError(f"pad_multiple must be a positive integer, got {pad_multiple!r}")
  num_blocks = max(1, -(-max_length // pad_multiple))
  return num_blocks * pad_multiple


def pack(
    trajectories: Sequence[Trajectory],
    pad_multiple: int = 128,
    include_topk: bool = True,
) -> PackedTraces:
  """Stack trajectories into padded arrays (see PackedTraces).

  Args:
    trajectories: the trajectories, all with entropies or all without (vLLM-style).
    pad_multiple: the time axis is padded to a multiple of this (at least one block).
    include_topk: whether to build `topk_logprobs`; it takes rows * time * k * 8 bytes, so
      pack large imports in batches of problems.

  Raises:
    ValueError: no trajectories, or some have entropies and others do not.
  """
  if not trajectories:
    raise ValueError("pack needs at least one trajectory")
  nonempty = [t for t in trajectories if t.num_tokens]
  with_entropy = [t.entropy is not None for t in nonempty]
  if any(with_entropy) and not all(with_entropy):
    raise ValueError(
        "some trajectories have entropies and others only log-probabilities; pack trajectories "
        "of one trace format at a time")
  has_entropy = all(with_entropy) if nonempty else True

  rows = len(trajectories)
  lengths = np.array([t.num_tokens for t in trajectories], dtype=np.int32)
  time = padded_time(int(lengths.max()), pad_multiple)

  topk_width = _common_topk_width(trajectories) if include_topk else None
  if topk_width is None and not has_entropy:
    raise ValueError(
        "trajectories without entropies need their top-k log-probabilities; some trajectory "
        "has none")

  entropies = np.zeros((rows, time), dtype=np.float64) if has_entropy else None
  valid = np.zeros((rows, time), dtype=np.bool_)
  num_nan = np.zeros(rows, dtype=np.int32)
  num_missing = np.zeros(rows, dtype=np.int32)
  topk_logprobs = topk_valid = None
  if topk_width is not None:
    topk_logprobs = np.zeros((rows, time, topk_width), dtype=np.float64)
    topk_valid = np.zeros((rows, time), dtype=np.bool_)

  for row, trajectory in enumerate(trajectories):
    length = trajectory.num_tokens
    num_missing[row] = np.count_nonzero(trajectory.missing)
    if topk_logprobs is not None and length:
      table = trajectory.topk_logprobs
      present = ~np.isnan(table).any(axis=1)
      topk_valid[row, :length] = present
      topk_logprobs[row, :length, :table.shape[1]] = np.where(present[:, None], table, 0.0)
      topk_logprobs[row, :length, table.shape[1]:] = np.where(present[:, None], -np.inf, 0.0)
    if has_entropy and length:
      values = trajectory.entropy
      is_nan = np.isnan(values)
      num_nan[row] = np.count_nonzero(is_nan & ~trajectory.missing)
      valid[row, :length] = ~is_nan
      entropies[row, :length] = np.where(is_nan, 0.0, values)
    elif length:
      valid[row, :length] = topk_valid[row, :length]

  labels = np.array([bool(t.label) for t in trajectories], dtype=np.bool_)
  labelled = np.array([t.label is not None for t in trajectories], dtype=np.bool_)
  return PackedTraces(
      entropies=entropies,
      valid=valid,
      lengths=lengths,
      num_nan=num_nan,
      num_missing=num_missing,
      topk_logprobs=topk_logprobs,
      topk_valid=topk_valid,
      problem_ids=[t.problem_id for t in trajectories],
      trajectory_index=np.array([t.trajectory_index for t in trajectories], dtype=np.int32),
      labels=labels,
      labelled=labelled,
  )


def _common_topk_width(trajectories: Sequence[Trajectory]) -> int | None:
  """Return the largest k over trajectories with tokens, or None if one has no top-k table."""
  widths = []
  for trajectory in trajectories:
    if not trajectory.num_tokens:
      continue
    if trajectory.topk_logprobs is None:
      logging.info("Packing without top-k log-probabilities: %s trajectory %d has none.",
                   trajectory.problem_id, trajectory.trajectory_index)
      return None
    widths.append(trajectory.topk_logprobs.shape[1])
  return max(widths) if widths else None


@dataclasses.dataclass(frozen=True, eq=False)
class ProblemGroups:
  """Rows grouped by problem, for per-problem selection.

  Attributes:
    problem_ids: [problems] ids in first-seen order.
    rows: [problems, N] int32 row indices, sorted by trajectory_index within a problem; -1 pads
      problems with fewer than N trajectories.
    mask: [problems, N] bool, True where `rows` contains a row.
  """

  problem_ids: list[str]
  rows: np.ndarray
  mask: np.ndarray


def group_by_problem(
    problem_ids: Sequence[str],
    trajectory_index: Sequence[int] | np.ndarray,
) -> ProblemGroups:
  """Group row indices by problem (first-seen order), sorted by trajectory index.

  Args:
    problem_ids: [rows] problem id of each row (e.g. `PackedTraces.problem_ids`).
    trajectory_index: [rows] trajectory index of each row.

  Raises:
    ValueError: the lengths differ, or a (problem, trajectory_index) pair repeats.
  """
  trajectory_index = np.asarray(trajectory_index)
  if len(problem_ids) != trajectory_index.shape[0]:
    raise ValueError(
        f"problem_ids has {len(problem_ids)} entries but trajectory_index has "
        f"{trajectory_index.shape[0]}")
  members: dict[str, list[tuple[int, int]]] = {}
  for row, problem_id in enumerate(problem_ids):
    members.setdefault(problem_id, []).append((int(trajectory_index[row]), row))

  width = max((len(group) for group in members.values()), default=0)
  rows = np.full((len(members), width), -1, dtype=np.int32)
  for problem, (problem_id, group) in enumerate(members.items()):
    group.sort()
    indices = [index for index, _ in group]
    if len(set(indices)) != len(indices):
      duplicate = next(index for index in indices if indices.count(index) > 1)
      raise ValueError(
          f"problem {problem_id!r} has trajectory_index {duplicate} in more than one row")
    rows[problem, :len(group)] = [row for _, row in group]
  return ProblemGroups(problem_ids=list(members), rows=rows, mask=rows >= 0)


def group_packed(packed: PackedTraces) -> ProblemGroups:
  """`group_by_problem` on the rows of a PackedTraces."""
  return group_by_problem(packed.problem_ids, packed.trajectory_index)
