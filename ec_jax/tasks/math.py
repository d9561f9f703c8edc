"""Math tasks graded by final-answer equivalence: GSM8K, MATH-500, AIME, SVAMP.

Grading takes three steps, cheapest first: exact numbers compared as
fractions, equal normal forms, then math-verify (symbolic equivalence) in a
worker process with a timeout (`math_verifier`).
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
from collections.abc import Iterable

from ec_jax.tasks import answer_extraction
from ec_jax.tasks import base
from ec_jax.tasks import math_verifier
from ec_jax.tasks import records

DEFAULT_VERIFY_TIMEOUT_S = 5.0

SYSTEM_PROMPT = "You are a careful assistant who solves math problems."
MATH_INSTRUCTION = (
    "Think step by step, and put the final answer in \\boxed{}."
)
AIME_INSTRUCTION = (
    "Think step by step. The answer is an integer from 0 to 999; put it in "
    "\\boxed{}."
)


@dataclasses.dataclass(frozen=True)
class MathGrade:
  """A graded math reply.

  Attributes:
    correct: whether the answer equals the ground truth.
    answer: the extracted answer, or None when the reply has none.
    method: how the verdict was reached: `no_answer`, `numeric`,
      `normal_form`, or math-verify's outcome (`equal`, `not_equal`,
      `timeout`, `error`).
  """

  correct: bool
  answer: str | None
  method: str


def compare_answers(
    answer: str,
    gold: str,
    *,
    timeout_s: float = DEFAULT_VERIFY_TIMEOUT_S,
    verifier: math_verifier.MathVerifier | None = None,
) -> tuple[bool, str]:
  """Return whether `answer` equals `gold`, and how that was decided.

  Exact numbers are compared as fractions; two unequal integers are
  unequal without calling math-verify. Everything else that is not caught by
  equal normal forms goes to math-verify, which may accept for example
  `0.3333333` for `\\frac{1}{3}` (it rounds to 6 decimals). A timeout or
  error in math-verify counts as unequal.
  """
  answer_value = answer_extraction.parse_number(answer)
  gold_value = answer_extraction.parse_number(gold)
  if answer_value is not None and gold_value is not None:
    if answer_value == gold_value:
      return True, "numeric"
    if answer_value.denominator == 1 and gold_value.denominator == 1:
      return False, "numeric"
  if answer_extraction.normalize_answer(answer) == (
      answer_extraction.normalize_answer(gold)
  ):
    return True, "normal_form"
  verifier = verifier or math_verifier.shared_verifier()
  outcome = verifier.verify(
      answer_extraction.clean_answer(gold), answer, timeout_s
  )
  return outcome is math_verifier.VerifyOutcome.EQUAL, outcome.value


class MathTask(base.Task):
  """A task whose problems have a single final answer, given in `\\boxed{}`."""

  instruction: str = MATH_INSTRUCTION

  def __init__(
      self,
      data_path: str | os.PathLike[str] | None = None,
      *,
      verify_timeout_s: float = DEFAULT_VERIFY_TIMEOUT_S,
      verifier: math_verifier.MathVerifier | None = None,
  ):
    """Set up the task.

    Args:
      data_path: a data file in the task's format; None for the shipped one.
      verify_timeout_s: seconds math-verify may spend on one comparison.
      verifier: the math-verify worker to use; None for the shared one.
    """
    super().__init__(data_path)
    if verify_timeout_s <= 0:
      raise ValueError(
          f"verify_timeout_s must be positive, got {verify_timeout_s}"
      )
    self.verify_timeout_s = verify_timeout_s
    self._verifier = verifier

  def messages(self, problem: base.Problem) -> list[base.Message]:
    return [
        {"role": "system", "content": SYSTEM_PROMPT},
        {"role": "user", "content": f"{problem.question}\n\n{self.instruction}"},
    ]

  def extract(
      self, text: str, problem: base.Problem | None = None
  ) -> str | None:
    del problem  # The answer format is the same for every problem.
    return answer_extraction.extract_final_answer(text)

  def normalize(self, answer: str) -> str:
    return answer_extraction.normalize_answer(answer)

  def grade(self, text_or_answer: str, problem: base.Problem) -> bool:
    return self.grade_details(text_or_answer, problem).correct

  def grade_details(
      self, text_or_answer: str, problem: base.Problem
  ) -> MathGrade:
    """Grade a reply or an extracted answer, recording how it was decided."""
    answer = self.extract(text_or_answer)
    if answer is None:
      return MathGrade(correct=False, answer=None, method="no_answer")
    correct, method = compare_answers(
        answer,
        problem.answer,
        timeout_s=self.verify_timeout_s,
        verifier=self._verifier,
    )
    return MathGrade(correct=correct, answer=answer, method=method)


class Gsm8kTask(MathTask):
  """GSM8K test split: 1,319 grade-school word problems with integer answers."""

  name = "gsm8k"

  def default_data_file(self) -> str:
    return "gsm8k/test.jsonl"

  def read_problems(self, path: pathlib.Path) -> Iterable[base.Problem]:
    for index, (line_number, record) in enumerate(records.read_jsonl(path)):
      location = f"{path}:{line_number}"
      solution = records.require_text(record, "answer", location)
      try:
        answer = answer_extraction.gsm8k_ground_truth(solution)
      except ValueError as error:
        raise records.RecordError(f"{location}: field 'answer': {error}") from error
      yield base.Problem(
          problem_id=str(index),
          question=records.require_text(record, "question", location),
          answer=answer,
          metadata={"solution": solution},
      )


class Math500Task(MathTask):
  """MATH-500: 500 competition problems with LaTeX answers."""

  name = "math500"

  def default_data_file(self) -> str:
    return "math500/test.jsonl"

  def read_problems(self, path: pathlib.Path) -> Iterable[base.Problem]:
    for line_number, record in records.read_jsonl(path):
      location = f"{path}:{line_number}"
      yield base.Problem(
          problem_id=records.require_text(record, "unique_id", location),
          question=records.require_text(record, "problem", location),
          answer=records.require_answer(record, "answer", location),
          metadata={
              key: record[key]
              for key in ("solution", "subject", "level")
              if key in record
          },
      )


class AimeTask(MathTask):
  """AIME I and II of one year: 30 problems with integer answers 0 to 999."""

  instruction = AIME_INSTRUCTION

  def __init__(
      self,
      year: int,
      data_path: str | os.PathLike[str] | None = None,
      **kwargs,
  ):
    """Set up the AIME task of `year`; `kwargs` go to `MathTask`."""
    if year not in (2024, 2025):
      raise ValueError(f"AIME year must be 2024 or 2025, got {year!r}")
    self.year = year
    self.name = f"aime{year}"
    super().__init__(data_path, **kwargs)

  def default_data_file(self) -> str:
    return f"aime{self.year}/aime_{self.year}.jsonl"

  def read_problems(self, path: pathlib.Path) -> Iterable[base.Problem]:
    for line_number, record in records.read_jsonl(path):
      location = f"{path}:{line_number}"
      yield base.Problem(
          problem_id=records.require_text(record, "id", location),
          question=records.require_text(record, "problem", location),
          answer=records.require_answer(record, "answer", location),
          metadata={
              key: record[key]
              for key in ("year", "contest", "problem_number")
              if key in record
          },
      )


class SvampTask(MathTask):
  """SVAMP: 1,000 one- or two-operation word problems with integer answers."""

  name = "svamp"

  def default_data_file(self) -> str:
    return "svamp/SVAMP.json"

  def read_problems(self, path: pathlib.Path) -> Iterable[base.Problem]:
    for index, record in enumerate(records.read_json_array(path)):
      location = f"{path} item {index}"
      body = records.require_text(record, "Body", location).strip()
      question = records.require_text(record, "Question", location).strip()
      yield base.Problem(
          problem_id=records.require_text(record, "ID", location),
          question=f"{body} {question}",
          answer=records.require_answer(record, "Answer", location),
          metadata={
              key.lower(): record[key]
              for key in ("Equation", "Type")
              if key in record
          },
      )
