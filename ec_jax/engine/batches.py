"""Problem batches: problem i belongs to batch floor(i / batch_problems).

Every batch has `batch_problems` slots, so all batches of one prompt bucket share a compiled
shape. The last batch's empty slots are filled with copies of its last problem and masked out:
their trajectories are sampled but never recorded. The assignment depends only on the problem
index, so a resumed run recomputes each batch with the same shapes.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np


@dataclasses.dataclass(frozen=True)
class ProblemBatch:
  """One batch of problems.

  Attributes:
    index: the batch number b (also the shard name `batch_<b>.npz`).
    problems: indices into the run's problem list of the real problems, in order.
    slots: the batch size (`batch_problems`); slots beyond `len(problems)` are padding.
  """

  index: int
  problems: tuple[int, ...]
  slots: int

  @property
  def slot_problems(self) -> tuple[int, ...]:
    """The problem index of every slot; padding slots repeat the last real problem."""
    return self.problems + (self.problems[-1],) * (self.slots - len(self.problems))

  @property
  def mask(self) -> np.ndarray:
    """`[slots]` bools: true for real problems, false for padding."""
    return np.arange(self.slots) < len(self.problems)


def plan_batches(num_problems: int, batch_problems: int) -> list[ProblemBatch]:
  """Split problems 0 .. num_problems-1 into consecutive batches of batch_problems slots."""
  if num_problems < 1 or batch_problems < 1:
    raise ValueError(
        f"num_problems and batch_problems must be >= 1, got {num_problems} and {batch_problems}.")
  return [
      ProblemBatch(index=b, problems=tuple(range(start, min(start + batch_problems, num_problems))),
                   slots=batch_problems)
      for b, start in enumerate(range(0, num_problems, batch_problems))
  ]


def batch_of_problem(problem_index: int, batch_problems: int) -> int:
  """Return the batch number of a problem index."""
  return problem_index // batch_problems


def slot_values(batch: ProblemBatch, values: Sequence) -> list:
  """Return `values[i]` for every slot's problem i, padding slots included."""
  return [values[i] for i in batch.slot_problems]
