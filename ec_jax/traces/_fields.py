"""Checked conversion of JSON field values shared by the trace readers."""

from __future__ import annotations

import collections
import dataclasses
import re
from typing import Any, Sequence

import numpy as np

from ec_jax.traces.trajectory import TraceFormatError

_TRAJECTORY_SUFFIX = re.compile(r"^(.*)_traj_(\d+)$", re.DOTALL)
_NUMBER_TYPES = (int, float)


@dataclasses.dataclass(frozen=True)
class RecordContext:
  """Location of a record in a file (path, index, id), for error messages."""

  path: str
  index: int | None
  record_id: object = None

  def error(self, field: str, detail: str, position: int | None = None) -> TraceFormatError:
    return TraceFormatError(
        self.path, detail, record_index=self.index, record_id=self.record_id, field=field,
        position=position)


def describe(value: Any) -> str:
  """Describe a JSON value for error messages by its type and a clipped repr."""
  text = repr(value)
  if len(text) > 60:
    text = text[:57] + "..."
  return f"{type(value).__name__} {text}"


def is_number(value: Any) -> bool:
  """Return whether a parsed JSON value is a number (bools are not numbers here)."""
  return isinstance(value, _NUMBER_TYPES) and not isinstance(value, bool)


def split_trajectory_id(record_id: str) -> tuple[str, int | None]:
  """Split `"<problem>_traj_<k>"` into (problem, k); a bare id gives (id, None)."""
  match = _TRAJECTORY_SUFFIX.match(record_id)
  if match is None:
    return record_id, None
  return match.group(1), int(match.group(2))


def parse_id(ctx: RecordContext, value: Any, field: str) -> str:
  """Convert a string or integer id to a string."""
  if isinstance(value, str):
    return value
  if isinstance(value, int) and not isinstance(value, bool):
    return str(value)
  raise ctx.error(field, f"expected a string or integer id, got {describe(value)}")


def parse_index(ctx: RecordContext, value: Any, field: str) -> int:
  """Check a non-negative integer index."""
  if isinstance(value, bool) or not isinstance(value, int):
    raise ctx.error(field, f"expected a non-negative integer, got {describe(value)}")
  if value < 0:
    raise ctx.error(field, f"expected a non-negative integer, got {value}")
  return value


def parse_optional_float(ctx: RecordContext, value: Any, field: str) -> float | None:
  """Check a number or null."""
  if value is None:
    return None
  if not is_number(value):
    raise ctx.error(field, f"expected a number or null, got {describe(value)}")
  return float(value)


def parse_optional_str(ctx: RecordContext, value: Any, field: str) -> str | None:
  """Check a string or null."""
  if value is None or isinstance(value, str):
    return value
  raise ctx.error(field, f"expected a string or null, got {describe(value)}")


def parse_optional_bool(ctx: RecordContext, value: Any, field: str) -> bool | None:
  """Check true, false or null."""
  if value is None or isinstance(value, bool):
    return value
  raise ctx.error(field, f"expected true, false or null, got {describe(value)}")


def collapse_answer(value: Any) -> str | None:
  """Convert an answer field to one string.

  A one-element list gives its element, a longer list is joined with commas, and numbers are
  converted with `str`.
  """
  if value is None:
    return None
  if isinstance(value, list):
    if len(value) == 1:
      return collapse_answer(value[0])
    return ",".join(str(item) for item in value)
  return str(value)


def first_bad_index(values: Sequence[Any], allowed: tuple[type, ...]) -> int | None:
  """Index of the first value whose exact type is not in `allowed`, or None."""
  if set(map(type, values)).issubset(allowed):
    return None
  for i, value in enumerate(values):
    if type(value) not in allowed:
      return i
  return None


def parse_token_ids(ctx: RecordContext, values: Any, field: str) -> np.ndarray:
  """[length] int64 array from a JSON list of integers."""
  if not isinstance(values, list):
    raise ctx.error(field, f"expected a list of token ids, got {describe(values)}")
  bad = first_bad_index(values, (int,))
  if bad is not None:
    raise ctx.error(
        f"{field}[{bad}]", f"expected an integer token id, got {describe(values[bad])}",
        position=bad)
  try:
    return np.asarray(values, dtype=np.int64).reshape(len(values))
  except OverflowError as e:
    raise ctx.error(field, f"a token id does not fit in int64 ({e})") from e


def check_finite_or_nan(ctx: RecordContext, values: np.ndarray, field_format: str) -> None:
  """Reject +-inf: an infinite entropy is not a valid value (NaN and null are)."""
  infinite = np.flatnonzero(np.isinf(values))
  if infinite.size:
    position = int(infinite[0])
    raise ctx.error(
        field_format.format(position),
        f"entropy is {values[position]}; expected a finite number, null or NaN",
        position=position)


class KeyTracker:
  """Assigns fallback trajectory indices and rejects duplicate (problem, index) keys."""

  def __init__(self, path: str):
    self._path = path
    self._seen_per_problem: collections.Counter[str] = collections.Counter()
    self._first_record: dict[tuple[str, int], int] = {}

  def order_within_problem(self, problem_id: str) -> int:
    """Number of earlier records of this problem: the fallback trajectory index."""
    return self._seen_per_problem[problem_id]

  def register(self, ctx: RecordContext, problem_id: str, trajectory_index: int) -> None:
    key = (problem_id, trajectory_index)
    if key in self._first_record:
      raise TraceFormatError(
          self._path,
          f"problem {problem_id!r} trajectory {trajectory_index} appears twice (first in record "
          f"{self._first_record[key]}); remove the duplicate or fix its trajectory_index",
          record_index=ctx.index, record_id=ctx.record_id, field="trajectory_index")
    self._first_record[key] = ctx.index
    self._seen_per_problem[problem_id] += 1

