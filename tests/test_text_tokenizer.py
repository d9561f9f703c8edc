"""Tokenizers built from GGUF metadata and tokenizer.json, on a small BPE vocabulary trained here.

The reference for each pre-tokenizer name is a `tokenizers.Tokenizer` with the same trained
vocabulary and merges, configured as the published tokenizer.json files of that model family
are. Those use GPT-2's built-in byte-level split, Qwen2's case-insensitive split expression, or
SmolLM's single digits before GPT-2's split. ec_jax builds its tokenizer from the GGUF metadata
alone, so equal ids check the metadata reading, the pre-tokenizer table and the added tokens.
"""

from __future__ import annotations

import json
import pathlib

import gguf
import pytest
import tokenizers
from tokenizers import decoders
from tokenizers import models
from tokenizers import pre_tokenizers as hf_pre_tokenizers
from tokenizers import processors
from tokenizers import trainers

from ec_jax import text
from ec_jax.text import chat_template
from ec_jax.text import pre_tokenizers

CORPUS = [
    "The quick brown fox jumps over the lazy dog. The dog sleeps.",
    "Natalia sold 48 clips in April and 24 clips in May: 48 + 24 = 72.",
    "I'm sure they'll say it's fine; we've seen 1234 and 5678 before.",
    "def add(a, b):\n    return a + b\n\nprint(add(12, 30))\n",
    "for i in range(10):\n        total += i * 2\n",
    "Café, naïve, déjà vu — 日本語 and Привет; arrows -> => <- ←→.",
    "    indented    text   with   runs     of      spaces\n\n\n",
    "The answer is \\boxed{42}. #### 42",
] * 3

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
USER_DEFINED_TOKEN = "<tool_call>"

TEST_TEXTS = [
    "",
    "The quick brown fox.",
    "48 + 24 = 72 and 1234567",
    "a  12 b   345",
    "I'm sure THEY'LL say it's fine",
    "def f(x):\n    return x**2\n\n\n",
    "tabs\tand\t\ttabs  \n  \t\n",
    "Café naïve 日本語 Привет ←→ 😀",
    "ate ¾ of 12",
    "<|im_start|>user\nhi<|im_end|>\n<|endoftext|>",
    "call <tool_call> now",
]

# Qwen2's split as its published tokenizer.json writes it (case-insensitive group).
QWEN2_HF_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)

# Llama 3's split as its published tokenizer.json writes it: numbers of at most three digits.
LLAMA3_HF_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)

CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
BOS_CHATML_TEMPLATE = "{{ bos_token }}" + CHATML_TEMPLATE


def _reference_pre_tokenizer(pre_name: str) -> hf_pre_tokenizers.PreTokenizer:
  if pre_name == "gpt-2":
    return hf_pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
  if pre_name == "qwen2":
    return hf_pre_tokenizers.Sequence(
        [
            hf_pre_tokenizers.Split(tokenizers.Regex(QWEN2_HF_PATTERN), behavior="isolated"),
            hf_pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
  if pre_name == "llama-bpe":
    return hf_pre_tokenizers.Sequence(
        [
            hf_pre_tokenizers.Split(tokenizers.Regex(LLAMA3_HF_PATTERN), behavior="isolated"),
            hf_pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
  if pre_name == "smollm":
    return hf_pre_tokenizers.Sequence(
        [
            hf_pre_tokenizers.Digits(individual_digits=True),
            hf_pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
        ]
    )
  raise ValueError(pre_name)


@pytest.fixture(scope="module")
def trained() -> tokenizers.Tokenizer:
  """Byte-level BPE tokenizer trained on CORPUS with GPT-2's split, plus a user-defined token."""
  tokenizer = tokenizers.Tokenizer(models.BPE())
  tokenizer.pre_tokenizer = hf_pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
  tokenizer.decoder = decoders.ByteLevel()
  trainer = trainers.BpeTrainer(
      vocab_size=420,
      special_tokens=SPECIAL_TOKENS,
      initial_alphabet=hf_pre_tokenizers.ByteLevel.alphabet(),
      show_progress=False,
  )
  tokenizer.train_from_iterator(CORPUS, trainer=trainer)
  tokenizer.add_tokens([tokenizers.AddedToken(USER_DEFINED_TOKEN, special=False, normalized=False)])
  return tokenizer


def _vocab_and_merges(tokenizer: tokenizers.Tokenizer) -> tuple[list[str], list[str]]:
  model = json.loads(tokenizer.to_str())["model"]
  by_id = {token_id: token for token, token_id in model["vocab"].items()}
  for added in tokenizer.get_added_tokens_decoder().items():
    by_id.setdefault(added[0], added[1].content)
  tokens = [by_id[i] for i in range(len(by_id))]
  merges = [m if isinstance(m, str) else " ".join(m) for m in model["merges"]]
  return tokens, merges


def _reference(trained_tokenizer: tokenizers.Tokenizer, pre_name: str) -> tokenizers.Tokenizer:
  config = json.loads(trained_tokenizer.to_str())
  # Llama 3's tokenizer.json takes a piece that is already a vocabulary token as it is.
  config["model"]["ignore_merges"] = pre_name == "llama-bpe"
  reference = tokenizers.Tokenizer.from_str(json.dumps(config))
  reference.pre_tokenizer = _reference_pre_tokenizer(pre_name)
  return reference


def write_tiny_gguf(
    path: pathlib.Path,
    trained_tokenizer: tokenizers.Tokenizer,
    *,
    pre: str,
    add_bos: bool = False,
    template: str | None = CHATML_TEMPLATE,
    context_length: int = 64,
) -> pathlib.Path:
  """Writes a GGUF file with only tokenizer metadata (no tensors)."""
  tokens, merges = _vocab_and_merges(trained_tokenizer)
  types = []
  for token in tokens:
    if token in SPECIAL_TOKENS:
      types.append(gguf.TokenType.CONTROL)
    elif token == USER_DEFINED_TOKEN:
      types.append(gguf.TokenType.USER_DEFINED)
    else:
      types.append(gguf.TokenType.NORMAL)
  writer = gguf.GGUFWriter(str(path), arch="llama")
  writer.add_context_length(context_length)
  writer.add_tokenizer_model("gpt2")
  writer.add_tokenizer_pre(pre)
  writer.add_token_list(tokens)
  writer.add_token_types(types)
  writer.add_token_merges(merges)
  writer.add_bos_token_id(tokens.index("<|endoftext|>"))
  writer.add_eos_token_id(tokens.index("<|im_end|>"))
  writer.add_add_bos_token(add_bos)
  if template is not None:
    writer.add_chat_template(template)
  writer.write_header_to_file()
  writer.write_kv_data_to_file()
  writer.write_tensors_to_file()
  writer.close()
  return path


@pytest.mark.parametrize("pre_name", ["gpt-2", "qwen2", "smollm", "llama-bpe"])
def test_gguf_ids_match_reference(trained, tmp_path, pre_name):
  path = write_tiny_gguf(tmp_path / f"{pre_name}.gguf", trained, pre=pre_name)
  tokenizer = text.load_tokenizer(path)
  reference = _reference(trained, pre_name)
  for sample in TEST_TEXTS:
    expected = reference.encode(sample, add_special_tokens=False).ids
    assert tokenizer.encode(sample) == expected, sample


@pytest.mark.parametrize("pre_name", ["gpt-2", "qwen2", "smollm"])
def test_gguf_round_trip(trained, tmp_path, pre_name):
  tokenizer = text.load_tokenizer(write_tiny_gguf(tmp_path / "t.gguf", trained, pre=pre_name))
  for sample in TEST_TEXTS:
    assert tokenizer.decode(tokenizer.encode(sample)) == sample


def test_pre_tokenizer_name_changes_ids(trained, tmp_path):
  ids = {}
  for pre_name in ["gpt-2", "qwen2", "smollm"]:
    tokenizer = text.load_tokenizer(
        write_tiny_gguf(tmp_path / f"{pre_name}.gguf", trained, pre=pre_name)
    )
    ids[pre_name] = tokenizer.encode("a  12 b   345")
  assert ids["gpt-2"] != ids["smollm"]
  assert ids["gpt-2"] != ids["qwen2"]
  digits = text.load_tokenizer(tmp_path / "qwen2.gguf")
  assert [digits.id_to_token(i) for i in digits.encode("1234")] == ["1", "2", "3", "4"]


def test_special_tokens_and_ids(trained, tmp_path):
  tokenizer = text.load_tokenizer(write_tiny_gguf(tmp_path / "t.gguf", trained, pre="qwen2"))
  im_start = tokenizer.token_to_id("<|im_start|>")
  im_end = tokenizer.token_to_id("<|im_end|>")
  tool_call = tokenizer.token_to_id(USER_DEFINED_TOKEN)
  assert tokenizer.encode("<|im_start|>") == [im_start]
  assert tokenizer.encode("x<|im_end|>y")[1] == im_end
  assert tool_call in tokenizer.encode("call <tool_call> now")
  assert tokenizer.bos_id == tokenizer.token_to_id("<|endoftext|>")
  assert tokenizer.eos_id == im_end
  assert tokenizer.context_length == 64
  assert tokenizer.vocab_size == len(_vocab_and_merges(trained)[0])


def test_decode_skips_control_not_user_tokens(trained, tmp_path):
  tokenizer = text.load_tokenizer(write_tiny_gguf(tmp_path / "t.gguf", trained, pre="qwen2"))
  ids = tokenizer.encode("<|im_start|>hi <tool_call><|im_end|>")
  assert tokenizer.decode(ids, skip_special_tokens=True) == "hi <tool_call>"
  assert tokenizer.decode(ids) == "<|im_start|>hi <tool_call><|im_end|>"


def test_decode_rejects_out_of_range_id(trained, tmp_path):
  tokenizer = text.load_tokenizer(write_tiny_gguf(tmp_path / "t.gguf", trained, pre="qwen2"))
  with pytest.raises(ValueError, match=f"Token id {tokenizer.vocab_size} is outside"):
    tokenizer.decode([1, tokenizer.vocab_size])


def test_stop_ids_include_end_of_text(trained, tmp_path):
  tokenizer = text.load_tokenizer(write_tiny_gguf(tmp_path / "t.gguf", trained, pre="qwen2"))
  expected = {tokenizer.token_to_id("<|im_end|>"), tokenizer.token_to_id("<|endoftext|>")}
  assert set(tokenizer.stop_ids) == expected
  assert list(tokenizer.stop_ids) == sorted(tokenizer.stop_ids)


def test_add_bos_from_metadata(trained, tmp_path):
  tokenizer = text.load_tokenizer(
      write_tiny_gguf(tmp_path / "t.gguf", trained, pre="qwen2", add_bos=True)
  )
  assert tokenizer.add_bos
  assert tokenizer.encode("hello")[0] == tokenizer.bos_id
  assert tokenizer.encode("hello", add_bos=False)[0] != tokenizer.bos_id
  assert tokenizer.encode("<|endoftext|>hello").count(tokenizer.bos_id) == 1


def test_prompt_has_one_bos(trained, tmp_path):
  messages = [{"role": "user", "content": "What is 48 + 24?"}]
  for template in [CHATML_TEMPLATE, BOS_CHATML_TEMPLATE]:
    path = write_tiny_gguf(
        tmp_path / "t.gguf", trained, pre="qwen2", add_bos=True, template=template
    )
    tokenizer = text.load_tokenizer(path)
    ids = tokenizer.encode_prompt(messages, max_new_tokens=8)
    assert ids[0] == tokenizer.bos_id
    assert ids.count(tokenizer.bos_id) == 1
    assert tokenizer.decode(ids[1:]).startswith("<|im_start|>user\nWhat is 48 + 24?<|im_end|>\n")
    assert tokenizer.decode(ids).endswith("<|im_start|>assistant\n")


def test_prompt_too_long(trained, tmp_path):
  tokenizer = text.load_tokenizer(
      write_tiny_gguf(tmp_path / "t.gguf", trained, pre="qwen2", context_length=64)
  )
  messages = "The dog sleeps. " * 4
  num_prompt_tokens = len(tokenizer.encode(tokenizer.render_chat(messages)))
  assert num_prompt_tokens < 64
  with pytest.raises(text.PromptTooLongError) as raised:
    tokenizer.encode_prompt(messages, max_new_tokens=64 - num_prompt_tokens + 1)
  message = str(raised.value)
  assert f"Prompt has {num_prompt_tokens} tokens" in message
  assert "context length 64" in message
  assert f"set max_new_tokens to at most {64 - num_prompt_tokens}" in message
  assert (
      len(tokenizer.encode_prompt(messages, max_new_tokens=64 - num_prompt_tokens))
      == num_prompt_tokens
  )


def test_no_chat_template_is_an_error(trained, tmp_path):
  tokenizer = text.load_tokenizer(
      write_tiny_gguf(tmp_path / "t.gguf", trained, pre="qwen2", template=None)
  )
  with pytest.raises(text.ChatTemplateError, match="has no chat template"):
    tokenizer.encode_prompt("hi", max_new_tokens=4)


def test_unknown_pre_tokenizer_is_named(trained, tmp_path):
  path = write_tiny_gguf(tmp_path / "t.gguf", trained, pre="my-new-model")
  with pytest.raises(text.UnknownPreTokenizerError, match="'my-new-model'"):
    text.load_tokenizer(path)


def test_non_bpe_gguf_is_an_error(trained):
  metadata = {"tokenizer.ggml.model": "llama", "tokenizer.ggml.tokens": ["a"]}
  with pytest.raises(text.TokenizerLoadError, match="only byte-level BPE"):
    text.from_gguf_metadata(metadata, source="spm.gguf")


def test_malformed_merge_is_an_error(trained):
  tokens, merges = _vocab_and_merges(trained)
  metadata = {
      "tokenizer.ggml.model": "gpt2",
      "tokenizer.ggml.pre": "qwen2",
      "tokenizer.ggml.tokens": tokens,
      "tokenizer.ggml.merges": [*merges[:3], "abc"],
  }
  with pytest.raises(text.TokenizerLoadError, match="Merge 3 of bad.gguf is 'abc'"):
    text.from_gguf_metadata(metadata, source="bad.gguf")


def test_pre_tokenizer_table_rules():
  assert pre_tokenizers.get_rule("smollm").patterns[0] == pre_tokenizers.SINGLE_DIGIT_PATTERN
  assert pre_tokenizers.get_rule("qwen2").patterns == (pre_tokenizers.QWEN2_PATTERN,)
  assert pre_tokenizers.get_rule("llama-bpe").ignore_merges
  assert not pre_tokenizers.get_rule("qwen2").ignore_merges


def _write_hf_folder(
    folder: pathlib.Path, trained_tokenizer, *, config_add_bos: bool | None
) -> pathlib.Path:
  folder.mkdir()
  backend = _reference(trained_tokenizer, "qwen2")
  bos_id = backend.token_to_id("<|endoftext|>")
  backend.post_processor = processors.TemplateProcessing(
      single="<|endoftext|> $A",
      pair="<|endoftext|> $A $B",
      special_tokens=[("<|endoftext|>", bos_id)],
  )
  backend.save(str(folder / "tokenizer.json"))
  tokenizer_config = {"bos_token": "<|endoftext|>", "eos_token": {"content": "<|im_end|>"}}
  if config_add_bos is not None:
    tokenizer_config["add_bos_token"] = config_add_bos
  (folder / "tokenizer_config.json").write_text(json.dumps(tokenizer_config))
  (folder / "chat_template.jinja").write_text(CHATML_TEMPLATE)
  (folder / "config.json").write_text(
      json.dumps({"max_position_embeddings": 128, "eos_token_id": 1})
  )
  (folder / "generation_config.json").write_text(json.dumps({"eos_token_id": [2, 1]}))
  return folder


def test_hf_folder_tokenizer(trained, tmp_path):
  folder = _write_hf_folder(tmp_path / "checkpoint", trained, config_add_bos=False)
  tokenizer = text.load_tokenizer(folder)
  reference = _reference(trained, "qwen2")
  for sample in TEST_TEXTS:
    assert tokenizer.encode(sample) == reference.encode(sample, add_special_tokens=False).ids
  im_end = tokenizer.token_to_id("<|im_end|>")
  assert tokenizer.eos_id == im_end
  assert set(tokenizer.stop_ids) == {im_end, 1, 2, tokenizer.token_to_id("<|endoftext|>")}
  assert tokenizer.context_length == 128
  assert not tokenizer.add_bos
  assert tokenizer.render_chat("hi") == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"


def test_hf_folder_add_bos_from_post_processor(trained, tmp_path):
  folder = _write_hf_folder(tmp_path / "checkpoint", trained, config_add_bos=None)
  tokenizer = text.load_tokenizer(folder / "tokenizer.json")
  assert tokenizer.add_bos
  ids = tokenizer.encode_prompt("hi", max_new_tokens=4)
  assert ids.count(tokenizer.bos_id) == 1
  assert ids[0] == tokenizer.bos_id


def test_missing_tokenizer_path_is_named(tmp_path):
  with pytest.raises(FileNotFoundError, match="nothing-here.gguf"):
    text.load_tokenizer(tmp_path / "nothing-here.gguf")


def test_stop_token_ids_function():
  vocab = {"<|im_end|>": 7, "<|endoftext|>": 3, "<|eot_id|>": 9}
  template = "{{ '<|im_start|>' + m + '<|im_end|>' }}"
  assert chat_template.stop_token_ids([5], template, vocab.get) == (3, 5, 7)
  assert chat_template.stop_token_ids([5], None, {}.get) == (5,)


SAVED_ATTRIBUTES = ("bos_id", "eos_ids", "eos_id", "add_bos", "stop_ids", "chat_template",
                    "context_length", "vocab_size")


def _assert_same_tokenizer(tokenizer: text.Tokenizer, expected: text.Tokenizer) -> None:
  for attribute in SAVED_ATTRIBUTES:
    assert getattr(tokenizer, attribute) == getattr(expected, attribute), attribute
  for sample in TEST_TEXTS:
    ids = expected.encode(sample)
    assert tokenizer.encode(sample) == ids, sample
    assert tokenizer.decode(ids, skip_special_tokens=True) == expected.decode(
        ids, skip_special_tokens=True), sample
  assert tokenizer.encode_prompt("hi", max_new_tokens=4) == expected.encode_prompt(
      "hi", max_new_tokens=4)


@pytest.mark.parametrize("pre_name", ["gpt-2", "qwen2", "smollm", "llama-bpe"])
def test_saved_gguf_tokenizer_round_trip(trained, tmp_path, pre_name):
  expected = text.load_tokenizer(
      write_tiny_gguf(tmp_path / "t.gguf", trained, pre=pre_name, add_bos=True))
  folder = tmp_path / "saved"
  folder.mkdir()
  text.save_tokenizer(expected, folder)

  assert text.has_saved_tokenizer(folder)
  tokenizer = text.load_tokenizer(folder)
  assert tokenizer.source == str(folder)
  _assert_same_tokenizer(tokenizer, expected)


def test_saved_hf_tokenizer_round_trip(trained, tmp_path):
  expected = text.load_tokenizer(
      _write_hf_folder(tmp_path / "checkpoint", trained, config_add_bos=None))
  folder = tmp_path / "saved"
  folder.mkdir()
  text.save_tokenizer(expected, folder)
  # The checkpoint's configs add EOS id 1 to <|im_end|>, so the saved list has two entries.
  assert expected.eos_ids == (expected.token_to_id("<|im_end|>"), 1)
  _assert_same_tokenizer(text.from_saved_folder(folder), expected)


def test_save_tokenizer_keeps_existing_files(trained, tmp_path):
  tokenizer = text.load_tokenizer(write_tiny_gguf(tmp_path / "t.gguf", trained, pre="qwen2"))
  text.save_tokenizer(tokenizer, tmp_path)
  with pytest.raises(FileExistsError, match="tokenizer.json already exists"):
    text.save_tokenizer(tokenizer, tmp_path)


@pytest.mark.parametrize("change,message", [
    ({"format_version": 2}, "has format_version 2; this ec_jax reads version 1"),
    ({"eos_ids": "3"}, "eos_ids in .* must be a list of integers"),
    ({"bos_id": 1.5}, "bos_id in .* must be an integer or null, got 1.5"),
    ({"add_bos": "yes"}, "add_bos in .* must be true or false"),
    ({"chat_template": 3}, "chat_template in .* must be a string or null"),
    ({"context_length": None, "drop": "chat_template"}, r"lacks the fields \['chat_template'\]"),
])
def test_invalid_saved_settings_are_rejected(trained, tmp_path, change, message):
  tokenizer = text.load_tokenizer(write_tiny_gguf(tmp_path / "t.gguf", trained, pre="qwen2"))
  folder = tmp_path / "saved"
  folder.mkdir()
  text.save_tokenizer(tokenizer, folder)
  settings_path = folder / "tokenizer_settings.json"
  settings = json.loads(settings_path.read_text())
  change = dict(change)
  settings.pop(change.pop("drop", None), None)
  settings.update(change)
  settings_path.write_text(json.dumps(settings))

  with pytest.raises(text.TokenizerLoadError, match=message):
    text.from_saved_folder(folder)


def test_saved_folder_needs_both_files(trained, tmp_path):
  tokenizer = text.load_tokenizer(write_tiny_gguf(tmp_path / "t.gguf", trained, pre="qwen2"))
  folder = tmp_path / "saved"
  folder.mkdir()
  text.save_tokenizer(tokenizer, folder)
  (folder / "tokenizer.json").unlink()
  assert not text.has_saved_tokenizer(folder)
  with pytest.raises(FileNotFoundError, match="tokenizer.json does not exist"):
    text.from_saved_folder(folder)
