"""ec_jax's JSON record files: an append-only JSONL writer, its reader, atomic JSON files.

Every value is written as standard JSON: NaN and +-inf become null (`allow_nan=False`), numpy
scalars and arrays become numbers and lists. The field layout is in FORMAT.md.

Crash safety of the JSONL writer: each `write` call serialises its whole batch first, then
appends it with one `write` system call, flushes and fsyncs. A kill during the append can leave
a torn last line. Opening the file again drops that line (and logs it), so a resumed run appends
after the last complete record. A torn batch can also leave some of its earlier lines complete.
A resumed run must therefore check which records are already present rather than assume that
batches are all-or-nothing.
"""

from __future__ import annotations

import json
import math
import os
import pathlib
import tempfile
from typing import Any, Callable, IO, Iterable, Iterator, Mapping

from absl import logging
import numpy as np

from ec_jax.traces.trajectory import TraceFormatError

_TAIL_BLOCK_BYTES = 1 << 16


def to_json_value(value: Any) -> Any:
  """Convert a value to plain JSON types: NaN and +-inf become None, numpy becomes Python.

  Raises:
    TypeError: the value (or a nested one) has no JSON form, or a mapping key is not a string.
  """
  if value is None or isinstance(value, (str, bool)):
    return value
  if isinstance(value, int):
    return int(value)
  if isinstance(value, float):
    return float(value) if math.isfinite(value) else None
  if isinstance(value, np.generic):
    return to_json_value(value.item())
  if isinstance(value, np.ndarray):
    return to_json_value(value.tolist())
  if isinstance(value, Mapping):
    result = {}
    for key, item in value.items():
      if not isinstance(key, str):
        raise TypeError(f"JSON object keys must be strings, got {type(key).__name__} {key!r}")
      result[key] = to_json_value(item)
    return result
  if isinstance(value, (list, tuple)):
    return [to_json_value(item) for item in value]
  raise TypeError(f"cannot write a {type(value).__name__} to JSON: {value!r:.80}")


def encode_json_line(record: Mapping[str, Any]) -> bytes:
  """Encode one record as a UTF-8 JSON line ending in a newline."""
  text = json.dumps(to_json_value(record), allow_nan=False, ensure_ascii=False,
                    separators=(",", ":"))
  return text.encode("utf-8") + b"\n"


def drop_torn_tail(path: str | os.PathLike[str]) -> int:
  """Truncate a JSONL file after its last complete, valid line.

  The last line is torn when it has no trailing newline or is not valid JSON. Only the last
  line is examined.

  Returns:
    The number of bytes removed (0 when the file is intact or does not exist).
  """
  path = os.fspath(path)
  if not os.path.exists(path):
    return 0
  with open(path, "r+b") as file:
    size = file.seek(0, os.SEEK_END)
    if size == 0:
      return 0
    last_line_start = _last_line_start(file, size)
    file.seek(last_line_start)
    last_line = file.read()
    if last_line.endswith(b"\n") and _is_valid_json_line(last_line):
      return 0
    file.truncate(last_line_start)
    file.flush()
    os.fsync(file.fileno())
  removed = size - last_line_start
  logging.warning(
      "Dropped a torn last line of %d bytes from %s (left by an interrupted write): %r",
      removed, path, last_line[:80])
  return removed


def _last_line_start(file: IO[bytes], size: int) -> int:
  """Byte offset where the last line starts (the last line may lack its newline)."""
  # Skip the final newline so that a complete last line is found as a whole.
  end = size - 1
  file.seek(end)
  if file.read(1) != b"\n":
    end = size
  position = end
  while position > 0:
    start = max(0, position - _TAIL_BLOCK_BYTES)
    file.seek(start)
    block = file.read(position - start)
    newline = block.rfind(b"\n")
    if newline >= 0:
      return start + newline + 1
    position = start
  return 0


def _is_valid_json_line(line: bytes) -> bool:
  if not line.strip():
    return True
  try:
    json.loads(line)
  except (json.JSONDecodeError, UnicodeDecodeError):
    return False
  return True


class JsonlWriter:
  """Appends records to a JSONL file, one batch per `write`, flushed and fsynced.

  Opening drops a torn last line left by an interrupted run. Use as a context manager or call
  `close`.
  """

  def __init__(self, path: str | os.PathLike[str]):
    self.path = pathlib.Path(path)
    self.path.parent.mkdir(parents=True, exist_ok=True)
    drop_torn_tail(self.path)
    # NOTE: appending needs a POSIX file system. Object stores (GCS, S3) cannot append to an
    # object, and no mode here writes one object per batch instead (docs/multihost.md).
    self._file = open(self.path, "ab")

  def write(self, records: Iterable[Mapping[str, Any]]) -> int:
    """Append records as one batch; return the number written.

    Raises:
      TypeError: a record has a value with no JSON form (nothing of the batch is written).
    """
    data = [encode_json_line(record) for record in records]
    if data:
      self._file.write(b"".join(data))
      self._file.flush()
      os.fsync(self._file.fileno())
    return len(data)

  def close(self) -> None:
    self._file.close()

  def __enter__(self) -> JsonlWriter:
    return self

  def __exit__(self, *exc_info) -> None:
    self.close()


def read_jsonl(path: str | os.PathLike[str]) -> Iterator[dict[str, Any]]:
  """Yield the records of a JSONL file written by `JsonlWriter`.

  A last line without a newline is an unfinished append: it is skipped with a warning.

  Raises:
    TraceFormatError: a complete line is not a JSON object.
  """
  path = os.fspath(path)
  offset = 0
  index = 0
  with open(path, "rb") as file:
    for line_number, line in enumerate(file, start=1):
      line_offset = offset
      offset += len(line)
      if not line.endswith(b"\n"):
        logging.warning("Skipping the unfinished last line (%d bytes) of %s.", len(line), path)
        return
      if not line.strip():
        continue
      try:
        record = json.loads(line)
      except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise TraceFormatError(
            path, f"line {line_number} is not valid JSON ({e}); remove or repair that line",
            record_index=index, byte_offset=line_offset) from e
      if not isinstance(record, dict):
        raise TraceFormatError(
            path, f"line {line_number} is a {type(record).__name__}; expected a JSON object",
            record_index=index, byte_offset=line_offset)
      yield record
      index += 1


def write_bytes_atomic(path: str | os.PathLike[str], write: Callable[[IO[bytes]], None]) -> None:
  """Write a file through `write(file)` so that readers see the old file or the whole new one.

  The data goes to a temporary file in the same folder, is fsynced, and replaces `path` with
  `os.replace`. The folder is then fsynced so that the rename itself survives a crash.
  """
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  descriptor, temp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
  try:
    # mkstemp creates the file with mode 0600; give it the mode that `open` would.
    os.chmod(temp_name, 0o666 & ~_current_umask())
    with os.fdopen(descriptor, "wb") as file:
      write(file)
      file.flush()
      os.fsync(file.fileno())
    # NOTE: this is atomic only where rename(2) is, as on local disks, NFS and Lustre. On a
    # bucket mounted with FUSE a rename can be a copy followed by a delete.
    os.replace(temp_name, path)
  except BaseException:
    if os.path.exists(temp_name):
      os.unlink(temp_name)
    raise
  _fsync_folder(path.parent)


def _current_umask() -> int:
  """Return the process umask without changing it (Linux), else by setting and restoring it."""
  try:
    with open("/proc/self/status", encoding="ascii") as status:
      for line in status:
        if line.startswith("Umask:"):
          return int(line.split()[1], 8)
  except OSError:
    pass
  # NOTE: os.umask can only be read by setting it, which races with other threads creating files.
  mask = os.umask(0o022)
  os.umask(mask)
  return mask


def _fsync_folder(folder: pathlib.Path) -> None:
  try:
    descriptor = os.open(folder, os.O_RDONLY)
  except OSError:
    return  # Some platforms cannot open folders; the data itself is already synced.
  try:
    os.fsync(descriptor)
  except OSError:
    pass
  finally:
    os.close(descriptor)


def write_json_atomic(path: str | os.PathLike[str], obj: Any, indent: int | None = 2) -> None:
  """Write `obj` as NaN-free JSON to `path` atomically (see `write_bytes_atomic`).

  Raises:
    TypeError: `obj` has a value with no JSON form (the existing file is left unchanged).
  """
  text = json.dumps(to_json_value(obj), allow_nan=False, ensure_ascii=False, indent=indent)
  data = text.encode("utf-8") + b"\n"
  write_bytes_atomic(path, lambda file: file.write(data))
