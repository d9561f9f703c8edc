"""The run folder of the main job and the resume state read from it.

Each batch b is written in three steps, each atomic or append-only:

  1. `arrays/batch_<b>.npz` (temporary file, then rename),
  2. with `greedy`, the batch's `greedy.jsonl` records (one append),
  3. the batch's `trajectories.jsonl` records (one append, flushed and fsynced).

A batch is finished when its shard is readable and both files contain exactly its records, in
order. On restart, torn last lines are dropped, the records of unfinished batches are removed
from both files (the remaining lines keep their bytes), and those batches are sampled again.
Since batches run in index order, the files of a resumed run equal those of an uninterrupted run.

Only process 0 reads or writes the folder. It must be on a local disk or a POSIX shared file
system, because the steps above need appends and atomic renames (docs/multihost.md, section
File systems).
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
from collections.abc import Mapping, Sequence
from typing import Any

from absl import logging

from ec_jax import traces
from ec_jax.engine import batches as batches_lib
from ec_jax.scoring import results_folder
from ec_jax.traces import records as records_lib
from ec_jax.traces import shards

CONFIG_FILE = results_folder.CONFIG_FILE
TRAJECTORIES_FILE = "trajectories.jsonl"
GREEDY_FILE = "greedy.jsonl"
SELECTED_FILE = "selected.jsonl"
SUMMARY_FILE = "summary.json"
PLOTS_FOLDER = "plots"


class RunFolderError(ValueError):
  """Raised when `output_dir` contains other results or records that do not belong to this run."""


def check_output_dir(output_dir: str | os.PathLike[str], requested: Mapping[str, Any]) -> bool:
  """Check that `output_dir` is new, empty, or a run folder of the same config.

  Returns:
    Whether the folder contains a run of the same config, which the run resumes.

  Raises:
    RunFolderError: the folder is a file, is not a run folder, or its `config.json` differs
      from the requested config; the message names every differing key.
  """
  folder = pathlib.Path(output_dir)
  if folder.exists() and not folder.is_dir():
    raise RunFolderError(f"output_dir {folder} is a file; pass a folder path.")
  if not folder.exists() or not any(folder.iterdir()):
    return False
  config_path = folder / CONFIG_FILE
  if not config_path.is_file():
    raise RunFolderError(
        f"output_dir {folder} is not empty and has no {CONFIG_FILE}, so it is not a best_of_n "
        "run folder; pass a new output_dir.")
  try:
    existing = json.loads(config_path.read_text(encoding="utf-8"))
  except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
    raise RunFolderError(f"output_dir {folder} has an unreadable {CONFIG_FILE} ({error}); pass "
                         "a new output_dir or remove the folder.") from error
  differences = results_folder.config_differences(
      existing if isinstance(existing, dict) else {}, requested)
  if differences:
    raise RunFolderError(
        f"output_dir {folder} contains a run with another config; differing keys: "
        f"{'; '.join(differences)}. Pass a new output_dir, or rerun with the same config to "
        "resume it.")
  return True


def write_config(output_dir: str | os.PathLike[str], requested: Mapping[str, Any]) -> None:
  """Create the run folder and write `config.json` atomically."""
  folder = pathlib.Path(output_dir)
  folder.mkdir(parents=True, exist_ok=True)
  traces.write_json_atomic(folder / CONFIG_FILE, requested)


@dataclasses.dataclass(frozen=True)
class ResumeState:
  """The state an earlier run of the same config left in the folder.

  Attributes:
    finished: indices of the finished batches.
    dropped_records: records removed because their batch was unfinished.
  """

  finished: frozenset[int]
  dropped_records: int


def _read_lines(path: pathlib.Path) -> list[tuple[bytes, dict]]:
  """Return (raw line, record) of every complete line, after dropping a torn last line."""
  if not path.exists():
    return []
  records_lib.drop_torn_tail(path)
  lines = []
  with open(path, "rb") as file:
    for number, line in enumerate(file, start=1):
      try:
        record = json.loads(line)
      except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise RunFolderError(
            f"{path} line {number} is not valid JSON ({error}) and is not the last line, so the "
            "file was changed by something else; remove the run folder and start again.") from error
      if not isinstance(record, dict):
        raise RunFolderError(f"{path} line {number} is not a JSON object; remove the run folder "
                             "and start again.")
      lines.append((line, record))
  return lines


def _record_key(path: pathlib.Path, record: dict) -> tuple[str, int]:
  try:
    return str(record["problem_id"]), int(record["trajectory_index"])
  except (KeyError, TypeError, ValueError) as error:
    raise RunFolderError(f"{path} has a record without problem_id or trajectory_index "
                         f"({error}); remove the run folder and start again.") from error


def _expected_keys(batch: batches_lib.ProblemBatch, problem_ids: Sequence[str],
                   num_samples: int) -> list[tuple[str, int]]:
  return [(problem_ids[i], n) for i in batch.problems for n in range(num_samples)]


def _keys_by_batch(path: pathlib.Path, lines: Sequence[tuple[bytes, dict]],
                   batch_of: Mapping[str, int]) -> tuple[dict[int, list[tuple[str, int]]],
                                                         list[int]]:
  """Group the records' keys by batch; return them and each line's batch."""
  grouped: dict[int, list[tuple[str, int]]] = {}
  line_batches = []
  for _, record in lines:
    key = _record_key(path, record)
    if key[0] not in batch_of:
      raise RunFolderError(
          f"{path} has records of problem {key[0]!r}, which is not among this run's problems "
          "(the data file changed?); pass a new output_dir.")
    batch = batch_of[key[0]]
    grouped.setdefault(batch, []).append(key)
    line_batches.append(batch)
  return grouped, line_batches


def _shard_matches(folder: pathlib.Path, batch: int, expected: Sequence[tuple[str, int]]) -> bool:
  path = shards.shard_path(folder, batch)
  if not path.is_file():
    return False
  try:
    arrays = shards.read_shard(path)
  except traces.TraceFormatError as error:
    logging.warning("Shard %s is unreadable (%s); its batch is sampled again.", path, error)
    return False
  found = list(zip(arrays["problem_id"].tolist(), arrays["trajectory_index"].tolist()))
  return found == list(expected)


def _rewrite(path: pathlib.Path, lines: Sequence[tuple[bytes, dict]],
             line_batches: Sequence[int], keep: frozenset[int]) -> int:
  """Rewrite `path` without the lines of batches outside `keep`; return the number removed."""
  kept_lines = [line for (line, _), batch in zip(lines, line_batches) if batch in keep]
  removed = len(lines) - len(kept_lines)
  if removed:
    records_lib.write_bytes_atomic(path, lambda file: file.write(b"".join(kept_lines)))
  return removed


def resume_state(output_dir: str | os.PathLike[str], plan: Sequence[batches_lib.ProblemBatch],
                 problem_ids: Sequence[str], num_samples: int, greedy: bool) -> ResumeState:
  """Find the finished batches and remove the records of unfinished ones (process 0 only).

  Raises:
    RunFolderError: a record belongs to no problem of this run, or a file was damaged other
      than by an interrupted append.
  """
  folder = pathlib.Path(output_dir)
  batch_of = {problem_ids[i]: batch.index for batch in plan for i in batch.problems}
  trajectories_path = folder / TRAJECTORIES_FILE
  greedy_path = folder / GREEDY_FILE
  lines = _read_lines(trajectories_path)
  grouped, line_batches = _keys_by_batch(trajectories_path, lines, batch_of)
  greedy_lines = _read_lines(greedy_path)
  greedy_grouped, greedy_line_batches = _keys_by_batch(greedy_path, greedy_lines, batch_of)

  finished = set()
  for batch in plan:
    expected = _expected_keys(batch, problem_ids, num_samples)
    done = grouped.get(batch.index) == expected and _shard_matches(folder, batch.index, expected)
    if greedy:
      done = done and greedy_grouped.get(batch.index) == _expected_keys(batch, problem_ids, 1)
    if done:
      finished.add(batch.index)
  finished = frozenset(finished)

  dropped = _rewrite(trajectories_path, lines, line_batches, finished)
  dropped += _rewrite(greedy_path, greedy_lines, greedy_line_batches, finished)
  if dropped:
    logging.warning("Removed %d records of unfinished batches from %s; those batches are "
                    "sampled again.", dropped, folder)
  if finished:
    logging.info("Resuming %s: %d of %d batches are finished.", folder, len(finished), len(plan))
  return ResumeState(finished=finished, dropped_records=dropped)
