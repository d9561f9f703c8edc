"""Task registry: `get_task(name, data_path)` for the config key `task`."""

from __future__ import annotations

import os
from collections.abc import Callable

from ec_jax.tasks import base
from ec_jax.tasks import humaneval
from ec_jax.tasks import math
from ec_jax.tasks import user_jsonl

_FACTORIES: dict[str, Callable[..., base.Task]] = {
    "gsm8k": math.Gsm8kTask,
    "math500": math.Math500Task,
    "aime2024": lambda data_path=None, **kwargs: math.AimeTask(
        2024, data_path, **kwargs
    ),
    "aime2025": lambda data_path=None, **kwargs: math.AimeTask(
        2025, data_path, **kwargs
    ),
    "svamp": math.SvampTask,
    "humaneval": humaneval.HumanEvalTask,
    "jsonl": user_jsonl.JsonlTask,
}
TASK_NAMES: tuple[str, ...] = tuple(_FACTORIES)


def get_task(
    name: str,
    data_path: str | os.PathLike[str] | None = None,
    **options,
) -> base.Task:
  """Return the task called `name`, reading `data_path` or its shipped data.

  Args:
    name: one of `TASK_NAMES`.
    data_path: the data file; required for `jsonl`, optional for the others
      (a file in the same format as the shipped one).
    **options: task options, e.g. `verify_timeout_s` for math tasks or
      `limits` for `humaneval`.

  Raises:
    ValueError: unknown name, or `jsonl` without a data path.
    FileNotFoundError: the data file does not exist.
  """
  if name not in _FACTORIES:
    raise ValueError(
        f"unknown task {name!r}; choose one of {', '.join(TASK_NAMES)}"
    )
  task = _FACTORIES[name](data_path, **options)
  # Resolve the data file now, so a missing file fails at start-up.
  _ = task.data_path
  return task
