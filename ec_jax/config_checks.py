"""Validation of resolved configurations before any work starts.

Each invalid value gives one message that names the key, the value and the fix. The checks
collect every message and raise them together as one ConfigError, so a user fixes a config in
one pass. Importing this module does not start JAX.
"""

from __future__ import annotations

import math
import pathlib
import re
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from ec_jax.scoring import settings as settings_lib
from ec_jax.traces import detect

ENTROPY_KINDS = ("topk", "full", "sampling")
# `labels` values that are not paths: auto-discovery and no labels file.
LABELS_AUTO = ""
LABELS_NONE = "none"
# Keys of the score_traces config, beside the scoring groups.
SCORE_TRACES_KEYS = ("input", "format", "labels", "output_dir", "sweep", "x64")

_MISSING = object()

# A URL scheme such as gs:// or s3:// (RFC 3986: a letter, then letters, digits, + - .).
_URL_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")
# The rule and fix of an output_dir that is a URL.
URL_OUTPUT_RULE = ("it is a URL, but results are written with local file operations (append "
                   "and atomic rename), which object stores such as GCS and S3 do not offer")
URL_OUTPUT_FIX = ("Pass a folder on a local disk or a POSIX shared file system, and copy the "
                  "finished folder to the bucket (docs/multihost.md, section File systems).")


def is_url(path: str) -> bool:
  """Return whether `path` starts with a URL scheme such as `gs://` or `s3://`."""
  return _URL_SCHEME.match(path) is not None


class ConfigError(ValueError):
  """Raised for an invalid configuration; `problems` contains one message per invalid value."""

  def __init__(self, problems: Sequence[str]):
    self.problems = tuple(problems)
    if len(self.problems) == 1:
      message = f"Invalid config: {self.problems[0]}"
    else:
      message = f"Invalid config ({len(self.problems)} problems):\n" + "\n".join(
          f"  {problem}" for problem in self.problems)
    super().__init__(message)


def lookup(config: Any, key: str) -> Any:
  """Return the value of a dotted key such as `phases.top_percent`, or a sentinel if absent."""
  value = config
  for part in key.split("."):
    try:
      value = value[part]
    except (KeyError, TypeError, AttributeError):
      return _MISSING
  return value


def _is_integer(value: Any) -> bool:
  return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
  return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)


def _problem(key: str, value: Any, rule: str, fix: str) -> str:
  return f"{key} = {value!r} is invalid: {rule}. {fix}"


class _Checker:
  """Collects the messages of one config."""

  def __init__(self, config: Any):
    self.config = config
    self.problems: list[str] = []

  def get(self, key: str) -> Any:
    value = lookup(self.config, key)
    if value is _MISSING:
      self.problems.append(f"{key} is missing from the config; start from the command's "
                           "get_config() so that every key is present.")
    return value

  def add(self, key: str, value: Any, rule: str, fix: str) -> None:
    self.problems.append(_problem(key, value, rule, fix))

  def integer(self, key: str, minimum: int, fix: str, value: Any = _MISSING) -> None:
    if value is _MISSING:
      value = self.get(key)
      if value is _MISSING:
        return
    if not _is_integer(value) or value < minimum:
      self.add(key, value, f"it must be an integer >= {minimum}", fix)

  def number(self, key: str, low: float, high: float, fix: str, *, low_open: bool = False,
             value: Any = _MISSING) -> None:
    if value is _MISSING:
      value = self.get(key)
      if value is _MISSING:
        return
    interval = f"{'(' if low_open else '['}{low:g}, {high:g}]"
    if not _is_number(value) or math.isnan(float(value)):
      self.add(key, value, f"it must be a number in {interval}", fix)
      return
    too_low = float(value) <= low if low_open else float(value) < low
    if too_low or float(value) > high:
      self.add(key, value, f"it must lie in {interval}", fix)

  def choice(self, key: str, choices: Iterable[str]) -> None:
    value = self.get(key)
    if value is _MISSING:
      return
    choices = tuple(choices)
    if value not in choices:
      self.add(key, value, f"it must be one of {', '.join(choices)}",
               f"Set --config.{key} to one of them.")

  def boolean(self, key: str) -> None:
    value = self.get(key)
    if value is not _MISSING and not isinstance(value, (bool, np.bool_)):
      self.add(key, value, "it must be True or False", f"Set --config.{key}=True or False.")

  def sequence(self, key: str, check_item) -> None:
    """Check a non-empty list or tuple, calling `check_item(item_key, item)` on each entry."""
    value = self.get(key)
    if value is _MISSING:
      return
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
      self.add(key, value, "it must be a list", f"Set --config.{key} to a tuple such as (1, 2).")
      return
    if len(value) == 0:
      self.add(key, value, "it must not be empty", f"Give --config.{key} at least one value.")
      return
    for index, item in enumerate(value):
      check_item(f"{key}[{index}]", item)


def _top_percent_fix(key: str) -> str:
  return f"Set --config.{key} to a percentage such as 1."


def _bottom_percent_fix(key: str) -> str:
  return f"Set --config.{key} to a percentage such as 80."


def _consecutive_low_fix(key: str) -> str:
  return f"Set --config.{key} to the number of low tokens that close a phase, e.g. 2."


def scoring_problems(config: Any) -> list[str]:
  """Return one message per invalid value among the shared scoring keys (configs/common.py)."""
  check = _Checker(config)
  check.integer("entropy_k", 1, "Set --config.entropy_k to the top-k size, e.g. 10.")
  check.choice("selection_entropy", ENTROPY_KINDS)
  check.integer("seed", 0, "Set --config.seed to a non-negative integer such as 0.")
  check.sequence("pass_k", lambda key, item: check.integer(
      key, 1, "Give pass_k as integers >= 1, e.g. (4, 16).", value=item))

  check.number("phases.top_percent", 0, 100, _top_percent_fix("phases.top_percent"))
  check.number("phases.bottom_percent", 0, 100, _bottom_percent_fix("phases.bottom_percent"))
  check.integer("phases.consecutive_low", 1, _consecutive_low_fix("phases.consecutive_low"))
  check.integer("phases.max_phases", 1,
                "Set --config.phases.max_phases to the number of phases listed per trajectory, "
                "e.g. 256 (counts and centroids stay exact beyond it).")

  check.choice("centroid_method", settings_lib.CENTROID_METHODS)
  check.choice("phase_mass", settings_lib.PHASE_MASSES)
  check.number("delta", 0, math.inf,
               "Set --config.delta to a non-negative distance in centroid units, e.g. 0.1.")
  check.integer("cv_folds", 2, "Set --config.cv_folds to the number of folds, e.g. 5.")
  check.number("centroid_vote_fraction", 0, 1,
               "Set --config.centroid_vote_fraction to the share of lowest centroids that "
               "vote, e.g. 0.3.", low_open=True)
  for name in ("window", "tail"):
    check.integer(f"deepconf.{name}", 1,
                  f"Set --config.deepconf.{name} to a number of tokens, e.g. 2048.")
  check.integer("bootstrap.samples", 1,
                "Set --config.bootstrap.samples to the number of resamples, e.g. 10000.")
  check.integer("bootstrap.seed", 0, "Set --config.bootstrap.seed to a non-negative integer.")

  check.sequence("sweep_grid.top_percent", lambda key, item: check.number(
      key, 0, 100, _top_percent_fix("sweep_grid.top_percent"), value=item))
  check.sequence("sweep_grid.bottom_percent", lambda key, item: check.number(
      key, 0, 100, _bottom_percent_fix("sweep_grid.bottom_percent"), value=item))
  check.sequence("sweep_grid.consecutive_low", lambda key, item: check.integer(
      key, 1, _consecutive_low_fix("sweep_grid.consecutive_low"), value=item))
  return check.problems


def score_traces_problems(config: Any) -> list[str]:
  """Return one message per invalid value of a score_traces config (scoring keys included)."""
  check = _Checker(config)
  input_path = check.get("input")
  if input_path is not _MISSING:
    if not isinstance(input_path, str) or not input_path:
      check.add("input", input_path, "it must name a trace file or an ec_jax run folder",
                "Pass --config.input=PATH.")
    elif not pathlib.Path(input_path).exists():
      check.add("input", input_path, "the path does not exist",
                "Pass an existing trace file or run folder.")
  check.choice("format", detect.FORMATS)

  labels = check.get("labels")
  if labels is not _MISSING:
    if not isinstance(labels, str):
      check.add("labels", labels, "it must be a path, empty or 'none'",
                "Pass --config.labels=PATH, leave it empty to use an evaluation_cache.json "
                "beside the input, or 'none'.")
    elif labels not in (LABELS_AUTO, LABELS_NONE) and not pathlib.Path(labels).is_file():
      check.add("labels", labels, "the file does not exist",
                "Pass an existing evaluation_cache.json, leave it empty for auto-discovery, "
                "or 'none'.")

  output_dir = check.get("output_dir")
  if output_dir is not _MISSING:
    if not isinstance(output_dir, str) or not output_dir:
      check.add("output_dir", output_dir, "it must name the results folder",
                "Pass --config.output_dir=DIR.")
    elif is_url(output_dir):
      check.add("output_dir", output_dir, URL_OUTPUT_RULE, URL_OUTPUT_FIX)
    elif pathlib.Path(output_dir).exists() and not pathlib.Path(output_dir).is_dir():
      check.add("output_dir", output_dir, "it is an existing file, not a folder",
                "Pass a folder path that does not exist yet.")
    elif isinstance(input_path, str) and input_path and _contains(output_dir, input_path):
      check.add("output_dir", output_dir,
                "it is or contains the input, which replacing the results folder would delete",
                "Pass a folder outside the input.")
  check.boolean("sweep")
  check.boolean("x64")
  return check.problems + scoring_problems(config)


def _contains(folder: str, path: str) -> bool:
  """Return whether `path` is `folder` or lies inside it."""
  folder_path = pathlib.Path(folder).resolve()
  target = pathlib.Path(path).resolve()
  return target == folder_path or folder_path in target.parents


def check_score_traces_config(config: Any) -> None:
  """Raise ConfigError listing every invalid value of a score_traces config."""
  problems = score_traces_problems(config)
  if problems:
    raise ConfigError(problems)


def check_scoring_config(config: Any) -> None:
  """Raise ConfigError listing every invalid value among the shared scoring keys."""
  problems = scoring_problems(config)
  if problems:
    raise ConfigError(problems)
