"""Tests for user JSONL problem files (`task=jsonl`)."""

import json

import pytest

from ec_jax import tasks
from ec_jax.tasks import math_verifier


@pytest.fixture(scope="module")
def verifier():
  worker = math_verifier.MathVerifier()
  yield worker
  worker.close()


def _write_lines(path, lines):
  path.write_text("\n".join(lines) + "\n", encoding="utf-8")
  return path


def test_jsonl_reads_sample_file(data_dir):
  task = tasks.get_task("jsonl", data_path=data_dir / "tasks" / "user_problems.jsonl")
  problems = task.load()
  # Ids fall back to the 0-based record index; the blank line is skipped.
  assert [problem.problem_id for problem in problems] == ["apples", "1", "17", "3"]
  assert [problem.answer for problem in problems] == ["3", "6", r"\frac{7}{2}", "1500"]
  assert problems[3].metadata == {"source": "written for this test"}
  assert problems[0].problem_uid == tasks.compute_problem_uid("apples")


def test_jsonl_grades_sample_file(data_dir, verifier):
  task = tasks.get_task(
      "jsonl",
      data_path=data_dir / "tasks" / "user_problems.jsonl",
      verifier=verifier,
  )
  apples, pens, half, hens = task.load()
  assert task.grade("5 - 2 = 3. The answer is 3.", apples)
  assert task.grade(r"\boxed{\$6.00}", pens)
  assert task.grade(r"\boxed{3.5}", half)
  assert task.grade("#### 1,500", hens)
  assert not task.grade("#### 1,400", hens)


@pytest.mark.parametrize(
    "line, message",
    [
        ('{"question": "q", "answer": "1"', "invalid JSON"),
        ('["q", "1"]', "expected a JSON object, got list"),
        ('{"answer": "1"}', "missing field 'question'"),
        ('{"question": "q"}', "missing field 'answer'"),
        ('{"question": 5, "answer": "1"}', "field 'question' must be a string"),
        ('{"question": "  ", "answer": "1"}', "field 'question' is empty"),
        ('{"question": "q", "answer": [1]}', "field 'answer' must be a string or a number"),
        ('{"question": "q", "answer": true}', "field 'answer' must be a string or a number"),
        ('{"question": "q", "answer": ""}', "field 'answer' is empty"),
        ('{"question": "q", "answer": "#### "}', "nothing after '####'"),
        ('{"id": 1.5, "question": "q", "answer": "1"}', "field 'id' must be a string or an integer"),
        ('{"id": "", "question": "q", "answer": "1"}', "field 'id' is empty"),
    ],
)
def test_jsonl_malformed_line_names_file_line_field(tmp_path, line, message):
  good = json.dumps({"question": "What is 1 + 1?", "answer": "2"})
  path = _write_lines(tmp_path / "problems.jsonl", [good, good, line])
  task = tasks.get_task("jsonl", data_path=path)
  with pytest.raises(tasks.RecordError) as error:
    task.load()
  assert f"{path}:3" in str(error.value)
  assert message in str(error.value)


def test_jsonl_duplicate_id_names_both_lines(tmp_path):
  path = _write_lines(
      tmp_path / "problems.jsonl",
      [
          json.dumps({"id": "a", "question": "q1", "answer": "1"}),
          json.dumps({"id": "b", "question": "q2", "answer": "2"}),
          json.dumps({"id": "a", "question": "q3", "answer": "3"}),
      ],
  )
  with pytest.raises(tasks.RecordError, match=r"problems.jsonl:3: .*'a'.*line 1"):
    tasks.get_task("jsonl", data_path=path).load()


def test_jsonl_missing_file_is_error(tmp_path):
  with pytest.raises(FileNotFoundError, match="nothing.jsonl"):
    tasks.get_task("jsonl", data_path=tmp_path / "nothing.jsonl")
