"""Validation of a best_of_n config before any work: values, task and data file, model.

Every invalid value gives one message naming the key, the value and the fix; all messages are
raised together as one `config_checks.ConfigError`. The shared scoring keys are checked by
`config_checks.scoring_problems`.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ec_jax import config_checks
from ec_jax import tasks
from ec_jax.engine import model_loading

# Keys of the main job beside the shared scoring groups of configs/common.py.
MAIN_KEYS = ("model", "task", "data_path", "num_problems", "num_samples", "max_new_tokens",
             "temperature", "top_p", "top_k", "candidate_k", "batch_problems", "prompt_bucket",
             "greedy", "dtype", "mesh.data", "mesh.model", "output_dir", "sweep")

_MISSING = object()


def _lookup(config: Any, key: str) -> Any:
  """Return the value of a dotted key such as `mesh.data`, or _MISSING."""
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
  return (isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)
          and not math.isnan(float(value)))


def _message(key: str, value: Any, rule: str, fix: str) -> str:
  return f"{key} = {value!r} is invalid: {rule}. {fix}"


def value_problems(config: Any) -> list[str]:
  """Return one message per invalid value among MAIN_KEYS (no files are read)."""
  problems = []
  values = {}
  for key in MAIN_KEYS:
    value = _lookup(config, key)
    if value is _MISSING:
      problems.append(f"{key} is missing from the config; start from "
                      "configs/best_of_n.py's get_config() so that every key is present.")
      value = _MISSING
    values[key] = value

  def check(key: str, valid: bool, rule: str, fix: str) -> None:
    if values[key] is not _MISSING and not valid:
      problems.append(_message(key, values[key], rule, fix))

  def integer_at_least(key: str, minimum: int, fix: str) -> None:
    value = values[key]
    check(key, _is_integer(value) and value >= minimum, f"it must be an integer >= {minimum}",
          fix)

  check("model", isinstance(values["model"], str) and values["model"].strip() != "",
        "it must name a model", "Set --config.model to an embedded model name (python -m "
        "ec_jax.weights list), a .gguf file, a checkpoint folder, hf:ORG/NAME or tiny:llama.")
  check("task", values["task"] in tasks.TASK_NAMES, f"it must be one of "
        f"{', '.join(tasks.TASK_NAMES)}", "Set --config.task to one of them.")
  check("data_path", isinstance(values["data_path"], str), "it must be a path or empty",
        "Set --config.data_path to a data file, or leave it empty for the shipped data.")
  num_problems = values["num_problems"]
  check("num_problems", _is_integer(num_problems) and (num_problems >= 1 or num_problems == -1),
        "it must be an integer >= 1, or -1 for every problem of the file",
        "Set --config.num_problems=24, say.")
  integer_at_least("num_samples", 1, "Set --config.num_samples to N >= 1, e.g. 8.")
  integer_at_least("max_new_tokens", 1, "Set --config.max_new_tokens to e.g. 512.")
  temperature = values["temperature"]
  check("temperature", _is_number(temperature) and temperature >= 0,
        "it must be a number >= 0 (0 samples greedily)", "Set --config.temperature=0.7, say.")
  top_p = values["top_p"]
  check("top_p", _is_number(top_p) and 0 < top_p <= 1, "it must lie in (0, 1]",
        "Set --config.top_p=0.95, or 1 to keep the whole distribution.")
  integer_at_least("top_k", 0, "Set --config.top_k to 0 (no top-k filter) or a positive k.")
  integer_at_least("candidate_k", 1, "Set --config.candidate_k to e.g. 64.")
  candidate_k, entropy_k = values["candidate_k"], _lookup(config, "entropy_k")
  if _is_integer(candidate_k) and _is_integer(entropy_k) and candidate_k < entropy_k:
    problems.append(_message("candidate_k", candidate_k,
                             f"it must be at least entropy_k = {entropy_k}, because the top-k "
                             "statistics come from the candidate set",
                             f"Set --config.candidate_k to {entropy_k} or more."))
  top_k = values["top_k"]
  if _is_integer(candidate_k) and _is_integer(top_k) and top_k > candidate_k:
    problems.append(_message("top_k", top_k,
                             f"it must not exceed candidate_k = {candidate_k}, the candidate set "
                             "it filters", "Lower top_k or raise candidate_k."))
  integer_at_least("batch_problems", 1, "Set --config.batch_problems to e.g. 4.")
  integer_at_least("prompt_bucket", 1, "Set --config.prompt_bucket to e.g. 64.")
  for key in ("greedy", "sweep"):
    check(key, isinstance(values[key], (bool, np.bool_)), "it must be True or False",
          f"Set --config.{key}=True or False.")
  check("dtype", values["dtype"] in model_loading.DTYPES,
        f"it must be one of {', '.join(model_loading.DTYPES)}",
        "Use float32 on CPUs and bfloat16 on accelerators.")
  data = values["mesh.data"]
  check("mesh.data", _is_integer(data) and (data >= 1 or data == -1),
        "it must be an integer >= 1, or -1 for every device / mesh.model",
        "Set --config.mesh.data=-1.")
  integer_at_least("mesh.model", 1, "Set --config.mesh.model=1 unless the model must be split.")
  output_dir = values["output_dir"]
  check("output_dir", isinstance(output_dir, str) and output_dir != "",
        "it must name the run folder", "Pass --config.output_dir=runs/NAME.")
  check("output_dir", not (isinstance(output_dir, str) and config_checks.is_url(output_dir)),
        config_checks.URL_OUTPUT_RULE, config_checks.URL_OUTPUT_FIX)
  return problems


def resource_problems(config: Any) -> list[str]:
  """Return messages for a task, data file or model that cannot be used (reads no weights)."""
  problems = []
  if config.task in tasks.TASK_NAMES and isinstance(config.data_path, str):
    try:
      task = tasks.get_task(config.task, config.data_path or None)
    except (ValueError, FileNotFoundError) as error:
      problems.append(_message("data_path" if config.data_path else "task",
                               config.data_path or config.task, str(error),
                               "Pass an existing data file."))
    else:
      try:
        task.load(None if config.num_problems == -1 else config.num_problems)
      except (ValueError, tasks.RecordError) as error:
        problems.append(_message("num_problems", config.num_problems, str(error),
                                 "Fix the data file or lower num_problems."))
  if isinstance(config.model, str) and config.model.strip():
    try:
      model_loading.check_model_spec(config.model)
    except model_loading.ModelLoadError as error:
      problems.append(f"model = {config.model!r} is invalid: {error}")
  return problems


def check_config(config: Any) -> None:
  """Raise ConfigError listing every invalid value, missing file and unusable model."""
  problems = value_problems(config) + config_checks.scoring_problems(config)
  if not problems:
    problems = resource_problems(config)
  if problems:
    raise config_checks.ConfigError(problems)
