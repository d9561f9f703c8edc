"""HumanEval: 164 Python functions graded by running their tests in the sandbox.

The model gets the function's signature and docstring and is asked for the
complete function in a ```python block. A reply passes when the program
`prompt + completion + test + check(entry_point)` returns normally in the
sandbox (`ec_jax.tasks.sandbox`).
"""

from __future__ import annotations

import ast
import os
import pathlib
import re
from collections.abc import Iterable

from ec_jax.tasks import base
from ec_jax.tasks import records
from ec_jax.tasks import sandbox

DEFAULT_LIMITS = sandbox.SandboxLimits(timeout_s=10.0)

SYSTEM_PROMPT = "You are an expert Python programmer."
USER_TEMPLATE = (
    "Complete the following Python function. Reply with the whole function, "
    "including its signature and the imports it needs, in one ```python code "
    "block.\n\n```python\n{prompt}```"
)

# A fenced code block; the last one may be cut off by the end of the reply.
_FENCED_BLOCK = re.compile(
    r"```[ \t]*([A-Za-z0-9_+.-]*)[^\n]*\n(.*?)(?:```|\Z)", re.DOTALL
)
_PYTHON_LANGUAGES = frozenset({"", "python", "python3", "py", "py3"})


def _defines(code: str, entry_point: str) -> bool:
  """Return whether `code` defines `entry_point` at top level."""
  pattern = rf"^(?:async[ \t]+)?def[ \t]+{re.escape(entry_point)}[ \t]*\("
  return re.search(pattern, code, re.MULTILINE) is not None


def _compiles(code: str) -> bool:
  try:
    compile(code, "<completion>", "exec")
  except (SyntaxError, ValueError):
    return False
  return True


def extract_code(text: str, entry_point: str | None = None, prompt: str | None = None) -> str | None:
  """Return the code of a reply, or None when it has no usable code.

  Takes the last Python code block that defines `entry_point`, else the last
  Python code block. A reply without code fences is taken whole when it
  compiles on its own or after `prompt` (a raw completion of the function
  body), or when it defines `entry_point`.
  """
  blocks = [
      body
      for language, body in _FENCED_BLOCK.findall(text)
      if language.lower() in _PYTHON_LANGUAGES and body.strip()
  ]
  if blocks:
    if entry_point is not None:
      defining = [block for block in blocks if _defines(block, entry_point)]
      if defining:
        return defining[-1]
    return blocks[-1]
  if "```" in text or not text.strip():
    return None
  if entry_point is not None and _defines(text, entry_point):
    return text
  if _compiles(text) or (prompt is not None and _compiles(prompt + text)):
    return text
  return None


def build_program(problem: base.Problem, code: str) -> str:
  """Return `prompt + code + test + check(entry_point)` as one program.

  A complete function (it defines the entry point at top level) follows the
  prompt and replaces the prompt's stub, and the prompt keeps the helper
  functions and imports it defines. Any other code is a body that continues
  the prompt directly.
  """
  prompt = problem.metadata["prompt"]
  entry_point = problem.metadata["entry_point"]
  if _defines(code, entry_point):
    solution = prompt + "\n" + code
  else:
    solution = prompt + code
  return (
      f"{solution}\n\n{problem.metadata['test']}\n\ncheck({entry_point})\n"
  )


class HumanEvalTask(base.Task):
  """HumanEval: code generation graded by the problem's unit tests."""

  name = "humaneval"

  def __init__(
      self,
      data_path: str | os.PathLike[str] | None = None,
      *,
      limits: sandbox.SandboxLimits = DEFAULT_LIMITS,
  ):
    """Set up the task.

    Args:
      data_path: a HumanEval `.jsonl` or `.jsonl.gz` file; None for the
        shipped one.
      limits: sandbox limits for running each completion with its tests.
    """
    super().__init__(data_path)
    self.limits = limits

  def default_data_file(self) -> str:
    return "humaneval/HumanEval.jsonl.gz"

  def read_problems(self, path: pathlib.Path) -> Iterable[base.Problem]:
    for line_number, record in records.read_jsonl(path):
      location = f"{path}:{line_number}"
      prompt = records.require_text(record, "prompt", location)
      yield base.Problem(
          problem_id=records.require_text(record, "task_id", location),
          question=prompt,
          answer=records.require_text(record, "canonical_solution", location),
          metadata={
              "prompt": prompt,
              "test": records.require_text(record, "test", location),
              "entry_point": records.require_text(
                  record, "entry_point", location
              ),
          },
      )

  def messages(self, problem: base.Problem) -> list[base.Message]:
    return [
        {"role": "system", "content": SYSTEM_PROMPT},
        {"role": "user", "content": USER_TEMPLATE.format(prompt=problem.question)},
    ]

  def extract(
      self, text: str, problem: base.Problem | None = None
  ) -> str | None:
    if problem is None:
      return extract_code(text)
    return extract_code(
        text,
        entry_point=problem.metadata["entry_point"],
        prompt=problem.metadata["prompt"],
    )

  def normalize(self, answer: str) -> str:
    """Return the code without comments and formatting (via `ast.unparse`)."""
    try:
      return ast.unparse(ast.parse(answer))
    except (SyntaxError, ValueError):
      lines = (line.rstrip() for line in answer.strip().splitlines())
      return "\n".join(line for line in lines if line)

  def grade(self, text_or_answer: str, problem: base.Problem) -> bool:
    result = self.execute(text_or_answer, problem)
    return result is not None and result.passed

  def execute(
      self, text_or_answer: str, problem: base.Problem
  ) -> sandbox.ExecutionResult | None:
    """Run a reply's code with the problem's tests; None when it has no code."""
    code = self.extract(text_or_answer, problem)
    if code is None:
      return None
    return sandbox.run_python(build_program(problem, code), self.limits)
