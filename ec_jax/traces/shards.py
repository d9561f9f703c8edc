"""Per-token array shards `arrays/batch_<b>.npz`: byte-reproducible writer and reader.

`np.savez` stamps each zip entry with the current time, so two runs that compute the same
arrays would write different bytes. The writer here builds the zip itself with a fixed
timestamp, fixed attributes and no compression, so equal arrays give equal files. Files are
written atomically (temporary file, fsync, rename) and load with `np.load`.
"""

from __future__ import annotations

import os
import pathlib
import re
from typing import IO, Mapping
import zipfile

import numpy as np

from ec_jax.traces import records
from ec_jax.traces.trajectory import TraceFormatError

ARRAYS_FOLDER = "arrays"
# Per-row arrays: [rows].
ROW_KEYS = ("problem_id", "trajectory_index", "lengths")
# Per-token arrays: [rows, T], valid up to each row's length.
TOKEN_KEYS = ("token_ids", "logprob", "entropy_topk", "entropy_full", "entropy_sampling",
              "confidence", "self_certainty", "phase_id")

# The earliest time a zip entry can carry.
_ZIP_DATE_TIME = (1980, 1, 1, 0, 0, 0)
# Unix regular file, mode 0644; fixed so that the bytes do not depend on the umask.
_ZIP_EXTERNAL_ATTR = (0o100644 << 16)
_ZIP_CREATE_SYSTEM_UNIX = 3
_SHARD_NAME = re.compile(r"^batch_(\d+)\.npz$")


def shard_path(run_dir: str | os.PathLike[str], batch_index: int) -> pathlib.Path:
  """Path of batch `batch_index`'s shard: `<run_dir>/arrays/batch_<batch_index>.npz`."""
  if isinstance(batch_index, bool) or not isinstance(batch_index, int) or batch_index < 0:
    raise ValueError(f"batch_index must be a non-negative integer, got {batch_index!r}")
  return pathlib.Path(run_dir) / ARRAYS_FOLDER / f"batch_{batch_index}.npz"


def write_npz(path: str | os.PathLike[str], arrays: Mapping[str, np.ndarray]) -> None:
  """Write arrays to an `.npz` file atomically and byte-reproducibly, in the mapping's order.

  Raises:
    ValueError: an array has dtype object (it would need pickle), or a name is invalid.
  """
  prepared = {}
  for name, values in arrays.items():
    if not isinstance(name, str) or not name or "/" in name:
      raise ValueError(f"array name must be a non-empty string without '/', got {name!r}")
    values = np.asarray(values)
    if values.dtype == object:
      raise ValueError(
          f"array {name!r} has dtype object; convert strings with np.asarray(values, dtype=str)")
    prepared[name] = values

  def write_zip(file: IO[bytes]) -> None:
    with zipfile.ZipFile(file, mode="w", compression=zipfile.ZIP_STORED) as archive:
      for name, values in prepared.items():
        info = zipfile.ZipInfo(name + ".npy", date_time=_ZIP_DATE_TIME)
        info.external_attr = _ZIP_EXTERNAL_ATTR
        info.create_system = _ZIP_CREATE_SYSTEM_UNIX
        info.compress_type = zipfile.ZIP_STORED
        # force_zip64 because the size is unknown when the entry is opened.
        with archive.open(info, mode="w", force_zip64=True) as entry:
          np.lib.format.write_array(entry, values, allow_pickle=False)

  records.write_bytes_atomic(path, write_zip)


def read_npz(path: str | os.PathLike[str]) -> dict[str, np.ndarray]:
  """Load every array of an `.npz` file into memory (pickled objects are rejected).

  Raises:
    TraceFormatError: the file is not a readable `.npz` archive.
  """
  try:
    with np.load(path, allow_pickle=False) as archive:
      return {name: archive[name] for name in archive.files}
  except (zipfile.BadZipFile, ValueError, EOFError) as e:
    raise TraceFormatError(
        path, f"not a readable .npz file ({e}); the shard is damaged, so rerun its batch") from e


def write_shard(
    run_dir: str | os.PathLike[str],
    batch_index: int,
    arrays: Mapping[str, np.ndarray],
) -> pathlib.Path:
  """Check and write one batch's per-token arrays; return the shard's path.

  Args:
    run_dir: the run folder.
    batch_index: the batch number b in `batch_<b>.npz`.
    arrays: `problem_id` [rows] (strings), `trajectory_index` [rows], `lengths` [rows] and
      [rows, T] per-token arrays (those of TOKEN_KEYS that the run computes, plus any other
      [rows, ...] arrays).

  Raises:
    ValueError: a per-row key is missing, or the shapes disagree.
  """
  missing = [key for key in ROW_KEYS if key not in arrays]
  if missing:
    raise ValueError(f"shard arrays lack {missing}; every shard needs {list(ROW_KEYS)}")
  prepared = {key: np.asarray(values) for key, values in arrays.items()}
  prepared["problem_id"] = np.asarray(prepared["problem_id"], dtype=str)
  rows = prepared["problem_id"].shape[0]
  time = None
  for key, values in prepared.items():
    if values.ndim == 0 or values.shape[0] != rows:
      raise ValueError(f"shard array {key!r} has shape {values.shape}; expected {rows} rows")
    if key in ROW_KEYS and values.ndim != 1:
      raise ValueError(f"shard array {key!r} has shape {values.shape}; expected ({rows},)")
    if key in TOKEN_KEYS:
      if values.ndim != 2 or (time is not None and values.shape[1] != time):
        raise ValueError(
            f"shard array {key!r} has shape {values.shape}; expected ({rows}, {time or 'T'}) "
            "like the other per-token arrays")
      time = values.shape[1]
  lengths = prepared["lengths"]
  if time is not None:
    outside = np.flatnonzero((lengths < 0) | (lengths > time))
    if outside.size:
      row = int(outside[0])
      raise ValueError(f"lengths must lie in [0, {time}], got {lengths[row]} in row {row}")

  path = shard_path(run_dir, batch_index)
  write_npz(path, prepared)
  return path


def list_shards(run_dir: str | os.PathLike[str]) -> list[tuple[int, pathlib.Path]]:
  """(batch index, path) of every `arrays/batch_<b>.npz` in a run folder, by batch index."""
  folder = pathlib.Path(run_dir) / ARRAYS_FOLDER
  if not folder.is_dir():
    return []
  found = []
  for path in folder.iterdir():
    match = _SHARD_NAME.match(path.name)
    if match is not None:
      found.append((int(match.group(1)), path))
  return sorted(found)


def read_shard(path: str | os.PathLike[str]) -> dict[str, np.ndarray]:
  """Load one shard and check its per-row keys.

  Raises:
    TraceFormatError: the shard lacks a per-row key or its rows disagree.
  """
  arrays = read_npz(path)
  missing = [key for key in ROW_KEYS if key not in arrays]
  if missing:
    raise TraceFormatError(
        path, f"shard lacks {missing} (it contains {sorted(arrays)}); rewrite it with write_shard")
  rows = arrays["problem_id"].shape[0]
  for key, values in arrays.items():
    if values.ndim == 0 or values.shape[0] != rows:
      raise TraceFormatError(
          path, f"array has shape {values.shape}; expected {rows} rows like problem_id", field=key)
  return arrays
