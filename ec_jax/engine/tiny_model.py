"""Tiny random decoders with a byte-level tokenizer, for tests and smoke runs of the main job.

The model spec `tiny:<preset>` (`tiny:llama`, `tiny:qwen2`) needs no file. It builds a 2-layer
decoder of the `ec_jax.model` preset `tiny_<preset>` with seeded random weights (in
`model_loading`), and a byte-level tokenizer. The tokenizer's ids 0 to 255 are the bytes and its
ids 256 to 258 are the ChatML special tokens. The model's vocabulary is resized to the
tokenizer's, so every sampled id decodes. Its answers are random bytes: the job's plumbing is real, its accuracies are not.
"""

from __future__ import annotations

import tokenizers
from tokenizers import decoders
from tokenizers import models
from tokenizers import pre_tokenizers

from ec_jax.model import config as model_config_lib
from ec_jax.text import tokenizer as tokenizer_lib

PREFIX = "tiny:"
PRESETS = ("llama", "qwen2")
# Long enough for a chat prompt of a few hundred bytes plus the new tokens.
CONTEXT_LENGTH = 2048
WEIGHT_SEED = 0

END_OF_TEXT = "<|endoftext|>"
TURN_START = "<|im_start|>"
TURN_END = "<|im_end|>"
SPECIAL_TOKENS = (END_OF_TEXT, TURN_START, TURN_END)
CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


def is_tiny_spec(spec: str) -> bool:
  """Return whether a `model` value names a tiny random model (`tiny:<preset>`)."""
  return isinstance(spec, str) and spec.startswith(PREFIX)


def preset_name(spec: str) -> str:
  """Return the preset of a `tiny:<preset>` spec.

  Raises:
    ValueError: the preset is not one of PRESETS.
  """
  preset = spec[len(PREFIX):]
  if preset not in PRESETS:
    raise ValueError(
        f"Unknown tiny model {spec!r}; use one of "
        f"{', '.join(PREFIX + name for name in PRESETS)}.")
  return preset


def byte_to_character() -> dict[int, str]:
  """Return the byte-level BPE alphabet: each byte's printable stand-in character.

  Printable Latin-1 bytes stand for themselves; the other bytes take the characters from
  U+0100 upwards, in byte order. This is the alphabet `pre_tokenizers.ByteLevel` maps bytes to.
  """
  printable = [*range(ord("!"), ord("~") + 1), *range(0xA1, 0xAC + 1), *range(0xAE, 0xFF + 1)]
  mapping = {byte: chr(byte) for byte in printable}
  extra = 0
  for byte in range(256):
    if byte not in mapping:
      mapping[byte] = chr(256 + extra)
      extra += 1
  return mapping


def byte_tokenizer(context_length: int = CONTEXT_LENGTH) -> tokenizer_lib.Tokenizer:
  """Build the byte-level ChatML tokenizer: id b < 256 is byte b, then SPECIAL_TOKENS.

  The stop set is `<|im_end|>` (the EOS id) and `<|endoftext|>`.
  """
  alphabet = byte_to_character()
  vocab = {alphabet[byte]: byte for byte in range(256)}
  backend = tokenizers.Tokenizer(models.BPE(vocab=vocab, merges=[]))
  backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
  backend.decoder = decoders.ByteLevel()
  backend.add_special_tokens(list(SPECIAL_TOKENS))
  for offset, token in enumerate(SPECIAL_TOKENS):
    if backend.token_to_id(token) != 256 + offset:
      raise RuntimeError(f"Special token {token} got id {backend.token_to_id(token)}, "
                         f"expected {256 + offset}.")
  return tokenizer_lib.Tokenizer(
      backend, bos_id=None, eos_ids=[backend.token_to_id(TURN_END)], add_bos=False,
      chat_template=CHATML_TEMPLATE, context_length=context_length, source="tiny byte tokenizer")


def tiny_model_config(spec: str, dtype: str = "float32",
                      context_length: int = CONTEXT_LENGTH) -> model_config_lib.ModelConfig:
  """Return the model config of a tiny spec, sized to the byte tokenizer's vocabulary."""
  preset = model_config_lib.PRESETS["tiny_" + preset_name(spec)]
  vocab_size = 256 + len(SPECIAL_TOKENS)
  return preset(vocab_size=vocab_size, max_position=context_length).with_dtypes(dtype)

