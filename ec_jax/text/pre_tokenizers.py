"""Pre-tokenizer rules of byte-level BPE vocabularies, keyed by the GGUF `tokenizer.ggml.pre` name.

A GGUF file of a `gpt2`-type (byte-level BPE) vocabulary names its pre-tokenizer in
`tokenizer.ggml.pre`. llama.cpp (src/llama-vocab.cpp, read 2026) maps each name to a list of
regular expressions that split the text before BPE: each expression splits every piece produced
by the previous one, and the text between matches stays a piece of its own. The table below
restates those definitions for the names this project supports. Any other name is an error
rather than a guess, because a wrong split silently changes token ids.

Decoding is plain byte-level. llama.cpp's optional clean-up of spaces before punctuation on
detokenization (`clean_spaces`) is not applied.
"""

from __future__ import annotations

import dataclasses

import tokenizers
from tokenizers import pre_tokenizers

# GPT-2's split: English contractions, letter runs, number runs and other-symbol runs, each with
# an optional leading space, and whitespace runs not followed by a non-space.
GPT2_PATTERN = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)"

# Llama 3's split: case-insensitive contractions, letter runs with one optional leading non-letter,
# numbers of at most 3 digits, symbol runs with trailing newlines, and newline-ending whitespace.
LLAMA3_PATTERN = (
    r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])"
    r"|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)

# Qwen2's split: Llama 3's, except that every digit is a piece of its own.
QWEN2_PATTERN = (
    r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])"
    r"|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)

SINGLE_DIGIT_PATTERN = r"\p{N}"


@dataclasses.dataclass(frozen=True)
class PreTokenizerRule:
  """Split rule of one `tokenizer.ggml.pre` name, applied before byte-level BPE.

  Attributes:
    patterns: regular expressions applied in order; each splits the pieces of the previous one.
    ignore_merges: whether a piece that is itself a vocabulary token skips the BPE merges.
    add_bos: llama.cpp's default for adding BOS when the GGUF file has no
      `tokenizer.ggml.add_bos_token`.
  """

  patterns: tuple[str, ...]
  ignore_merges: bool = False
  add_bos: bool = False


_GPT2 = PreTokenizerRule(patterns=(GPT2_PATTERN,))
_DIGITS_THEN_GPT2 = PreTokenizerRule(patterns=(SINGLE_DIGIT_PATTERN, GPT2_PATTERN))
_QWEN2 = PreTokenizerRule(patterns=(QWEN2_PATTERN,))
_LLAMA3 = PreTokenizerRule(patterns=(LLAMA3_PATTERN,), ignore_merges=True, add_bos=True)

PRE_TOKENIZER_RULES: dict[str, PreTokenizerRule] = {
    # GPT-2 family.
    "gpt-2": _GPT2,
    "phi-2": _GPT2,
    "mpt": _GPT2,
    "olmo": _GPT2,
    "jais": _GPT2,
    # Single digits first, then GPT-2's split.
    "smollm": _DIGITS_THEN_GPT2,
    "starcoder": _DIGITS_THEN_GPT2,
    "refact": _DIGITS_THEN_GPT2,
    "command-r": _DIGITS_THEN_GPT2,
    "codeshell": _DIGITS_THEN_GPT2,
    "exaone": _DIGITS_THEN_GPT2,
    "minerva-7b": _DIGITS_THEN_GPT2,
    # Qwen2 family.
    "qwen2": _QWEN2,
    "deepseek-r1-qwen": _QWEN2,
    "stablelm2": _QWEN2,
    "megrez": _QWEN2,
    # Llama 3 family; dbrx and smaug-bpe share the expression but not the merge and BOS settings.
    "llama3": _LLAMA3,
    "llama-v3": _LLAMA3,
    "llama-bpe": _LLAMA3,
    "falcon3": _LLAMA3,
    "dbrx": PreTokenizerRule(patterns=(LLAMA3_PATTERN,)),
    "smaug-bpe": PreTokenizerRule(patterns=(LLAMA3_PATTERN,)),
}


class UnknownPreTokenizerError(ValueError):
  """A `tokenizer.ggml.pre` name that is not in `PRE_TOKENIZER_RULES`."""


def get_rule(name: str) -> PreTokenizerRule:
  """Returns the rule for a `tokenizer.ggml.pre` name.

  Raises:
    UnknownPreTokenizerError: the name is not in the table.
  """
  try:
    return PRE_TOKENIZER_RULES[name]
  except KeyError:
    raise UnknownPreTokenizerError(
        f"Unknown GGUF pre-tokenizer {name!r} (tokenizer.ggml.pre). Supported: "
        f"{', '.join(sorted(PRE_TOKENIZER_RULES))}. Add its regular expressions to "
        "ec_jax/text/pre_tokenizers.py, or load the model's tokenizer.json instead."
    ) from None


def build_pre_tokenizer(rule: PreTokenizerRule) -> pre_tokenizers.PreTokenizer:
  """Builds the `tokenizers` pre-tokenizer: the rule's splits, then the byte-to-unicode mapping."""
  steps: list[pre_tokenizers.PreTokenizer] = [
      pre_tokenizers.Split(tokenizers.Regex(pattern), behavior="isolated")
      for pattern in rule.patterns
  ]
  steps.append(
      pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False)
  )
  return pre_tokenizers.Sequence(steps)
