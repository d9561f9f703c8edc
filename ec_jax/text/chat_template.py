"""Chat templates: rendering, stop tokens and prompt-length checks.

A chat template is the Jinja2 source stored as `tokenizer.chat_template` in GGUF metadata or in
`tokenizer_config.json`. It is rendered the way Hugging Face `transformers` renders it: in an
immutable sandboxed environment with `trim_blocks` and `lstrip_blocks`, the `loopcontrols`
extension, a `raise_exception(message)` function, a `tojson` filter that keeps non-ASCII text,
and the variables `messages`, `add_generation_prompt`, `bos_token` and `eos_token`.
"""

from __future__ import annotations

import datetime
import functools
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Protocol

import jinja2
import jinja2.ext
import jinja2.sandbox

# End-of-turn markers of common chat formats: ChatML (Qwen, SmolLM), Llama 3, Gemma, Phi-3 and
# Command R. A template that writes one of them ends each assistant turn with that token.
KNOWN_END_OF_TURN_TOKENS = (
    "<|im_end|>",
    "<|eot_id|>",
    "<end_of_turn>",
    "<|end|>",
    "<|END_OF_TURN_TOKEN|>",
)

# End-of-document token of GPT-2-style vocabularies; a model may emit it in place of end-of-turn.
END_OF_TEXT_TOKEN = "<|endoftext|>"

Messages = Sequence[Mapping[str, Any]]


class ChatTemplateError(ValueError):
  """A chat template that cannot be rendered, or invalid messages."""


class PromptTooLongError(ValueError):
  """A prompt that does not fit the model's context with the requested new tokens."""


def _raise_exception(message: str) -> None:
  raise ChatTemplateError(f"Chat template raised an error: {message}")


def _tojson(value: Any, indent: int | None = None) -> str:
  # Jinja2's own `tojson` escapes <, >, & and ' for HTML; chat prompts need the plain JSON.
  return json.dumps(value, ensure_ascii=False, indent=indent)


def _strftime_now(date_format: str) -> str:
  return datetime.datetime.now().strftime(date_format)


@functools.lru_cache(maxsize=16)
def _compile(template: str) -> jinja2.Template:
  env = jinja2.sandbox.ImmutableSandboxedEnvironment(
      trim_blocks=True,
      lstrip_blocks=True,
      extensions=[jinja2.ext.loopcontrols],
  )
  env.filters["tojson"] = _tojson
  env.globals["raise_exception"] = _raise_exception
  env.globals["strftime_now"] = _strftime_now
  try:
    return env.from_string(template)
  except jinja2.TemplateSyntaxError as e:
    raise ChatTemplateError(
        f"Chat template has a syntax error on line {e.lineno}: {e.message}"
    ) from e


def normalize_messages(messages: str | Messages) -> list[dict[str, Any]]:
  """Checks chat messages and returns them as a list of dicts.

  Args:
    messages: a list of `{"role": str, "content": str}` mappings, or a plain string, which becomes
      one user message.

  Raises:
    ChatTemplateError: an empty list, a message that is not a mapping, or a missing or non-string
      role or content.
  """
  if isinstance(messages, str):
    return [{"role": "user", "content": messages}]
  if isinstance(messages, Mapping) or not isinstance(messages, Sequence):
    raise ChatTemplateError(
        "Messages must be a list of {'role': ..., 'content': ...} dicts, "
        f"got {type(messages).__name__}."
    )
  if not messages:
    raise ChatTemplateError(
        "Messages are empty; pass at least one {'role': 'user', 'content': ...} dict."
    )
  normalized = []
  for index, message in enumerate(messages):
    if not isinstance(message, Mapping):
      raise ChatTemplateError(
          f"Message {index} must be a dict, got {type(message).__name__}: {message!r}."
      )
    for key in ("role", "content"):
      if not isinstance(message.get(key), str):
        raise ChatTemplateError(
            f"Message {index} needs a string {key!r}, got {message.get(key)!r}."
        )
    normalized.append(dict(message))
  return normalized


def render_chat_template(
    template: str,
    messages: str | Messages,
    *,
    bos_token: str | None,
    eos_token: str | None,
    add_generation_prompt: bool = True,
    **variables: Any,
) -> str:
  """Renders a chat template to the prompt text.

  Args:
    template: Jinja2 source of the chat template.
    messages: chat messages (see `normalize_messages`).
    bos_token: text of the BOS token, or None; the template variable `bos_token` ("" for None).
    eos_token: text of the EOS token, or None; the template variable `eos_token` ("" for None).
    add_generation_prompt: whether to end with the header of an assistant turn.
    **variables: further template variables, e.g. `tools`.

  Returns:
    The rendered prompt text.

  Raises:
    ChatTemplateError: invalid messages, a syntax error, or the template's `raise_exception`.
  """
  compiled = _compile(template)
  return compiled.render(
      messages=normalize_messages(messages),
      add_generation_prompt=add_generation_prompt,
      bos_token=bos_token or "",
      eos_token=eos_token or "",
      **variables,
  )


def end_of_turn_tokens(template: str | None) -> list[str]:
  """Returns the known end-of-turn tokens (`KNOWN_END_OF_TURN_TOKENS`) that `template` writes."""
  if not template:
    return []
  return [token for token in KNOWN_END_OF_TURN_TOKENS if token in template]


def stop_token_ids(
    eos_ids: Iterable[int],
    template: str | None,
    token_to_id: Callable[[str], int | None],
) -> tuple[int, ...]:
  """Returns the ids that end generation, sorted.

  The set is the configured EOS ids, the end-of-turn tokens the chat template writes (those of
  them in the vocabulary), and `<|endoftext|>` when the vocabulary has it.

  Args:
    eos_ids: EOS ids from GGUF metadata or the checkpoint's configs.
    template: the chat template source, or None.
    token_to_id: maps token text to its id, None for text that is not a token.
  """
  stop = set(int(i) for i in eos_ids)
  for token in [*end_of_turn_tokens(template), END_OF_TEXT_TOKEN]:
    token_id = token_to_id(token)
    if token_id is not None:
      stop.add(int(token_id))
  return tuple(sorted(stop))


def check_prompt_length(num_prompt_tokens: int, max_new_tokens: int, context_length: int) -> None:
  """Checks that a prompt and `max_new_tokens` new tokens fit in the context.

  Raises:
    ValueError: `max_new_tokens` or `context_length` is not positive.
    PromptTooLongError: `num_prompt_tokens + max_new_tokens > context_length`; the message gives
      both limits that would make it fit.
  """
  if max_new_tokens < 1:
    raise ValueError(f"max_new_tokens must be at least 1, got {max_new_tokens}.")
  if context_length < 1:
    raise ValueError(f"context_length must be at least 1, got {context_length}.")
  needed = num_prompt_tokens + max_new_tokens
  if needed <= context_length:
    return
  if num_prompt_tokens >= context_length:
    fix = f"shorten the prompt to at most {context_length - max_new_tokens} tokens"
    if max_new_tokens < context_length:
      fix += f" (with max_new_tokens={max_new_tokens})"
  else:
    fix = (
        f"set max_new_tokens to at most {context_length - num_prompt_tokens}, "
        "or shorten the prompt "
        f"to at most {max(context_length - max_new_tokens, 0)} tokens"
    )
  raise PromptTooLongError(
      f"Prompt has {num_prompt_tokens} tokens; with max_new_tokens={max_new_tokens} it needs "
      f"{needed} positions, more than the model's context length {context_length}. "
      f"To fix it, {fix}."
  )


class PromptTokenizer(Protocol):
  """Tokenizer interface that `encode_prompt` uses (`ec_jax.text.Tokenizer` implements it)."""

  def render_chat(self, messages: str | Messages, *, add_generation_prompt: bool = True) -> str:
    ...

  def encode(self, text: str, *, add_bos: bool | None = None) -> list[int]:
    ...


def encode_prompt(
    tokenizer: PromptTokenizer,
    messages: str | Messages,
    max_new_tokens: int,
    context_length: int,
) -> list[int]:
  """Renders `messages` with the chat template and encodes them, checking the length first.

  BOS is added only when the tokenizer's metadata sets `add_bos` and the rendered text does not
  already start with BOS, so a template that writes `{{ bos_token }}` never yields two.

  Args:
    tokenizer: the model's tokenizer.
    messages: chat messages (see `normalize_messages`).
    max_new_tokens: the number of tokens to be generated after the prompt.
    context_length: the model's context length in tokens.

  Returns:
    The prompt token ids, ending with the assistant-turn header.

  Raises:
    PromptTooLongError: the prompt plus `max_new_tokens` exceeds `context_length`.
    ChatTemplateError: invalid messages or a template error.
  """
  ids = tokenizer.encode(tokenizer.render_chat(messages, add_generation_prompt=True))
  check_prompt_length(len(ids), max_new_tokens, context_length)
  return ids
