"""Streaming JSON readers: one array element or one line at a time.

Trace files can be hundreds of megabytes. Loading one with `json.load` builds Python objects for
every token of every trajectory at once, which costs gigabytes. These readers therefore yield
one record at a time, and the caller converts it to numpy arrays before the next one is parsed.
"""

from __future__ import annotations

import json
import os
import re
from typing import Any, Iterator

from ec_jax.traces.trajectory import TraceFormatError

_WHITESPACE = re.compile(r"[ \t\n\r]*")
_DEFAULT_CHUNK_CHARS = 1 << 20


class _ArrayBuffer:
  """A text window over a UTF-8 file that grows on request and tracks byte offsets."""

  def __init__(self, path: str, file, chunk_chars: int):
    self.path = path
    self._file = file
    self._chunk_chars = chunk_chars
    self.text = ""
    self.pos = 0
    self.eof = False
    self._started = False
    # Bytes of the file before self.text[0].
    self._base_bytes = 0

  def fill(self, min_chars: int = 0) -> bool:
    """Read at least max(chunk, min_chars) more characters; return False at end of file."""
    if self.eof:
      return False
    try:
      data = self._file.read(max(self._chunk_chars, min_chars))
    except UnicodeDecodeError as e:
      raise TraceFormatError(
          self.path,
          f"the file is not valid UTF-8 ({e.reason}) in the block read after this offset; "
          "save it as UTF-8 JSON",
          byte_offset=self.byte_offset(len(self.text))) from e
    if not data:
      self.eof = True
      return False
    # Drop the consumed prefix so the window contains only unread text.
    consumed = self.text[:self.pos]
    self._base_bytes += len(consumed.encode("utf-8"))
    if not self._started and data.startswith("\ufeff"):
      # A UTF-8 byte order mark: 3 bytes in the file, skipped by the parser.
      data = data[1:]
      self._base_bytes = 3
    self._started = True
    self.text = self.text[self.pos:] + data
    self.pos = 0
    return True

  def skip_whitespace(self) -> bool:
    """Advance past whitespace; return False when the file ends first."""
    while True:
      self.pos = _WHITESPACE.match(self.text, self.pos).end()
      if self.pos < len(self.text):
        return True
      if not self.fill():
        return False

  def byte_offset(self, char_index: int) -> int:
    return self._base_bytes + len(self.text[:char_index].encode("utf-8"))


def iter_json_array(
    path: str | os.PathLike[str],
    chunk_chars: int = _DEFAULT_CHUNK_CHARS,
) -> Iterator[tuple[int, dict[str, Any]]]:
  """Yield (index, object) for each element of a JSON array file, parsing one at a time.

  The non-standard literals NaN, Infinity and -Infinity are accepted, as Python's `json` does.

  Raises:
    TraceFormatError: the file is not a JSON array of objects, is truncated, or contains a
      syntax error. The message gives the byte offset.
  """
  path = os.fspath(path)
  decoder = json.JSONDecoder()
  with open(path, "r", encoding="utf-8", newline="") as file:
    buf = _ArrayBuffer(path, file, chunk_chars)
    if not buf.skip_whitespace():
      raise TraceFormatError(path, "the file is empty; expected a JSON array of trajectories")
    if buf.text[buf.pos] != "[":
      raise TraceFormatError(
          path,
          f"expected a JSON array starting with '[', found {buf.text[buf.pos]!r}; for one "
          "object per line use the .jsonl reader",
          byte_offset=buf.byte_offset(buf.pos))
    buf.pos += 1
    if not buf.skip_whitespace():
      raise _truncated(path, buf, 0)
    if buf.text[buf.pos] == "]":
      buf.pos += 1
      _check_trailing(path, buf)
      return

    index = 0
    while True:
      if not buf.skip_whitespace():
        raise _truncated(path, buf, index)
      obj, end = _decode_one(path, buf, decoder, index)
      if not isinstance(obj, dict):
        raise TraceFormatError(
            path,
            f"expected a JSON object per trajectory, found a {type(obj).__name__}",
            record_index=index, byte_offset=buf.byte_offset(buf.pos))
      buf.pos = end
      yield index, obj
      index += 1

      if not buf.skip_whitespace():
        raise _truncated(path, buf, index)
      separator = buf.text[buf.pos]
      buf.pos += 1
      if separator == "]":
        break
      if separator != ",":
        raise TraceFormatError(
            path,
            f"expected ',' or ']' after record {index - 1}, found {separator!r}; the file is "
            "malformed",
            byte_offset=buf.byte_offset(buf.pos - 1))
    _check_trailing(path, buf)


def _decode_one(path: str, buf: _ArrayBuffer, decoder: json.JSONDecoder, index: int):
  """Decode the JSON value at buf.pos, reading more text until it is complete."""
  while True:
    try:
      return decoder.raw_decode(buf.text, buf.pos)
    except json.JSONDecodeError as e:
      # The value may continue past the window. Doubling the window keeps the total
      # re-parsing work linear in the value's size.
      if buf.fill(len(buf.text) - buf.pos):
        continue
      raise TraceFormatError(
          path,
          f"invalid JSON ({e.msg}); the file is truncated or malformed. Regenerate it, or "
          "repair the record at this offset",
          record_index=index, byte_offset=buf.byte_offset(e.pos)) from e


def _truncated(path: str, buf: _ArrayBuffer, num_records: int) -> TraceFormatError:
  return TraceFormatError(
      path,
      f"the file ends inside the JSON array after {num_records} complete records (no closing "
      "']'); the file is truncated. Regenerate it, or close the array after the last complete "
      "record",
      byte_offset=buf.byte_offset(len(buf.text)))


def _check_trailing(path: str, buf: _ArrayBuffer) -> None:
  if buf.skip_whitespace():
    raise TraceFormatError(
        path,
        f"unexpected data {buf.text[buf.pos:buf.pos + 20]!r} after the closing ']' of the "
        "JSON array; the file must contain exactly one array",
        byte_offset=buf.byte_offset(buf.pos))


def iter_json_lines(path: str | os.PathLike[str]) -> Iterator[tuple[int, dict[str, Any]]]:
  """Yield (index, object) for each non-blank line of a JSONL file.

  `index` counts records (blank lines are skipped and not counted).

  Raises:
    TraceFormatError: a line is not valid JSON or not an object. The message gives the line
      number and byte offset.
  """
  path = os.fspath(path)
  index = 0
  offset = 0
  with open(path, "rb") as file:
    for line_number, line in enumerate(file, start=1):
      line_offset = offset
      offset += len(line)
      if not line.strip():
        continue
      try:
        obj = json.loads(line)
      except (json.JSONDecodeError, UnicodeDecodeError) as e:
        torn = not line.endswith(b"\n")
        hint = (
            "the last line has no newline, so the file is probably truncated; remove that line"
            if torn else "fix or remove that line")
        raise TraceFormatError(
            path,
            f"line {line_number} is not valid JSON ({e}); {hint}",
            record_index=index, byte_offset=line_offset) from e
      if not isinstance(obj, dict):
        raise TraceFormatError(
            path,
            f"line {line_number} contains a {type(obj).__name__}; expected one JSON object per line",
            record_index=index, byte_offset=line_offset)
      yield index, obj
      index += 1
