"""Records of one sampled batch: `trajectories.jsonl` objects and the `arrays/batch_<b>.npz` rows.

The sampler's output is `[slots * N]` rows, row r = slot * N + n; only the rows of real
(unmasked) slots become records. FORMAT.md in `ec_jax/traces` describes every key.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from ec_jax.sampling import generate as generate_lib
from ec_jax.scoring import deepconf
from ec_jax.scoring import settings as settings_lib
from ec_jax.tasks import base as tasks_base
from ec_jax.text import tokenizer as tokenizer_lib

FINISH_STOP = "stop"
FINISH_LENGTH = "length"
PHASE_CENTROID_METHODS = ("weighted_average_center", "weighted_average", "moment")
# Per-trajectory float scores written to every record, null when a trajectory has none.
SCORE_KEYS = (*settings_lib.CENTROID_METHODS, "high_threshold", "low_threshold",
              "mean_entropy", "self_certainty", *deepconf.DEEPCONF_METHODS)
# The exact integer form of the length-mass headline centroid: C = numerator / (2 denominator).
EXACT_KEYS = ("center_numerator", "center_denominator")
# Per-token arrays of a shard, as the sampler names them.
STATISTIC_KEYS = generate_lib.STATISTICS


@dataclasses.dataclass(frozen=True)
class Grade:
  """A trajectory's extracted answer (None: none found) and its correctness (None: no label)."""

  answer: str | None
  correct: bool | None


def rows_of_slots(num_real_slots: int, num_samples: int) -> np.ndarray:
  """Return the sampler rows of the first `num_real_slots` slots, in order."""
  return np.arange(num_real_slots * num_samples)


def decode_texts(tokenizer: tokenizer_lib.Tokenizer, output: generate_lib.SampleOutput,
                 rows: Sequence[int]) -> list[str]:
  """Decode each row's tokens up to its length, dropping special tokens such as the stop token."""
  return [tokenizer.decode(output.tokens[row, :output.lengths[row]], skip_special_tokens=True)
          for row in rows]


def grade_text(task: tasks_base.Task, problem: tasks_base.Problem, text: str) -> Grade:
  """Extract the final answer of a reply and grade the reply (HumanEval runs it in a sandbox)."""
  answer = task.extract(text, problem)
  if answer is None:
    return Grade(answer=None, correct=False)
  return Grade(answer=answer, correct=bool(task.grade(text, problem)))


def _number(value: Any) -> float | None:
  value = float(value)
  return value if math.isfinite(value) else None


def trajectory_record(problem_id: str, trajectory_index: int, row: int,
                      output: generate_lib.SampleOutput, text: str, grade: Grade,
                      settings: Sequence[settings_lib.PhaseSetting],
                      centroid_method: str, max_phases: int) -> dict[str, Any]:
  """Build the `trajectories.jsonl` object of one sampler row.

  Args:
    problem_id: the problem's id.
    trajectory_index: the sample index n within the problem.
    row: the row in the sampler's output.
    output: the sampler's host output of the batch.
    text: the decoded reply.
    grade: its answer and correctness.
    settings: the scored threshold settings; settings after the first add `@<t>/<b>/<c>` keys.
    centroid_method: the method behind `centroid`.
    max_phases: phases listed per trajectory.
  """
  scores = output.scores
  length = int(output.lengths[row])
  num_phases = int(scores["num_phases"][row])
  record = {
      "problem_id": problem_id,
      "trajectory_index": int(trajectory_index),
      "token_ids": output.tokens[row, :length].tolist(),
      "text": text,
      "num_tokens": length,
      "finish_reason": FINISH_STOP if output.stopped[row] else FINISH_LENGTH,
      "answer": grade.answer,
      "correct": grade.correct,
      "centroid": _number(scores["centroid"][row]),
      "num_phases": num_phases,
      "phases": scores["phases"][row, :min(num_phases, max_phases)].tolist(),
  }
  for key in SCORE_KEYS:
    record[key] = _number(scores[key][row])
  for key in EXACT_KEYS:
    record[key] = int(scores[key][row])
  record["nucleus_overflow"] = int(output.nucleus_overflow[row])
  for index, setting in enumerate(settings[1:], start=1):
    suffix = setting.suffix
    record[centroid_method + suffix] = _number(scores["sweep_centroid"][row, index])
    record["num_phases" + suffix] = int(scores["sweep_num_phases"][row, index])
    record["high_threshold" + suffix] = _number(scores["sweep_high_threshold"][row, index])
    record["low_threshold" + suffix] = _number(scores["sweep_low_threshold"][row, index])
  return record


def shard_arrays(problem_ids: Sequence[str], trajectory_indices: Sequence[int],
                 rows: np.ndarray, output: generate_lib.SampleOutput) -> dict[str, np.ndarray]:
  """Return the shard arrays of the given rows, cut to the batch's longest trajectory.

  Positions at or after a row's length hold the sampler's padding (token pad_id, zeros and
  phase id -1).
  """
  lengths = output.lengths[rows].astype(np.int32)
  time = max(1, int(lengths.max(initial=0)))
  arrays = {
      "problem_id": np.asarray(problem_ids, dtype=str),
      "trajectory_index": np.asarray(trajectory_indices, dtype=np.int32),
      "lengths": lengths,
      "token_ids": output.tokens[rows, :time].astype(np.int32),
  }
  for key in STATISTIC_KEYS:
    arrays[key] = output.statistics[key][rows, :time].astype(np.float32)
  arrays["phase_id"] = output.scores["phase_id"][rows, :time].astype(np.int32)
  return arrays
