"""Tests for HumanEval prompts, code extraction and test-based grading."""

import concurrent.futures

import pytest

from ec_jax import tasks
from ec_jax.tasks import humaneval
from ec_jax.tasks import sandbox

# Short timeouts keep the hanging cases quick; real programs finish in well
# under a second.
LIMITS = sandbox.SandboxLimits(timeout_s=2.0, memory_bytes=512 * 1024**2)


@pytest.fixture(scope="module")
def task():
  return humaneval.HumanEvalTask(limits=LIMITS)


@pytest.fixture(scope="module")
def problems(task):
  return {problem.problem_id: problem for problem in task.load()}


def _full_function(problem, body):
  """Return a chat-style reply holding the complete function."""
  return (
      "Here is the implementation:\n\n```python\n"
      + problem.metadata["prompt"]
      + body
      + "```\n\nIt loops over the input once."
  )


# HumanEval/10 and /38 call helper functions that only their prompts define.
@pytest.mark.parametrize(
    "problem_id", ["HumanEval/0", "HumanEval/2", "HumanEval/10", "HumanEval/38"]
)
def test_canonical_solution_passes(task, problems, problem_id):
  problem = problems[problem_id]
  assert task.grade(problem.answer, problem)
  assert task.grade(_full_function(problem, problem.answer), problem)


def test_full_function_without_prompt_helpers_passes(task, problems):
  problem = problems["HumanEval/2"]
  reply = (
      "```python\ndef truncate_number(number: float) -> float:\n"
      "    return number % 1.0\n```"
  )
  assert task.grade(reply, problem)


def test_wrong_solution_fails(task, problems):
  problem = problems["HumanEval/2"]
  reply = (
      "```python\ndef truncate_number(number: float) -> float:\n"
      "    return round(number)\n```"
  )
  result = task.execute(reply, problem)
  assert not result.passed
  assert "AssertionError" in result.stderr


def test_other_problems_solution_fails(task, problems):
  problem = problems["HumanEval/0"]
  assert not task.grade(problems["HumanEval/2"].answer, problem)


def test_infinite_loop_fails_within_timeout(task, problems):
  problem = problems["HumanEval/2"]
  reply = (
      "```python\ndef truncate_number(number: float) -> float:\n"
      "    while True:\n        pass\n```"
  )
  result = task.execute(reply, problem)
  assert not result.passed
  assert result.status == "timed_out"


def test_huge_allocation_fails(task, problems):
  problem = problems["HumanEval/2"]
  reply = (
      "```python\ndef truncate_number(number: float) -> float:\n"
      "    table = [0.0] * (10 ** 10)\n"
      "    return number % 1.0\n```"
  )
  result = task.execute(reply, problem)
  assert not result.passed
  assert "MemoryError" in result.stderr


@pytest.mark.parametrize(
    "exit_line", ["import sys; sys.exit(0)", "import os; os._exit(0)"]
)
def test_exit_before_tests_fails(task, problems, exit_line):
  problem = problems["HumanEval/2"]
  reply = (
      "```python\ndef truncate_number(number: float) -> float:\n"
      "    return 0.0\n\n"
      f"{exit_line}\n```"
  )
  result = task.execute(reply, problem)
  assert not result.passed
  assert result.returncode == 0


def test_fake_success_message_fails(task, problems):
  problem = problems["HumanEval/2"]
  reply = (
      "```python\nimport sys\n\n"
      "def truncate_number(number: float) -> float:\n"
      "    print('All tests passed')\n"
      "    sys.stdout.flush()\n"
      "    return 0.0\n```"
  )
  result = task.execute(reply, problem)
  assert not result.passed
  assert "All tests passed" in result.stdout


def test_main_guard_demo_is_skipped(task, problems):
  problem = problems["HumanEval/2"]
  reply = (
      "```python\ndef truncate_number(number: float) -> float:\n"
      "    return number % 1.0\n\n"
      "if __name__ == '__main__':\n"
      "    print(truncate_number(float(input())))\n```"
  )
  assert task.grade(reply, problem)


def test_reply_without_code_fails(task, problems):
  problem = problems["HumanEval/2"]
  reply = "I would use the modulo operator to keep the fractional part."
  assert task.extract(reply, problem) is None
  assert task.execute(reply, problem) is None
  assert not task.grade(reply, problem)


def test_extract_prefers_block_defining_entry_point(problems):
  problem = problems["HumanEval/2"]
  reply = (
      "```python\ndef truncate_number(number):\n    return number % 1.0\n```\n"
      "Usage:\n```python\nprint(truncate_number(3.5))\n```\n"
  )
  code = humaneval.extract_code(reply, entry_point="truncate_number")
  assert code.startswith("def truncate_number")
  assert humaneval.extract_code(reply).startswith("print(")


def test_extract_takes_unterminated_last_block():
  reply = "```python\ndef f(x):\n    return x + 1\n"
  assert humaneval.extract_code(reply, entry_point="f") == "def f(x):\n    return x + 1\n"


def test_extract_skips_other_languages():
  reply = "```bash\npython solve.py\n```\n```py\ndef g():\n    return 2\n```"
  assert humaneval.extract_code(reply) == "def g():\n    return 2\n"


def test_extract_accepts_raw_body_completion(problems):
  problem = problems["HumanEval/2"]
  assert humaneval.extract_code(
      problem.answer, entry_point="truncate_number", prompt=problem.metadata["prompt"]
  ) == problem.answer


def test_normalize_ignores_comments_and_layout(task):
  first = "def f(x):\n    # add one\n    return x+1\n"
  second = "def f(x):\n\n    return (x + 1)\n"
  assert task.normalize(first) == task.normalize(second)
  assert task.normalize("def f(:\n  pass\n") == "def f(:\n  pass"


def test_build_program_appends_tests_and_check(problems):
  problem = problems["HumanEval/0"]
  program = humaneval.build_program(problem, problem.answer)
  assert program.startswith(problem.metadata["prompt"] + problem.answer)
  assert program.rstrip().endswith("check(has_close_elements)")


def test_all_canonical_solutions_pass(task):
  problems = task.load()
  with concurrent.futures.ThreadPoolExecutor(max_workers=4) as pool:
    results = list(pool.map(lambda p: task.execute(p.answer, p), problems))
  failures = [
      (problem.problem_id, result.stderr[-300:])
      for problem, result in zip(problems, results)
      if not result.passed
  ]
  assert not failures
