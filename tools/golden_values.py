"""Writes tests/data/golden/<model>.json: next-token log-probs and greedy tokens by transformers.

The values come from Hugging Face transformers' own Llama and Qwen2 models loaded from the same
GGUF files as ec_jax (`AutoModelForCausalLM.from_pretrained(folder, gguf_file=...)`, float32 on
CPU), an implementation independent of ec_jax.model. For each embedded model the file contains:

- `next_token`: for two prompts (raw text and a chat prompt), the prompt ids and the 50 most
  likely next tokens in descending order with their log-probabilities. The 51st log-probability
  is stored too, so a test can tell whether the top-50 set is unambiguous at its boundary.
- `greedy`: the greedy continuation of a chat prompt, token by token with each chosen token's
  log-probability and its logit margin over the runner-up, stopping after a stop token or
  `max_new_tokens`.
- `weights_check`: the largest difference between transformers' float32 parameters and the
  `gguf` package's dequantization of the same tensors.

What is independent and what is not: transformers 5.25 dequantizes GGUF tensors with the same
`gguf.dequantize` routine that ec_jax uses. `weights_check` confirms that the values agree
exactly, up to the row order of Llama query and key weights, which each program restores on its
own. The golden values therefore check ec_jax's config parsing, the Llama query/key row order, RoPE,
attention, normalization and the vocabulary projection, not the dequantization itself.

Prompt ids come from transformers' GGUF tokenizer. For SmolLM2, its pre-tokenizer is replaced
by the published one, as `tools/golden_token_ids.py` explains, so ids match ec_jax.text.

Needs transformers, accelerate and torch (requirements-bench.txt) besides requirements.txt, and
both embedded models installed (`python -m ec_jax.weights install NAME`). Run from the
repository root (about 3 minutes on 2 CPU cores):

  python -m tools.golden_values [--model_path NAME=PATH ...] [--output_dir DIR]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import pathlib
import re
import sys
from collections.abc import Sequence
from typing import Any

TOP_K = 50
DEFAULT_OUTPUT_DIR = pathlib.Path("tests/data/golden")
END_OF_TURN_TOKENS = ("<|im_end|>", "<|endoftext|>")


@dataclasses.dataclass(frozen=True)
class ModelCase:
  """Prompts of one embedded model.

  Attributes:
    raw_text: a plain-text prompt, encoded without special tokens.
    chat: user message of the chat prompt (rendered with the model's chat template); used for
      the second next-token prompt and for the greedy continuation.
    greedy_tokens: maximum new tokens of the greedy continuation.
  """

  raw_text: str
  chat: str
  greedy_tokens: int


MODEL_CASES = {
    "smollm2-135m-instruct": ModelCase(
        raw_text="The three primary colors of light are red, green and",
        chat="Explain in two sentences why the sky is blue.",
        greedy_tokens=16,
    ),
    "qwen2.5-coder-0.5b-instruct": ModelCase(
        raw_text='def fibonacci(n):\n    """Return the n-th Fibonacci number."""\n',
        chat="What is 2+3?",
        greedy_tokens=32,
    ),
}

# GGUF tensor name (after "blk.N." inside blocks) -> transformers parameter name.
_GLOBAL_NAMES = {
    "token_embd.weight": "model.embed_tokens.weight",
    "output_norm.weight": "model.norm.weight",
    "output.weight": "lm_head.weight",
}
_BLOCK_NAMES = {
    "attn_norm.weight": "input_layernorm.weight",
    "attn_q.weight": "self_attn.q_proj.weight",
    "attn_k.weight": "self_attn.k_proj.weight",
    "attn_v.weight": "self_attn.v_proj.weight",
    "attn_output.weight": "self_attn.o_proj.weight",
    "attn_q.bias": "self_attn.q_proj.bias",
    "attn_k.bias": "self_attn.k_proj.bias",
    "attn_v.bias": "self_attn.v_proj.bias",
    "ffn_norm.weight": "post_attention_layernorm.weight",
    "ffn_gate.weight": "mlp.gate_proj.weight",
    "ffn_up.weight": "mlp.up_proj.weight",
    "ffn_down.weight": "mlp.down_proj.weight",
}
# Tensors whose rows transformers reorders for Llama files (RoPE pairs); compared as sorted values.
_ROW_PERMUTED = ("attn_q.weight", "attn_k.weight")


def hf_parameter_name(gguf_name: str) -> str:
  """Maps a GGUF tensor name to the transformers parameter name of a Llama or Qwen2 model."""
  if gguf_name in _GLOBAL_NAMES:
    return _GLOBAL_NAMES[gguf_name]
  match = re.fullmatch(r"blk\.(\d+)\.(.+)", gguf_name)
  if match is None or match.group(2) not in _BLOCK_NAMES:
    raise ValueError(f"GGUF tensor {gguf_name!r} has no known transformers parameter name.")
  return f"model.layers.{match.group(1)}.{_BLOCK_NAMES[match.group(2)]}"


def check_weights(model: Any, gguf_path: pathlib.Path) -> dict:
  """Compares transformers' parameters with `gguf.dequantize` of every tensor in the file.

  Returns:
    The number of tensors compared, the largest absolute difference, and the tensor types.
  """
  import gguf  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top

  state = model.state_dict()
  reader = gguf.GGUFReader(str(gguf_path))
  max_diff = 0.0
  types = set()
  for tensor in reader.tensors:
    expected = np.asarray(gguf.dequantize(tensor.data, tensor.tensor_type), np.float32)
    actual = state[hf_parameter_name(tensor.name)].detach().numpy()
    shape = tuple(int(size) for size in reversed(tensor.shape.tolist()))
    expected = expected.reshape(shape)
    if actual.shape != shape:
      raise ValueError(
          f"GGUF tensor {tensor.name!r} has shape {shape}, but transformers' parameter has shape "
          f"{actual.shape}; the file and the transformers model do not match.")
    if tensor.name.endswith(_ROW_PERMUTED):
      expected, actual = np.sort(expected, axis=None), np.sort(actual, axis=None)
    max_diff = max(max_diff, float(np.max(np.abs(expected - actual))))
    types.add(tensor.tensor_type.name)
  return {"tensors": len(reader.tensors), "max_abs_diff": max_diff, "types": sorted(types)}


def _load_tokenizer(gguf_path: pathlib.Path) -> Any:
  import transformers  # pylint: disable=g-import-not-at-top

  from tools import golden_token_ids  # pylint: disable=g-import-not-at-top

  tokenizer = transformers.AutoTokenizer.from_pretrained(
      str(gguf_path.parent), gguf_file=gguf_path.name
  )
  # NOTE: reuses the other golden tool's correction, so both golden files tokenize alike.
  published = golden_token_ids._published_pre_tokenizer(gguf_path)  # pylint: disable=protected-access
  if published is not None:
    tokenizer.backend_tokenizer.pre_tokenizer = published
  return tokenizer


def _stop_ids(tokenizer: Any) -> list[int]:
  """Returns the EOS id plus the end-of-turn and end-of-text ids that the vocabulary has."""
  stop = {int(tokenizer.eos_token_id)}
  vocab = tokenizer.get_vocab()
  for token in END_OF_TURN_TOKENS:
    if token in vocab:
      stop.add(int(vocab[token]))
  return sorted(stop)


def _next_token_entry(model: Any, kind: str, text: str, prompt_ids: list[int]) -> dict:
  import torch  # pylint: disable=g-import-not-at-top

  with torch.no_grad():
    logits = model(torch.tensor([prompt_ids])).logits[0, -1]
  logprobs = torch.log_softmax(logits.double(), dim=-1)
  values, ids = torch.topk(logprobs, TOP_K + 1)
  return {
      "kind": kind,
      "prompt_text": text,
      "prompt_ids": prompt_ids,
      "top_ids": ids[:TOP_K].tolist(),
      "top_logprobs": values[:TOP_K].tolist(),
      "next_logprob": float(values[TOP_K]),
  }


def _greedy_entry(model: Any, tokenizer: Any, prompt_ids: list[int], max_new_tokens: int,
                  stop_ids: list[int]) -> dict:
  """Decodes greedily with one full forward pass per step, recording log-probs and margins."""
  import torch  # pylint: disable=g-import-not-at-top

  sequence = list(prompt_ids)
  tokens, logprobs, margins = [], [], []
  with torch.no_grad():
    for _ in range(max_new_tokens):
      logits = model(torch.tensor([sequence])).logits[0, -1]
      top = torch.topk(logits, 2)
      token = int(top.indices[0])
      tokens.append(token)
      logprobs.append(float(torch.log_softmax(logits.double(), dim=-1)[token]))
      margins.append(float(top.values[0] - top.values[1]))
      sequence.append(token)
      if token in stop_ids:
        break
    # transformers' own greedy search with its KV cache must pick the same tokens.
    generated = model.generate(
        torch.tensor([prompt_ids]), attention_mask=torch.ones(1, len(prompt_ids), dtype=torch.long),
        do_sample=False, max_new_tokens=max_new_tokens, eos_token_id=stop_ids,
        pad_token_id=stop_ids[0],
    )[0, len(prompt_ids):].tolist()
  if generated != tokens:
    raise RuntimeError(
        f"transformers' generate() returned {generated}, but one forward pass per step chose "
        f"{tokens}; the golden greedy tokens are inconsistent."
    )
  return {
      "prompt_ids": prompt_ids,
      "max_new_tokens": max_new_tokens,
      "stop_ids": stop_ids,
      "token_ids": tokens,
      "logprobs": logprobs,
      "margins": margins,
      "stopped": tokens[-1] in stop_ids,
      "text": tokenizer.decode(tokens, skip_special_tokens=True),
  }


def golden_for_model(name: str, gguf_path: pathlib.Path) -> dict:
  """Computes the golden values of one embedded model from its GGUF file."""
  import torch  # pylint: disable=g-import-not-at-top
  import transformers  # pylint: disable=g-import-not-at-top

  case = MODEL_CASES[name]
  model = transformers.AutoModelForCausalLM.from_pretrained(
      str(gguf_path.parent), gguf_file=gguf_path.name, dtype=torch.float32
  )
  model.eval()
  tokenizer = _load_tokenizer(gguf_path)
  messages = [{"role": "user", "content": case.chat}]
  chat_text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
  chat_ids = tokenizer.encode(chat_text, add_special_tokens=False)
  raw_ids = tokenizer.encode(case.raw_text, add_special_tokens=False)
  stop_ids = _stop_ids(tokenizer)
  greedy = _greedy_entry(model, tokenizer, chat_ids, case.greedy_tokens, stop_ids)
  greedy["messages"] = messages
  return {
      "model": name,
      "file": gguf_path.name,
      "versions": {
          "transformers": transformers.__version__,
          "torch": torch.__version__,
          "gguf": _version("gguf"),
      },
      "dtype": "float32",
      "weights_check": check_weights(model, gguf_path),
      "next_token": [
          _next_token_entry(model, "raw", case.raw_text, raw_ids),
          _next_token_entry(model, "chat", chat_text, chat_ids),
      ],
      "greedy": greedy,
  }


def _version(distribution: str) -> str:
  import importlib.metadata  # pylint: disable=g-import-not-at-top

  return importlib.metadata.version(distribution)


def _parse_model_paths(values: Sequence[str]) -> dict[str, pathlib.Path]:
  paths = {}
  for value in values:
    name, sep, path = value.partition("=")
    if not sep or name not in MODEL_CASES:
      raise SystemExit(
          f"--model_path must be NAME=PATH with NAME in {sorted(MODEL_CASES)}, got {value!r}."
      )
    paths[name] = pathlib.Path(path)
  return paths


def main(argv: Sequence[str]) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument(
      "--model_path", action="append", default=[],
      help="NAME=PATH of a GGUF file; default: the installed embedded model",
  )
  parser.add_argument(
      "--models", nargs="+", choices=sorted(MODEL_CASES), default=sorted(MODEL_CASES),
      help="embedded models to compute golden values for (default: all)",
  )
  parser.add_argument(
      "--output_dir", type=pathlib.Path, default=DEFAULT_OUTPUT_DIR,
      help="folder for the <model>.json files",
  )
  args = parser.parse_args(argv)

  paths = _parse_model_paths(args.model_path)
  args.output_dir.mkdir(parents=True, exist_ok=True)
  for name in args.models:
    if name not in paths:
      from ec_jax.weights import embedded  # pylint: disable=g-import-not-at-top

      paths[name] = embedded.require_installed(name)
    golden = golden_for_model(name, paths[name])
    output = args.output_dir / f"{name}.json"
    output.write_text(json.dumps(golden, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    greedy = golden["greedy"]
    print(f"Wrote {output}: weights max |diff| {golden['weights_check']['max_abs_diff']:g}, "
          f"greedy {len(greedy['token_ids'])} tokens {greedy['text']!r}")
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
