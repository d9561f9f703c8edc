"""Tests for the task registry and the loaders of the shipped data."""

import zlib

import pytest

from ec_jax import tasks
from ec_jax.tasks import base


@pytest.mark.parametrize(
    "name, count, first_id, first_answer",
    [
        ("gsm8k", 1319, "0", "18"),
        ("math500", 500, "test/precalculus/807.json",
         r"\left( 3, \frac{\pi}{2} \right)"),
        ("aime2024", 30, "2024-I-1", "204"),
        ("aime2025", 30, "2025-I-1", "70"),
        ("svamp", 1000, "chal-1", "51"),
        ("humaneval", 164, "HumanEval/0", None),
    ],
)
def test_shipped_data_counts(name, count, first_id, first_answer):
  problems = tasks.get_task(name).load()
  assert len(problems) == count
  assert problems[0].problem_id == first_id
  if first_answer is not None:
    assert problems[0].answer == first_answer
  assert len({problem.problem_id for problem in problems}) == count
  for problem in problems:
    assert problem.question.strip()
    assert problem.answer.strip()


def test_problem_uid_is_crc32_of_id():
  problem = base.Problem(problem_id="HumanEval/0", question="q", answer="a")
  expected = zlib.crc32(b"HumanEval/0") & 0x7FFFFFFF
  assert problem.problem_uid == expected
  assert tasks.compute_problem_uid("HumanEval/0") == expected
  assert 0 <= tasks.compute_problem_uid("\u00e9t\u00e9") < 2**31


def test_problem_rejects_empty_id():
  with pytest.raises(ValueError, match="problem_id"):
    base.Problem(problem_id="", question="q", answer="a")


def test_gsm8k_ids_are_file_indices():
  problems = tasks.get_task("gsm8k").load(3)
  assert [problem.problem_id for problem in problems] == ["0", "1", "2"]
  assert problems[1].question.startswith("A robe takes 2 bolts")
  assert problems[1].answer == "3"
  assert problems[1].metadata["solution"].endswith("#### 3")


def test_gsm8k_strips_thousands_separators():
  answers = [problem.answer for problem in tasks.get_task("gsm8k").load()]
  assert all(answer.lstrip("-").isdigit() for answer in answers)
  assert "1450000" in answers


def test_math500_metadata():
  problem = tasks.get_task("math500").load(1)[0]
  assert problem.metadata["subject"] == "Precalculus"
  assert problem.metadata["level"] == 2
  assert r"\boxed" in problem.metadata["solution"]


def test_aime_problems_and_answers():
  problems = tasks.get_task("aime2024").load()
  assert problems[-1].problem_id == "2024-II-15"
  assert all(0 <= int(problem.answer) <= 999 for problem in problems)
  assert problems[0].metadata["contest"] == "AIME I"


def test_svamp_question_joins_body_and_question():
  problem = tasks.get_task("svamp").load(1)[0]
  assert problem.question == (
      "Each pack of dvds costs 76 dollars. If there is a discount of 25 "
      "dollars on each pack How much do you have to pay to buy each pack?"
  )
  assert problem.metadata["equation"] == "( 76.0 - 25.0 )"


def test_humaneval_metadata():
  problem = tasks.get_task("humaneval").load(1)[0]
  assert problem.metadata["entry_point"] == "has_close_elements"
  assert "def check(candidate)" in problem.metadata["test"]
  assert problem.question == problem.metadata["prompt"]


def test_num_problems_takes_first_in_file_order():
  task = tasks.get_task("svamp")
  everything = task.load()
  assert task.load(5) == everything[:5]
  assert task.load(None) == everything
  assert task.load(-1) == everything


@pytest.mark.parametrize("num_problems", [0, -2, 1.5, "3", True])
def test_num_problems_rejects_invalid(num_problems):
  with pytest.raises(ValueError, match="num_problems"):
    tasks.get_task("aime2025").load(num_problems)


def test_num_problems_beyond_file_is_error():
  with pytest.raises(ValueError, match="contains only 30 problems"):
    tasks.get_task("aime2025").load(31)


def test_unknown_task_names_options():
  with pytest.raises(ValueError) as error:
    tasks.get_task("gsm9k")
  message = str(error.value)
  assert "'gsm9k'" in message
  for name in tasks.TASK_NAMES:
    assert name in message


def test_missing_data_file_is_error(tmp_path):
  missing = tmp_path / "absent.jsonl"
  with pytest.raises(FileNotFoundError, match="absent.jsonl"):
    tasks.get_task("gsm8k", data_path=missing)
  with pytest.raises(ValueError, match="data_path"):
    tasks.get_task("jsonl")


def test_data_path_overrides_shipped_file(tmp_path):
  source = tasks.get_task("aime2025").data_path
  lines = source.read_text(encoding="utf-8").splitlines()
  subset = tmp_path / "aime_subset.jsonl"
  subset.write_text("\n".join(lines[:2]) + "\n", encoding="utf-8")
  problems = tasks.get_task("aime2025", data_path=subset).load()
  assert [problem.problem_id for problem in problems] == ["2025-I-1", "2025-I-2"]


@pytest.mark.parametrize("name", ["gsm8k", "math500", "aime2024", "svamp"])
def test_math_messages_ask_for_boxed_answer(name):
  task = tasks.get_task(name)
  problem = task.load(1)[0]
  messages = task.messages(problem)
  assert [message["role"] for message in messages] == ["system", "user"]
  assert messages[1]["content"].startswith(problem.question)
  assert "step by step" in messages[1]["content"]
  assert r"\boxed{}" in messages[1]["content"]


def test_humaneval_messages_ask_for_code_block():
  task = tasks.get_task("humaneval")
  problem = task.load(1)[0]
  messages = task.messages(problem)
  assert [message["role"] for message in messages] == ["system", "user"]
  assert "```python" in messages[1]["content"]
  assert problem.metadata["prompt"] in messages[1]["content"]
