"""One imported trajectory and the error raised for malformed trace files."""

from __future__ import annotations

import dataclasses
import os
from typing import Mapping

import numpy as np


class TraceFormatError(ValueError):
  """Raised when a trace file contains a value that ec_jax cannot read.

  Attributes:
    path: the file that was being read.
    record_index: 0-based index of the record (array element or line) in the file, when known.
    record_id: the record's `id` (or problem id and trajectory index), when known.
    field: the field that contains the invalid value, e.g. `entropy_sequence[12].entropy`.
    position: token position inside the trajectory, when the error concerns one token.
    byte_offset: byte offset in the file where a JSON syntax error was found.
    detail: the message without the location prefix.
  """

  def __init__(
      self,
      path: str | os.PathLike[str],
      detail: str,
      *,
      record_index: int | None = None,
      record_id: object = None,
      field: str | None = None,
      position: int | None = None,
      byte_offset: int | None = None,
  ):
    self.path = os.fspath(path)
    self.detail = detail
    self.record_index = record_index
    self.record_id = record_id
    self.field = field
    self.position = position
    self.byte_offset = byte_offset
    super().__init__(self._format())

  def __reduce__(self):
    # Pickling (e.g. across processes) must pass the keyword arguments back to __init__.
    return (_rebuild_trace_format_error, (self.path, self.detail, {
        "record_index": self.record_index, "record_id": self.record_id, "field": self.field,
        "position": self.position, "byte_offset": self.byte_offset}))

  @property
  def record(self) -> str | None:
    """The record as `index 3 (id 'p_traj_1')`, or None when the error is not about one record."""
    parts = []
    if self.record_index is not None:
      parts.append(f"index {self.record_index}")
    if self.record_id is not None:
      parts.append(f"(id {self.record_id!r})")
    return " ".join(parts) if parts else None

  def _format(self) -> str:
    location = [self.path]
    if self.byte_offset is not None:
      location.append(f"byte offset {self.byte_offset}")
    if self.record is not None:
      location.append(f"record {self.record}")
    if self.field is not None:
      location.append(f"field {self.field}")
    if self.position is not None:
      location.append(f"position {self.position}")
    return ", ".join(location) + ": " + self.detail


def _rebuild_trace_format_error(path: str, detail: str, keywords: dict) -> TraceFormatError:
  return TraceFormatError(path, detail, **keywords)


@dataclasses.dataclass(frozen=True, eq=False)
class Trajectory:
  """One generated trajectory with its per-token statistics, as read from a trace file.

  Attributes:
    problem_id: the problem id as a string (integer ids are converted with `str`).
    trajectory_index: index k of the trajectory within its problem.
    entropy: [length] float64 token entropies in nats; NaN where the file had null or NaN.
      None for formats that store log-probabilities instead (entropies are then computed from
      `topk_logprobs` by the scoring code).
    missing: [length] bool, True where the file had no value (null), as opposed to NaN.
    topk_logprobs: [length, k] float64, the k largest log-probabilities per position in
      descending order. A row is NaN where the position has none. Rows with fewer than k
      entries in the file are padded with -inf (probability zero). None when the file stores none.
    token_ids: [length] int64 generated token ids, or None when the file stores none.
    text: the generated text, or None.
    ground_truth: the reference answer, or None.
    reward: the agentic reward, or None.
    label: whether the answer is correct; None when unlabelled.
    answer: the extracted final answer, or None.
    record_id: the trajectory's `id` in the file, or None.
    per_token: other [length] per-token arrays by name (e.g. `logprob`, `confidence`).
  """

  problem_id: str
  trajectory_index: int
  entropy: np.ndarray | None
  missing: np.ndarray
  topk_logprobs: np.ndarray | None = None
  token_ids: np.ndarray | None = None
  text: str | None = None
  ground_truth: str | None = None
  reward: float | None = None
  label: bool | None = None
  answer: str | None = None
  record_id: str | None = None
  per_token: Mapping[str, np.ndarray] = dataclasses.field(default_factory=dict)

  def __post_init__(self):
    if not isinstance(self.problem_id, str):
      raise TypeError(f"problem_id must be a str, got {type(self.problem_id).__name__}")
    if self.missing.ndim != 1 or self.missing.dtype != np.bool_:
      raise ValueError(
          f"missing must be a [length] bool array, got shape {self.missing.shape} and dtype "
          f"{self.missing.dtype}")
    length = self.missing.shape[0]
    if self.entropy is not None and self.entropy.shape != (length,):
      raise ValueError(f"entropy has shape {self.entropy.shape}, expected ({length},)")
    if self.topk_logprobs is not None and (
        self.topk_logprobs.ndim != 2 or self.topk_logprobs.shape[0] != length):
      raise ValueError(
          f"topk_logprobs has shape {self.topk_logprobs.shape}, expected ({length}, k)")
    if self.token_ids is not None and self.token_ids.shape != (length,):
      raise ValueError(f"token_ids has shape {self.token_ids.shape}, expected ({length},)")
    for name, values in self.per_token.items():
      if values.shape[:1] != (length,):
        raise ValueError(
            f"per_token[{name!r}] has shape {values.shape}, expected a leading axis of {length}")

  @property
  def num_tokens(self) -> int:
    """Sequence length L, null and NaN positions included; 0 for a failed generation."""
    return int(self.missing.shape[0])

  @property
  def key(self) -> tuple[str, int]:
    """(problem_id, trajectory_index), the identity used to match labels and rows."""
    return (self.problem_id, self.trajectory_index)
