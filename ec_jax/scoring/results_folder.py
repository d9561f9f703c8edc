"""A results folder written all at once: temporary folder, then rename into place.

A run writes every file into a temporary folder beside `output_dir` and renames it into place
at the end, so failed input leaves no partial results. An existing results folder is replaced
only when its `config.json` equals the requested config; results computed with other settings
are never reused or overwritten.
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import uuid
from collections.abc import Mapping
from typing import Any

from absl import logging

from ec_jax import traces

CONFIG_FILE = "config.json"
# Config keys that may differ between a run and the results folder it replaces, because the
# folder may have been moved.
IGNORED_CONFIG_KEYS = ("output_dir",)


class OutputFolderError(ValueError):
  """Raised when `output_dir` contains other results or is not a results folder."""


def config_json(config: Any) -> dict:
  """Return the resolved config as plain JSON values (tuples become lists)."""
  as_dict = config.to_dict() if hasattr(config, "to_dict") else dict(config)
  return json.loads(json.dumps(traces.to_json_value(as_dict)))


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
  if isinstance(value, Mapping):
    flat = {}
    for key, item in value.items():
      flat.update(_flatten(item, f"{prefix}{key}."))
    return flat
  return {prefix[:-1]: value}


def config_differences(existing: Mapping[str, Any], requested: Mapping[str, Any]) -> list[str]:
  """Return `key (existing X, requested Y)` for every dotted key whose values differ."""
  old, new = _flatten(existing), _flatten(requested)
  differences = []
  for key in sorted(set(old) | set(new)):
    if key in IGNORED_CONFIG_KEYS:
      continue
    if old.get(key, "<absent>") != new.get(key, "<absent>"):
      differences.append(f"{key} (existing {old.get(key, '<absent>')!r}, requested "
                         f"{new.get(key, '<absent>')!r})")
  return differences


def check_output_folder(output_dir: str | os.PathLike[str], requested: Mapping[str, Any]) -> None:
  """Raise OutputFolderError unless `output_dir` may receive results of the requested config.

  A folder that does not exist or is empty is fine. An existing results folder is fine only
  when its `config.json` equals the requested config (apart from IGNORED_CONFIG_KEYS); the run
  then replaces it.
  """
  folder = pathlib.Path(output_dir)
  if not folder.exists() or (folder.is_dir() and not any(folder.iterdir())):
    return
  config_path = folder / CONFIG_FILE
  if not config_path.is_file():
    raise OutputFolderError(
        f"output_dir {folder} exists and is not a results folder (it has no "
        f"{CONFIG_FILE}); pass a new folder or remove it.")
  try:
    with open(config_path, encoding="utf-8") as file:
      existing = json.load(file)
  except (OSError, json.JSONDecodeError, UnicodeDecodeError) as error:
    raise OutputFolderError(
        f"output_dir {folder} has an unreadable {CONFIG_FILE} ({error}); pass a new folder or "
        "remove it.") from error
  differences = config_differences(existing if isinstance(existing, dict) else {}, requested)
  if differences:
    raise OutputFolderError(
        f"output_dir {folder} contains results computed with another config; differing keys: "
        f"{'; '.join(differences)}. Pass a new output_dir, or remove the folder to recompute.")
  logging.info("output_dir %s holds results of the same config; they will be replaced.", folder)


def write_results_folder(output_dir: str | os.PathLike[str], files: Mapping[str, Any],
                         requested: Mapping[str, Any]) -> pathlib.Path:
  """Write the result files into a temporary folder beside `output_dir`, then rename it there.

  `files` maps file names to a list of records (`.jsonl`) or a JSON object (`.json`). An
  existing results folder of the same config is replaced. On an exception the temporary folder
  is removed and `output_dir` is left as it was.

  NOTE: replacing takes two renames (old folder aside, new folder in). A process killed between
  them leaves the old results in a `.<name>.old-*` folder beside `output_dir`.
  """
  folder = pathlib.Path(output_dir)
  folder.parent.mkdir(parents=True, exist_ok=True)
  temporary = _new_folder(folder, "tmp")
  try:
    for name, content in files.items():
      if name.endswith(".jsonl"):
        with traces.JsonlWriter(temporary / name) as writer:
          writer.write(content)
      else:
        traces.write_json_atomic(temporary / name, content)
    check_output_folder(folder, requested)
    if folder.exists():
      aside = _new_folder(folder, "old")
      os.replace(folder, aside / folder.name)
      try:
        os.replace(temporary, folder)
      except BaseException:
        os.replace(aside / folder.name, folder)
        aside.rmdir()
        raise
      shutil.rmtree(aside)
    else:
      os.replace(temporary, folder)
  except BaseException:
    shutil.rmtree(temporary, ignore_errors=True)
    raise
  return folder


def _new_folder(folder: pathlib.Path, kind: str) -> pathlib.Path:
  """Create a hidden folder `.<name>.<kind>-<random>` beside `folder`, with the umask's mode."""
  while True:
    candidate = folder.parent / f".{folder.name}.{kind}-{uuid.uuid4().hex[:12]}"
    try:
      candidate.mkdir()
    except FileExistsError:
      continue
    return candidate
