"""Task protocol: problems, prompts, answer extraction and grading.

A task reads its problems from a data file, turns each into chat messages,
extracts a final answer from a model reply and grades it against the ground
truth. Tasks never import JAX.
"""

from __future__ import annotations

import abc
import dataclasses
import importlib.resources
import os
import pathlib
import zlib
from collections.abc import Iterable, Mapping
from typing import Any

# Chat messages in the form chat templates take: [{"role": ..., "content": ...}].
Message = dict[str, str]


def compute_problem_uid(problem_id: str) -> int:
  """Return the 31-bit integer id of a problem, a CRC-32 of its UTF-8 id."""
  return zlib.crc32(problem_id.encode("utf-8")) & 0x7FFFFFFF


@dataclasses.dataclass(frozen=True)
class Problem:
  """One benchmark problem.

  Attributes:
    problem_id: the record's id field when it has one, else its 0-based index
      in the data file, as a string.
    problem_uid: `compute_problem_uid(problem_id)`, derived on construction;
      random keys are folded from it.
    question: the problem text shown to the model.
    answer: the ground truth: a final answer for math tasks, the reference
      solution for code tasks (which are graded by their tests).
    metadata: other fields of the record (solution, subject, tests, ...).
  """

  problem_id: str
  problem_uid: int = dataclasses.field(init=False)
  question: str
  answer: str
  metadata: Mapping[str, Any] = dataclasses.field(default_factory=dict)

  def __post_init__(self):
    if not isinstance(self.problem_id, str) or not self.problem_id:
      raise ValueError(
          f"problem_id must be a non-empty string, got {self.problem_id!r}"
      )
    object.__setattr__(self, "problem_uid", compute_problem_uid(self.problem_id))


def shipped_data_file(relative_path: str) -> pathlib.Path:
  """Return the path of a data file shipped in `ec_jax/tasks/data/`."""
  root = importlib.resources.files("ec_jax.tasks").joinpath("data")
  return pathlib.Path(str(root.joinpath(relative_path)))


def resolve_data_path(
    task_name: str,
    data_path: str | os.PathLike[str] | None,
    default_relative_path: str | None,
) -> pathlib.Path:
  """Return the data file of a task, checking that it exists.

  Args:
    task_name: the task's registry name, used in error messages.
    data_path: a user-given file, or None for the shipped one.
    default_relative_path: the shipped file under `ec_jax/tasks/data/`, or
      None when the task has no shipped data and `data_path` is required.

  Raises:
    ValueError: `data_path` is None and the task ships no data.
    FileNotFoundError: the file does not exist.
  """
  if data_path is None or str(data_path) == "":
    if default_relative_path is None:
      raise ValueError(
          f"task {task_name!r} needs a data file: set data_path to a JSONL "
          "file with 'question' and 'answer' fields"
      )
    path = shipped_data_file(default_relative_path)
    if not path.is_file():
      raise FileNotFoundError(
          f"shipped data file of task {task_name!r} not found at {path}; the "
          "ec_jax checkout is incomplete, so restore ec_jax/tasks/data/ "
          "from the repository"
      )
    return path
  path = pathlib.Path(data_path).expanduser()
  if not path.is_file():
    raise FileNotFoundError(
        f"data file {str(path)!r} of task {task_name!r} not found; pass an "
        "existing file as data_path, or leave data_path empty to use the "
        "shipped data"
    )
  return path


def take_first(
    problems: Iterable[Problem], num_problems: int | None, source: str
) -> list[Problem]:
  """Return the first `num_problems` problems in file order (all for None or -1).

  Raises:
    ValueError: `num_problems` is 0, below -1, or more than the file holds,
      or two problems share an id.
  """
  if num_problems is not None and (
      isinstance(num_problems, bool) or not isinstance(num_problems, int)
  ):
    raise ValueError(
        f"num_problems must be an integer, None or -1 (all), got {num_problems!r}"
    )
  if num_problems is not None and num_problems != -1 and num_problems < 1:
    raise ValueError(
        f"num_problems must be at least 1, or None or -1 for all problems, "
        f"got {num_problems}"
    )
  selected = list(problems)
  if num_problems is not None and num_problems != -1:
    if num_problems > len(selected):
      raise ValueError(
          f"num_problems={num_problems} but {source} contains only "
          f"{len(selected)} problems; lower num_problems or use -1 for all"
      )
    selected = selected[:num_problems]
  seen: dict[str, int] = {}
  for index, problem in enumerate(selected):
    if problem.problem_id in seen:
      raise ValueError(
          f"{source}: problem id {problem.problem_id!r} appears twice (records "
          f"{seen[problem.problem_id]} and {index}); problem ids must be unique"
      )
    seen[problem.problem_id] = index
  return selected


class Task(abc.ABC):
  """A benchmark: its problems, prompts, answer extraction and grading.

  Subclasses set `name` and implement the abstract methods. Methods other
  than `load` are safe to call from several threads.
  """

  name: str = ""

  def __init__(self, data_path: str | os.PathLike[str] | None = None):
    self._data_path = data_path

  @property
  def data_path(self) -> pathlib.Path:
    """The data file this task reads (shipped or user-given)."""
    return resolve_data_path(
        self.name, self._data_path, self.default_data_file()
    )

  def default_data_file(self) -> str | None:
    """Return the shipped data file under `ec_jax/tasks/data/`, or None."""
    return None

  def load(self, num_problems: int | None = None) -> list[Problem]:
    """Read the first `num_problems` problems in file order (None or -1: all)."""
    path = self.data_path
    return take_first(self.read_problems(path), num_problems, str(path))

  @abc.abstractmethod
  def read_problems(self, path: pathlib.Path) -> Iterable[Problem]:
    """Yield every problem of the data file at `path` in file order."""

  @abc.abstractmethod
  def messages(self, problem: Problem) -> list[Message]:
    """Return the chat messages (system and user) that pose `problem`."""

  @abc.abstractmethod
  def extract(self, text: str, problem: Problem | None = None) -> str | None:
    """Return the final answer in a model reply, or None when it has none."""

  @abc.abstractmethod
  def normalize(self, answer: str) -> str:
    """Return the normal form of an extracted answer.

    Two answers with the same normal form count as the same vote in majority
    voting. Equal normal forms imply a correct grade for both or neither, but
    the grader may still accept answers whose normal forms differ.
    """

  @abc.abstractmethod
  def grade(self, text_or_answer: str, problem: Problem) -> bool:
    """Return whether a model reply (or an extracted answer) is correct."""

