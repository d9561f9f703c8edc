"""Reading records from JSON-lines and JSON data files, with located errors."""

from __future__ import annotations

import gzip
import json
import pathlib
from collections.abc import Iterator
from typing import Any


class RecordError(ValueError):
  """A data record is malformed; the message names the file, line and field."""


def read_jsonl(path: pathlib.Path) -> Iterator[tuple[int, dict[str, Any]]]:
  """Yield `(line_number, record)` for each non-blank line of a JSONL file.

  Files ending in `.gz` are decompressed. Line numbers start at 1.

  Raises:
    RecordError: a line is not valid JSON or not a JSON object.
  """
  opener = gzip.open if path.suffix == ".gz" else open
  with opener(path, "rt", encoding="utf-8") as stream:
    for line_number, line in enumerate(stream, start=1):
      if not line.strip():
        continue
      try:
        record = json.loads(line)
      except json.JSONDecodeError as error:
        raise RecordError(
            f"{path}:{line_number}: invalid JSON ({error.msg} at column "
            f"{error.colno}); each line must be one JSON object"
        ) from error
      if not isinstance(record, dict):
        raise RecordError(
            f"{path}:{line_number}: expected a JSON object, got "
            f"{type(record).__name__}"
        )
      yield line_number, record


def read_json_array(path: pathlib.Path) -> list[dict[str, Any]]:
  """Return the objects of a file holding one JSON array of objects.

  Raises:
    RecordError: the file is not valid JSON, not an array, or an item is not
      an object.
  """
  with open(path, encoding="utf-8") as stream:
    try:
      records = json.load(stream)
    except json.JSONDecodeError as error:
      raise RecordError(
          f"{path}:{error.lineno}: invalid JSON ({error.msg} at column "
          f"{error.colno})"
      ) from error
  if not isinstance(records, list):
    raise RecordError(
        f"{path}: expected a JSON array of objects, got "
        f"{type(records).__name__}"
    )
  for index, record in enumerate(records):
    if not isinstance(record, dict):
      raise RecordError(
          f"{path}: item {index} is a {type(record).__name__}, expected a "
          "JSON object"
      )
  return records


def require_text(record: dict[str, Any], field: str, location: str) -> str:
  """Return a record's non-empty string field.

  Args:
    record: the parsed record.
    field: the field name.
    location: `file:line` or `file item i`, used in the error message.

  Raises:
    RecordError: the field is missing, not a string, or blank.
  """
  if field not in record:
    present = ", ".join(sorted(record)) or "none"
    raise RecordError(
        f"{location}: missing field {field!r} (fields present: {present})"
    )
  value = record[field]
  if not isinstance(value, str):
    raise RecordError(
        f"{location}: field {field!r} must be a string, got "
        f"{type(value).__name__} {value!r:.80}"
    )
  if not value.strip():
    raise RecordError(f"{location}: field {field!r} is empty")
  return value


def require_answer(record: dict[str, Any], field: str, location: str) -> str:
  """Return a record's answer field as a string; integers and floats are accepted.

  Raises:
    RecordError: the field is missing, blank, or of another type.
  """
  value = record.get(field)
  if isinstance(value, bool) or (
      value is not None and not isinstance(value, (str, int, float))
  ):
    raise RecordError(
        f"{location}: field {field!r} must be a string or a number, got "
        f"{type(value).__name__} {value!r:.80}"
    )
  if isinstance(value, (int, float)):
    return format_number_field(value)
  return require_text(record, field, location)


def format_number_field(value: int | float) -> str:
  """Return a JSON number as answer text: integer-valued floats lose `.0`."""
  if isinstance(value, float) and value.is_integer():
    return str(int(value))
  return str(value)
