"""Tests for math grading: fast numeric path, math-verify, and its timeout."""

import threading

import pytest

from ec_jax.tasks import get_task
from ec_jax.tasks import math as math_tasks
from ec_jax.tasks import math_verifier
from ec_jax.tasks.base import Problem

# Exponent tower whose value sympy tries to compute when math-verify compares
# it with a number: it runs for minutes and takes gigabytes of memory.
HANGING_ANSWER = "2^{2^{2^{2^{2^{2}}}}}"


@pytest.fixture(scope="module")
def verifier():
  worker = math_verifier.MathVerifier()
  yield worker
  worker.close()


@pytest.fixture(scope="module")
def math500(verifier):
  return math_tasks.Math500Task(verifier=verifier)


@pytest.fixture(scope="module")
def gsm8k(verifier):
  return math_tasks.Gsm8kTask(verifier=verifier)


def _problem(answer: str) -> Problem:
  return Problem(problem_id="p", question="q", answer=answer)


@pytest.mark.parametrize(
    "reply",
    [
        "She sells 9 eggs for $2 each.\n#### 18",
        "9 * 2 = 18, so she makes $18 every day.\nThe answer is 18.",
        r"She makes $9 \times 2 = \boxed{18}$ dollars.",
        "The answer is **$18**.",
        r"\boxed{18 \text{ dollars}}",
        "She makes 18 dollars.\nThe answer is 18.\n\nQuestion: Tom has 5 "
        "apples and eats 2. How many are left?\nThe answer is 3.",
        "18",
    ],
)
def test_gsm8k_grades_real_problem_correct(gsm8k, reply):
  problem = gsm8k.load(1)[0]
  assert problem.answer == "18"
  grade = gsm8k.grade_details(reply, problem)
  assert grade.correct, grade
  assert grade.method == "numeric"


@pytest.mark.parametrize(
    "reply",
    [
        "#### 16",
        "The answer is 9.",
        r"\boxed{18.5}",
        # The 18 belongs to a question the model invented after answering.
        "She makes 16 dollars a day.\n\nQuestion: Tom earns $9 twice. How "
        "much does he earn?\n#### 18",
    ],
)
def test_gsm8k_grades_wrong_answer(gsm8k, reply):
  problem = gsm8k.load(1)[0]
  assert not gsm8k.grade(reply, problem)


def test_thousands_separators_and_currency(gsm8k):
  problem = _problem("1450000")
  for reply in (
      "#### 1,450,000",
      "The house costs $1,450,000.",
      r"\boxed{\$1{,}450{,}000}",
      "The answer is **1,450,000** dollars.",
  ):
    assert gsm8k.grade(reply, problem), reply


def test_missing_answer_is_incorrect(gsm8k):
  problem = gsm8k.load(1)[0]
  grade = gsm8k.grade_details("I am not sure how to solve this.", problem)
  assert not grade.correct
  assert grade.answer is None
  assert grade.method == "no_answer"


def test_math500_real_answers_accept_their_own_solutions(math500):
  problems = math500.load()
  assert len(problems) == 500
  for problem in problems:
    assert math500.grade(problem.metadata["solution"], problem), problem.problem_id


def test_math_verify_accepts_equivalent_latex(math500):
  problem = math500.load(1)[0]
  assert problem.answer == r"\left( 3, \frac{\pi}{2} \right)"
  grade = math500.grade_details(r"The point is \boxed{(3, \pi/2)}.", problem)
  assert grade.correct
  assert grade.method == "equal"
  assert not math500.grade(r"\boxed{(3, \pi)}", problem)


@pytest.mark.parametrize(
    "gold, answer, expected",
    [
        (r"\frac{1}{2}", "0.5", True),  # exact: fast path
        ("0.5", r"\frac{1}{2}", True),
        (r"\frac{14}{3}", "4.666667", True),  # math-verify rounds to 6 places
        (r"\frac{1}{3}", "0.3333333", True),
        (r"\frac{1}{3}", "0.33", False),
        ("3", "3.0", True),
        (r"\sqrt{2}", r"\frac{2}{\sqrt{2}}", True),
        (r"\frac{\sqrt{3}}{2}", r"\sin(\pi/3)", True),
        (r"\frac{1}{2}", "0.51", False),
    ],
)
def test_fractions_and_decimals(math500, gold, answer, expected):
  assert math500.grade(rf"\boxed{{{answer}}}", _problem(gold)) is expected


def test_unequal_integers_skip_math_verify(verifier):
  timeouts = verifier.num_timeouts
  starts = verifier.num_starts
  assert math_tasks.compare_answers("17", "18", verifier=verifier) == (
      False,
      "numeric",
  )
  assert verifier.num_starts == starts
  assert verifier.num_timeouts == timeouts


def test_verdicts_are_cached(verifier):
  requests = verifier.num_requests
  for _ in range(3):
    outcome = verifier.verify(r"\frac{1}{3}", "0.333333333", timeout_s=5)
    assert outcome is math_verifier.VerifyOutcome.EQUAL
  assert verifier.num_requests == requests + 1


def test_hanging_answer_times_out(verifier):
  task = math_tasks.Math500Task(verify_timeout_s=0.5, verifier=verifier)
  timeouts = verifier.num_timeouts
  grade = task.grade_details(rf"\boxed{{{HANGING_ANSWER}}}", _problem("7"))
  assert not grade.correct
  assert grade.method == "timeout"
  assert verifier.num_timeouts == timeouts + 1
  # Timeouts are not cached: the same input is tried again.
  grade = task.grade_details(rf"\boxed{{{HANGING_ANSWER}}}", _problem("7"))
  assert grade.method == "timeout"
  assert verifier.num_timeouts == timeouts + 2
  # The killed worker is replaced, and the next comparison works.
  assert task.grade(r"\boxed{\frac{14}{2}}", _problem(r"\sqrt{49}"))


def test_hanging_answer_times_out_in_thread(verifier):
  # math-verify's own timeout uses signal.alarm, which fails off the main thread.
  task = math_tasks.Math500Task(verify_timeout_s=0.3, verifier=verifier)
  grades = []
  worker = threading.Thread(
      target=lambda: grades.append(
          task.grade_details(rf"\boxed{{{HANGING_ANSWER}}}", _problem("7"))
      )
  )
  worker.start()
  worker.join(timeout=60)
  assert not worker.is_alive()
  assert grades[0].method == "timeout"
  assert not grades[0].correct


def test_verify_rejects_nonpositive_timeout(verifier):
  with pytest.raises(ValueError, match="timeout_s"):
    verifier.verify("1", "1", timeout_s=0)
  with pytest.raises(ValueError, match="verify_timeout_s"):
    math_tasks.Math500Task(verify_timeout_s=-1)


def test_aime_and_svamp_grade_integers(verifier):
  aime = get_task("aime2025", verifier=verifier)
  problem = aime.load(1)[0]
  assert problem.answer == "70"
  assert aime.grade(r"The sum is $\boxed{70}$.", problem)
  assert aime.grade(r"\boxed{070}", problem)
  assert not aime.grade(r"\boxed{71}", problem)
  svamp = get_task("svamp", verifier=verifier)
  problem = svamp.load(1)[0]
  assert problem.answer == "51"
  assert svamp.grade("76 - 25 = 51. The answer is 51.", problem)
  assert svamp.grade(r"\boxed{51.0}", problem)
