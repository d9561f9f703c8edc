"""Benchmark tasks: problems, prompts, answer extraction and grading.

`get_task(name, data_path)` returns a `Task` for one of `TASK_NAMES`. Data for
the built-in tasks ships in `ec_jax/tasks/data/`, each folder with a README
that gives its source and licence. This package does not import JAX.
"""

from ec_jax.tasks.base import compute_problem_uid
from ec_jax.tasks.base import Message
from ec_jax.tasks.base import Problem
from ec_jax.tasks.base import Task
from ec_jax.tasks.records import RecordError
from ec_jax.tasks.registry import get_task
from ec_jax.tasks.registry import TASK_NAMES

__all__ = [
    "Message",
    "Problem",
    "RecordError",
    "TASK_NAMES",
    "Task",
    "compute_problem_uid",
    "get_task",
]
