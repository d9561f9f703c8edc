"""Trace format detection and the `read_traces` entry point.

Formats (the `format` argument):
  reference: the reference implementation's `entropy_results.json` (a JSON array) or its
    `.jsonl` variant (one record per line).
  vllm: JSONL records with top-k `logprobs` per token.
  ec_jax: an ec_jax run folder (`trajectories.jsonl` plus `arrays/batch_<b>.npz`).
  auto: decided from the path and the first record (see `detect_format`).
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
from typing import Iterator

from absl import logging

from ec_jax.traces import labels as labels_lib
from ec_jax.traces import reference
from ec_jax.traces import run_folder
from ec_jax.traces import vllm
from ec_jax.traces.trajectory import TraceFormatError
from ec_jax.traces.trajectory import Trajectory

FORMATS = ("auto", "reference", "vllm", "ec_jax")
REFERENCE_JSON = "reference_json"
REFERENCE_JSONL = "reference_jsonl"
VLLM_JSONL = "vllm"
EC_JAX_RUN = "ec_jax"
_REFERENCE_FILE_NAMES = ("entropy_results.json", "entropy_results.jsonl")
# Enough to see the opening bracket even after a byte order mark and leading whitespace.
_PEEK_BYTES = 4096


@dataclasses.dataclass(frozen=True)
class LoadedTraces:
  """Trajectories read from one input, with where they and their labels came from.

  Attributes:
    trajectories: in file order.
    path: the trace file or run folder that was read.
    detected_format: one of `reference_json`, `reference_jsonl`, `vllm`, `ec_jax`.
    labels_path: the label file applied, or None.
    label_match: the match counts with that file, or None.
  """

  trajectories: list[Trajectory]
  path: pathlib.Path
  detected_format: str
  labels_path: pathlib.Path | None
  label_match: labels_lib.LabelMatch | None


def resolve_trace_path(path: str | os.PathLike[str]) -> pathlib.Path:
  """Return the file or run folder to read for `path`.

  A folder that contains `entropy_results.json(l)` gives that file, and `trajectories.jsonl`
  inside a run folder gives the folder.
  """
  path = pathlib.Path(path)
  if not path.exists():
    raise FileNotFoundError(f"trace input {path} does not exist; pass a trace file or run folder")
  if path.is_dir():
    if run_folder.is_run_folder(path):
      return path
    for name in _REFERENCE_FILE_NAMES:
      if (path / name).is_file():
        logging.info("Reading %s from folder %s.", name, path)
        return path / name
    raise TraceFormatError(
        path,
        f"the folder contains neither {run_folder.TRAJECTORIES_NAME} (an ec_jax run) nor "
        f"{' or '.join(_REFERENCE_FILE_NAMES)}; pass the trace file itself")
  if path.name == run_folder.TRAJECTORIES_NAME and (path.parent / "arrays").is_dir():
    return path.parent
  return path


def detect_format(path: str | os.PathLike[str]) -> str:
  """Detect the format of a resolved trace path (see `resolve_trace_path`).

  A folder is an ec_jax run. A file whose first character is `[` is a reference JSON array. A
  JSONL file is vLLM-style when its first record has `logprobs`, and reference JSONL when it
  has `entropy_sequence`.

  Raises:
    TraceFormatError: the format is not recognised; the message shows what was found.
  """
  path = pathlib.Path(path)
  if path.is_dir():
    return EC_JAX_RUN
  first = _first_character(path)
  if first == "[":
    return REFERENCE_JSON
  if first != "{":
    raise TraceFormatError(
        path,
        f"unknown trace format: the file starts with {first!r}, but a reference file "
        "starts with '[' and a JSONL file with '{'")
  record = _first_record(path)
  if "logprobs" in record:
    return VLLM_JSONL
  if "entropy_sequence" in record:
    return REFERENCE_JSONL
  if path.name == run_folder.TRAJECTORIES_NAME:
    raise TraceFormatError(
        path,
        "this is an ec_jax trajectories.jsonl, but its folder has no arrays/ subfolder with the "
        "per-token shards; pass a complete run folder")
  raise TraceFormatError(
      path,
      f"unknown trace format: the first record has keys {sorted(record)[:20]}, but a "
      "reference record has 'entropy_sequence' and a vLLM-style record has 'logprobs'. Pass "
      "format='reference' or format='vllm' if the file is one of them",
      record_index=0)


def _first_character(path: pathlib.Path) -> str:
  with open(path, "rb") as file:
    head = file.read(_PEEK_BYTES)
  text = head.decode("utf-8", errors="replace").lstrip("\ufeff \t\r\n")
  if not text:
    raise TraceFormatError(path, "the file is empty or starts with a long run of whitespace")
  return text[0]


def _first_record(path: pathlib.Path) -> dict:
  with open(path, "rb") as file:
    for line in file:
      if line.strip():
        break
  try:
    record = json.loads(line)
  except (json.JSONDecodeError, UnicodeDecodeError) as e:
    raise TraceFormatError(
        path, f"the first line is not valid JSON ({e}); expected one JSON object per line",
        record_index=0) from e
  if not isinstance(record, dict):
    raise TraceFormatError(
        path, f"the first line contains a {type(record).__name__}; expected a JSON object",
        record_index=0)
  return record


def iter_traces(
    path: str | os.PathLike[str],
    format: str = "auto",  # pylint: disable=redefined-builtin
    k: int = 10,
    entropy_kind: str = "topk",
) -> Iterator[Trajectory]:
  """Yield the trajectories of a trace file or run folder without labels from other files.

  Args:
    path: a trace file, a folder holding `entropy_results.json(l)`, or an ec_jax run folder.
    format: one of FORMATS.
    k: entropy_k, the number of log-probabilities kept per position for vLLM-style traces.
    entropy_kind: for ec_jax run folders, which entropy to read (`topk`, `full`, `sampling`).
  """
  path, detected = _resolve_and_detect(path, format)
  return _iter_detected(path, detected, k, entropy_kind)


def _resolve_and_detect(path: str | os.PathLike[str], format: str) -> tuple[pathlib.Path, str]:
  if format not in FORMATS:
    raise ValueError(f"format must be one of {FORMATS}, got {format!r}")
  path = resolve_trace_path(path)
  detected = detect_format(path)
  allowed = {
      "auto": (REFERENCE_JSON, REFERENCE_JSONL, VLLM_JSONL, EC_JAX_RUN),
      "reference": (REFERENCE_JSON, REFERENCE_JSONL),
      "vllm": (VLLM_JSONL,),
      "ec_jax": (EC_JAX_RUN,),
  }[format]
  if detected not in allowed:
    if format == "vllm" and detected == REFERENCE_JSONL:
      raise TraceFormatError(
          path, "format='vllm' was requested, but the records have 'entropy_sequence' like "
          "reference traces; use format='reference' or 'auto'")
    raise TraceFormatError(
        path, f"format={format!r} was requested, but the input looks like {detected!r}; use "
        "format='auto' or the matching format")
  logging.info("Reading %s as %s traces.", path, detected)
  return path, detected


def _iter_detected(
    path: pathlib.Path, detected: str, k: int, entropy_kind: str) -> Iterator[Trajectory]:
  if detected == REFERENCE_JSON:
    return reference.iter_reference_json(path)
  if detected == REFERENCE_JSONL:
    return reference.iter_reference_jsonl(path)
  if detected == VLLM_JSONL:
    return vllm.iter_vllm_jsonl(path, k=k)
  return iter(run_folder.read_run_folder(path, entropy_kind=entropy_kind))


def load_traces(
    path: str | os.PathLike[str],
    format: str = "auto",  # pylint: disable=redefined-builtin
    k: int = 10,
    labels: str | os.PathLike[str] | None = "auto",
    entropy_kind: str = "topk",
) -> LoadedTraces:
  """Read all trajectories of a trace input and attach labels.

  Args:
    path, format, k, entropy_kind: as for `iter_traces`.
    labels: an `evaluation_cache.json` path; "auto" uses the one in the trace file's folder if
      there is one (and logs it); None keeps only labels stored in the traces themselves
      (reward > 0 for agentic runs, `correct` for ec_jax runs). A label file replaces those:
      a trajectory missing from it is unlabelled.

  Raises:
    TraceFormatError: the input or the label file is malformed.
    FileNotFoundError: the input or an explicitly given label file does not exist.
  """
  resolved, detected = _resolve_and_detect(path, format)
  trajectories = list(_iter_detected(resolved, detected, k, entropy_kind))

  if labels == "auto":
    labels_path = labels_lib.find_labels_file(resolved)
  elif labels is None:
    labels_path = None
  else:
    labels_path = pathlib.Path(labels)
    if not labels_path.is_file():
      raise FileNotFoundError(
          f"labels file {labels_path} does not exist; pass an evaluation_cache.json, 'auto' or "
          "None")
    logging.info("Using labels from %s.", labels_path)

  label_match = None
  if labels_path is not None:
    cache = labels_lib.read_evaluation_cache(labels_path)
    trajectories, label_match = labels_lib.attach_labels(
        trajectories, cache, source=os.fspath(labels_path))
  logging.info("Read %d trajectories of %d problems from %s.", len(trajectories),
               len({t.problem_id for t in trajectories}), resolved)
  return LoadedTraces(trajectories, resolved, detected, labels_path, label_match)


def read_traces(
    path: str | os.PathLike[str],
    format: str = "auto",  # pylint: disable=redefined-builtin
    k: int = 10,
    labels: str | os.PathLike[str] | None = "auto",
    entropy_kind: str = "topk",
) -> list[Trajectory]:
  """Read all trajectories of a trace input, labelled as `load_traces` describes."""
  return load_traces(path, format, k, labels, entropy_kind).trajectories
