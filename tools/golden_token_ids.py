"""Writes tests/data/text/golden_token_ids.json: token ids of the embedded models by transformers.

The golden ids come from Hugging Face transformers' own GGUF tokenizer conversion
(`AutoTokenizer.from_pretrained(folder, gguf_file=...)`), an implementation independent of
ec_jax.text, so the tests that compare against them check ec_jax's GGUF tokenizer on real files.
The file also contains the chat prompt that transformers renders with `apply_chat_template` and
its ids.

One correction is applied to transformers' conversion: for the `smollm` pre-tokenizer it
builds GPT-2's byte-level split without the single-digit split that both llama.cpp (`smollm`)
and the published SmolLM2 tokenizer.json (HuggingFaceTB/SmolLM2-135M: `Digits` with
`individual_digits`, then `ByteLevel`) apply first. Without it, transformers 5.25 gives other ids
for text such as "and  2/5" or " ¾" (59 of 5,780 math and code texts differed). The script
therefore sets the published pre-tokenizer on the converted tokenizer and records that in the
output.

Needs transformers and torch (requirements-bench.txt) besides requirements.txt, and both
embedded models installed (`python -m ec_jax.weights install NAME`). Run from the repository
root:

  python -m tools.golden_token_ids [--model_path NAME=PATH ...] [--output FILE]
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys
from collections.abc import Sequence

# Digits, arrows, code, Unicode, whitespace runs, contractions and special-token text.
TEXTS = [
    "",
    "Hello, world!",
    "12345678901234567890",
    "3.14159 and 2.71828; 1,000,000 or 1e-9",
    "x = 42 + 17 * 3 - 8 / 2",
    "#### 72",
    "The answer is \\boxed{42}.",
    "a -> b => c <- d <=> e",
    "← → ↑ ↓ ⟶ ⇒ ↦",
    "def f(x):\n    return x**2 + 1\n",
    "for (int i = 0; i < n; ++i) {\n\tsum += a[i];\n}",
    "import numpy as np\nprint(np.arange(10)[::-1])",
    "if a != b and c >= d: pass  # comment",
    "Café déjà vu, naïve façade",
    "日本語のテキストです。",
    "Привет, мир!",
    "emoji 😀🎉👍🏽 and ZWJ 👨‍👩‍👧",
    "∑_{i=1}^n i² = n(n+1)/2",
    "\\frac{1}{2} + \\sqrt{x^2 + y^2}",
    "   leading spaces",
    "trailing spaces   ",
    "a  b   c    d     e",
    "tabs\tand\t\ttabs",
    "\n\n\nnewlines\n\n",
    "\r\nwindows\r\nline endings\r\n",
    "  \n  \t \n",
    "I'm sure you'll see we've done it; they're here, she'd say. IT'S OK",
    "<|im_start|>user\nhi<|im_end|>\n",
    "<|endoftext|>text after",
    "mixed ÅΩ≈ç√∫ text",
    "She wrote 3 articles on Monday and  2/5 as many on Tuesday.",
    "There are 220 castles.  40 percent are ruins; friends ate ¾ of 12.",
]

CONVERSATIONS = [
    [
        {
            "role": "user",
            "content": "Natalia sold clips to 48 of her friends in April. How many in May?",
        }
    ],
    [
        {
            "role": "system",
            "content": "Reason step by step, and put the final answer in \\boxed{}.",
        },
        {"role": "user", "content": "What is 7 * 8?"},
    ],
    [
        {"role": "user", "content": "Write a Python function that adds two numbers."},
        {"role": "assistant", "content": "def add(a, b):\n    return a + b"},
        {"role": "user", "content": "Now  with   type hints, please."},
    ],
]

MODEL_NAMES = ("smollm2-135m-instruct", "qwen2.5-coder-0.5b-instruct")
DEFAULT_OUTPUT = pathlib.Path("tests/data/text/golden_token_ids.json")


def _published_pre_tokenizer(gguf_path: pathlib.Path):
  """Returns the published tokenizer.json pre-tokenizer where transformers' conversion differs."""
  import gguf  # pylint: disable=g-import-not-at-top
  from tokenizers import pre_tokenizers  # pylint: disable=g-import-not-at-top

  pre = gguf.GGUFReader(str(gguf_path)).fields["tokenizer.ggml.pre"].contents()
  if pre == "smollm":
    return pre_tokenizers.Sequence(
        [
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=True),
        ]
    )
  return None


def _golden_for_file(gguf_path: pathlib.Path) -> dict:
  import transformers  # pylint: disable=g-import-not-at-top

  tokenizer = transformers.AutoTokenizer.from_pretrained(
      str(gguf_path.parent), gguf_file=gguf_path.name
  )
  notes = []
  published = _published_pre_tokenizer(gguf_path)
  if published is not None:
    tokenizer.backend_tokenizer.pre_tokenizer = published
    notes.append("pre-tokenizer replaced by the published Digits(individual_digits) + ByteLevel")
  cases = [
      {"text": text, "ids": tokenizer.encode(text, add_special_tokens=False)} for text in TEXTS
  ]
  chats = []
  for messages in CONVERSATIONS:
    prompt_text = tokenizer.apply_chat_template(
        messages, add_generation_prompt=True, tokenize=False
    )
    prompt_ids = tokenizer.encode(prompt_text, add_special_tokens=False)
    chats.append({"messages": messages, "prompt_text": prompt_text, "prompt_ids": prompt_ids})
  return {
      "file": gguf_path.name,
      "transformers_version": transformers.__version__,
      "notes": notes,
      "cases": cases,
      "chat_template": tokenizer.chat_template,
      "chats": chats,
  }


def _parse_model_paths(values: Sequence[str]) -> dict[str, pathlib.Path]:
  paths = {}
  for value in values:
    name, sep, path = value.partition("=")
    if not sep or name not in MODEL_NAMES:
      raise SystemExit(f"--model_path must be NAME=PATH with NAME in {MODEL_NAMES}, got {value!r}")
    paths[name] = pathlib.Path(path)
  return paths


def main(argv: Sequence[str]) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument(
      "--model_path",
      action="append",
      default=[],
      help="NAME=PATH of a GGUF file; default: the installed embedded model",
  )
  parser.add_argument(
      "--output", type=pathlib.Path, default=DEFAULT_OUTPUT, help="JSON file to write"
  )
  args = parser.parse_args(argv)

  paths = _parse_model_paths(args.model_path)
  for name in MODEL_NAMES:
    if name not in paths:
      from ec_jax.weights import embedded  # pylint: disable=g-import-not-at-top

      paths[name] = embedded.require_installed(name)

  golden = {name: _golden_for_file(paths[name]) for name in MODEL_NAMES}
  args.output.parent.mkdir(parents=True, exist_ok=True)
  for name, entry in golden.items():
    # The templates are also test data of their own, for the tests that need no installed model.
    template_path = args.output.parent / f"{name}.chat_template.jinja"
    template_path.write_text(entry.pop("chat_template"), encoding="utf-8")
    print(f"Wrote {template_path}")
  args.output.write_text(json.dumps(golden, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
  print(f"Wrote {args.output}")
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
