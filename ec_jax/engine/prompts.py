"""Chat prompts of the problems, and left padding to a few length buckets.

Each batch is padded to the bucket of its longest prompt, a multiple of `bucket_multiple`
tokens, so the sampler compiles once per bucket rather than once per prompt length.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ec_jax.tasks import base as tasks_base
from ec_jax.text import chat_template
from ec_jax.text import tokenizer as tokenizer_lib


def encode_prompts(task: tasks_base.Task, problems: Sequence[tasks_base.Problem],
                   tokenizer: tokenizer_lib.Tokenizer, max_new_tokens: int,
                   context_length: int) -> list[list[int]]:
  """Render and encode every problem's chat prompt, checking each fits with max_new_tokens.

  Raises:
    PromptTooLongError: a prompt plus max_new_tokens exceeds context_length; the message names
      the problem and the limits that would make it fit.
  """
  encoded = []
  for problem in problems:
    try:
      encoded.append(tokenizer.encode_prompt(task.messages(problem), max_new_tokens,
                                             context_length))
    except chat_template.PromptTooLongError as error:
      raise chat_template.PromptTooLongError(
          f"Problem {problem.problem_id!r}: {error}") from error
  return encoded


def bucket_length(length: int, multiple: int, limit: int) -> int:
  """Return `length` rounded up to a multiple of `multiple`, but at most `limit`.

  `limit` is the room the context leaves for the prompt (context length minus max_new_tokens),
  which is at least `length` for a prompt that passed `encode_prompts`.
  """
  if length < 1 or multiple < 1:
    raise ValueError(f"length and multiple must be >= 1, got {length} and {multiple}.")
  if length > limit:
    raise ValueError(f"A prompt of {length} tokens exceeds the limit of {limit} tokens.")
  rounded = -(-length // multiple) * multiple
  return min(rounded, limit)


def pad_left(prompts: Sequence[Sequence[int]], width: int,
             pad_id: int = 0) -> tuple[np.ndarray, np.ndarray]:
  """Left-pad prompts to `width` tokens.

  Returns:
    `tokens [B, width]` int32 with each prompt right-aligned, and `lengths [B]` int32.
  """
  tokens = np.full((len(prompts), width), pad_id, dtype=np.int32)
  lengths = np.zeros(len(prompts), dtype=np.int32)
  for row, prompt in enumerate(prompts):
    if not 1 <= len(prompt) <= width:
      raise ValueError(f"Prompt {row} has {len(prompt)} tokens; expected 1 to {width}.")
    tokens[row, width - len(prompt):] = prompt
    lengths[row] = len(prompt)
  return tokens, lengths
