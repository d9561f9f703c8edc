"""Chat template rendering, stop tokens and prompt-length checks.

The two real templates are copies of `tokenizer.chat_template` of the embedded GGUF files, and
the expected prompts were rendered by transformers' `apply_chat_template`
(tools/golden_token_ids.py), so these tests need no installed model.
"""

from __future__ import annotations

import json

import pytest

from ec_jax.text import chat_template

MODEL_NAMES = ["smollm2-135m-instruct", "qwen2.5-coder-0.5b-instruct"]


def _template(data_dir, name: str) -> str:
  return (data_dir / "text" / f"{name}.chat_template.jinja").read_text(encoding="utf-8")


def _golden(data_dir) -> dict:
  return json.loads((data_dir / "text" / "golden_token_ids.json").read_text(encoding="utf-8"))


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_real_template_matches_transformers(data_dir, name):
  template = _template(data_dir, name)
  chats = _golden(data_dir)[name]["chats"]
  assert chats
  for chat in chats:
    rendered = chat_template.render_chat_template(
        template, chat["messages"], bos_token="<|endoftext|>", eos_token="<|im_end|>"
    )
    assert rendered == chat["prompt_text"]


def test_qwen_template_default_system_prompt(data_dir):
  template = _template(data_dir, "qwen2.5-coder-0.5b-instruct")
  rendered = chat_template.render_chat_template(template, "Hi", bos_token=None, eos_token=None)
  assert rendered == (
      "<|im_start|>system\n"
      "You are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n"
      "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
  )


def test_generation_prompt_can_be_left_out(data_dir):
  template = _template(data_dir, "smollm2-135m-instruct")
  rendered = chat_template.render_chat_template(
      template, "Hi", bos_token=None, eos_token=None, add_generation_prompt=False
  )
  assert rendered.endswith("<|im_start|>user\nHi<|im_end|>\n")


def test_qwen_stop_ids(data_dir):
  template = _template(data_dir, "qwen2.5-coder-0.5b-instruct")
  vocab = {"<|endoftext|>": 151643, "<|im_start|>": 151644, "<|im_end|>": 151645}
  assert chat_template.stop_token_ids([151645], template, vocab.get) == (151643, 151645)


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_real_templates_end_turns_with_im_end(data_dir, name):
  assert chat_template.end_of_turn_tokens(_template(data_dir, name)) == ["<|im_end|>"]


def test_template_variables_and_trimming():
  template = (
      "{% if bos_token %}{{ bos_token }}{% endif %}\n"
      "    {% for m in messages %}\n"
      "[{{ m.role }}] {{ m.content }}{{ eos_token }}\n"
      "    {% endfor %}"
  )
  rendered = chat_template.render_chat_template(
      template,
      [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}],
      bos_token="<s>",
      eos_token="</s>",
  )
  assert rendered == "<s>[user] a</s>\n[assistant] b</s>\n"


def test_tojson_keeps_unicode():
  rendered = chat_template.render_chat_template(
      "{{ messages[0] | tojson }}",
      [{"role": "user", "content": "日本 <b>"}],
      bos_token=None,
      eos_token=None,
  )
  assert rendered == '{"role": "user", "content": "日本 <b>"}'


def test_raise_exception_reaches_caller():
  template = (
      "{% if messages[0].role != 'user' %}"
      "{{ raise_exception('first message must be from the user') }}"
      "{% endif %}"
  )
  with pytest.raises(chat_template.ChatTemplateError, match="first message must be from the user"):
    chat_template.render_chat_template(
        template, [{"role": "assistant", "content": "x"}], bos_token=None, eos_token=None
    )


def test_sandbox_blocks_attribute_access():
  template = "{{ messages.__class__.__mro__ }}"
  with pytest.raises(Exception, match="unsafe|access"):
    chat_template.render_chat_template(template, "hi", bos_token=None, eos_token=None)


def test_template_syntax_error_names_line():
  with pytest.raises(chat_template.ChatTemplateError, match="syntax error on line 2"):
    chat_template.render_chat_template("ok\n{% if %}", "hi", bos_token=None, eos_token=None)


@pytest.mark.parametrize(
    ("messages", "expected"),
    [
        ([], "Messages are empty"),
        ({"role": "user", "content": "x"}, "must be a list"),
        (["hello"], "Message 0 must be a dict"),
        ([{"role": "user"}], "Message 0 needs a string 'content'"),
        ([{"role": "user", "content": "x"}, {"content": "y"}], "Message 1 needs a string 'role'"),
    ],
)
def test_invalid_messages(messages, expected):
  with pytest.raises(chat_template.ChatTemplateError, match=expected):
    chat_template.normalize_messages(messages)


def test_prompt_length_fits_exactly():
  chat_template.check_prompt_length(100, 28, 128)


def test_prompt_length_too_many_new_tokens():
  with pytest.raises(chat_template.PromptTooLongError) as raised:
    chat_template.check_prompt_length(100, 29, 128)
  message = str(raised.value)
  assert "Prompt has 100 tokens" in message
  assert "needs 129 positions" in message
  assert "context length 128" in message
  assert "set max_new_tokens to at most 28" in message


def test_prompt_length_prompt_alone_too_long():
  with pytest.raises(
      chat_template.PromptTooLongError, match="shorten the prompt to at most 96 tokens"
  ):
    chat_template.check_prompt_length(200, 32, 128)


@pytest.mark.parametrize(("max_new_tokens", "context_length"), [(0, 128), (8, 0)])
def test_prompt_length_invalid_limits(max_new_tokens, context_length):
  with pytest.raises(ValueError, match="must be at least 1"):
    chat_template.check_prompt_length(10, max_new_tokens, context_length)
