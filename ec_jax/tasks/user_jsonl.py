"""User-supplied math problems in a JSONL file (`task=jsonl`, `data_path`).

Each line is a JSON object with `question` (string), `answer` (the bare final
answer as a string or number; a GSM8K-style solution ending in `#### n` is
also accepted) and an optional `id` (string or integer). Blank lines are
skipped. A record without `id` gets its 0-based index among the records.
Answers are graded like MATH answers.
"""

from __future__ import annotations

import pathlib
from collections.abc import Iterable

from ec_jax.tasks import answer_extraction
from ec_jax.tasks import base
from ec_jax.tasks import math
from ec_jax.tasks import records


class JsonlTask(math.MathTask):
  """Math problems from a user's JSONL file; `data_path` is required."""

  name = "jsonl"

  def read_problems(self, path: pathlib.Path) -> Iterable[base.Problem]:
    id_lines: dict[str, int] = {}
    for index, (line_number, record) in enumerate(records.read_jsonl(path)):
      location = f"{path}:{line_number}"
      problem_id = _problem_id(record, index, location)
      if problem_id in id_lines:
        raise records.RecordError(
            f"{location}: field 'id' {problem_id!r} repeats the id of line "
            f"{id_lines[problem_id]}; ids must be unique"
        )
      id_lines[problem_id] = line_number
      question = records.require_text(record, "question", location)
      answer = records.require_answer(record, "answer", location)
      if "####" in answer:
        answer = answer_extraction.gsm8k_ground_truth(answer)
        if not answer:
          raise records.RecordError(
              f"{location}: field 'answer' has nothing after '####'"
          )
      yield base.Problem(
          problem_id=problem_id,
          question=question,
          answer=answer,
          metadata={
              key: value
              for key, value in record.items()
              if key not in ("id", "question", "answer")
          },
      )


def _problem_id(record: dict, index: int, location: str) -> str:
  """Return the record's `id` as a string, or its 0-based index when absent."""
  if "id" not in record or record["id"] is None:
    return str(index)
  value = record["id"]
  if isinstance(value, bool) or not isinstance(value, (str, int)):
    raise records.RecordError(
        f"{location}: field 'id' must be a string or an integer, got "
        f"{type(value).__name__} {value!r:.80}"
    )
  if isinstance(value, str) and not value.strip():
    raise records.RecordError(f"{location}: field 'id' is empty")
  return str(value)
