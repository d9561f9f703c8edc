"""The embedded models in ec_jax against golden values from transformers.

tests/data/golden/<model>.json comes from tools/golden_values.py: transformers' own Llama and
Qwen2 models, loaded in float32 from the same GGUF files. Both programs dequantize with the `gguf`
package, so these tests check ec_jax's decoder (config, query/key row order, RoPE, attention,
normalization, vocabulary projection), its prefill with left padding, and its greedy sampler.
Needs the models: `python -m ec_jax.weights install smollm2-135m-instruct
qwen2.5-coder-0.5b-instruct`. Loading Qwen takes about a minute on 2 CPU cores.
"""

from __future__ import annotations

import functools
import json
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from ec_jax import text
from ec_jax.sampling import generate as generate_lib
from ec_jax.weights import embedded
from ec_jax.weights import gguf_reader

pytestmark = pytest.mark.model

MODEL_NAMES = ["smollm2-135m-instruct", "qwen2.5-coder-0.5b-instruct"]
TOP_K = 50
LOGPROB_TOLERANCE = 1e-3
# Golden log-probs closer than this may come out in either order from another implementation.
TIE_MARGIN = 2e-3
PAD_ID = 0
GOLDEN_DIR = pathlib.Path(__file__).parent / "data" / "golden"


@functools.cache
def _decoder(name: str):
  return gguf_reader.load_gguf_decoder(embedded.require_installed(name))


@functools.cache
def _tokenizer(name: str) -> text.Tokenizer:
  return text.load_tokenizer(embedded.require_installed(name))


@functools.cache
def _golden(name: str) -> dict:
  return json.loads((GOLDEN_DIR / f"{name}.json").read_text(encoding="utf-8"))


@pytest.fixture(params=MODEL_NAMES)
def name(request) -> str:
  if not embedded.is_installed(request.param):
    pytest.skip(f"{request.param} is not installed; run: {embedded.install_command(request.param)}")
  return request.param


def _log_softmax(logits) -> np.ndarray:
  return np.asarray(jax.nn.log_softmax(jnp.asarray(logits, jnp.float32), axis=-1))


def _tie_groups(logprobs: list[float]) -> list[tuple[int, int]]:
  """Splits descending log-probs into ranges [start, end) whose neighbours are within TIE_MARGIN."""
  groups, start = [], 0
  for i in range(1, len(logprobs)):
    if logprobs[i - 1] - logprobs[i] >= TIE_MARGIN:
      groups.append((start, i))
      start = i
  groups.append((start, len(logprobs)))
  return groups


def _check_next_token(logprobs: np.ndarray, entry: dict, where: str) -> None:
  """Compares ec_jax's next-token log-probs `[vocab]` with one golden entry."""
  golden_ids = np.array(entry["top_ids"])
  golden_logprobs = np.array(entry["top_logprobs"])

  diff = np.abs(logprobs[golden_ids] - golden_logprobs)
  assert diff.max() <= LOGPROB_TOLERANCE, (
      f"{where}: max |log-prob diff| {diff.max():.2e} at id {golden_ids[diff.argmax()]}")

  ours = np.argsort(-logprobs, kind="stable")[:TOP_K]
  boundary_clear = golden_logprobs[-1] - entry["next_logprob"] >= TIE_MARGIN
  if boundary_clear:
    assert set(ours.tolist()) == set(golden_ids.tolist()), f"{where}: top-{TOP_K} sets differ"
  else:
    clear_ids = golden_ids[golden_logprobs > entry["next_logprob"] + TIE_MARGIN]
    assert set(clear_ids.tolist()) <= set(ours.tolist()), (
        f"{where}: top-{TOP_K} misses ids clearly above the 51st")

  groups = _tie_groups(entry["top_logprobs"])
  if not boundary_clear:
    groups = groups[:-1]
  for start, end in groups:
    assert set(ours[start:end].tolist()) == set(golden_ids[start:end].tolist()), (
        f"{where}: ranks {start}..{end - 1} differ: ours {ours[start:end].tolist()}, golden "
        f"{golden_ids[start:end].tolist()}")


def test_golden_data_is_unambiguous(name):
  golden = _golden(name)
  assert golden["weights_check"]["max_abs_diff"] == 0.0
  assert golden["dtype"] == "float32"
  assert [entry["kind"] for entry in golden["next_token"]] == ["raw", "chat"]
  for entry in golden["next_token"]:
    assert len(entry["top_ids"]) == TOP_K
    assert entry["top_logprobs"] == sorted(entry["top_logprobs"], reverse=True)
  # Greedy tokens are only comparable exactly when no step is a near tie.
  assert min(golden["greedy"]["margins"]) > 0.1


def test_prompt_ids_match_tokenizer(name):
  golden = _golden(name)
  tokenizer = _tokenizer(name)
  raw, chat = golden["next_token"]
  assert tokenizer.encode(raw["prompt_text"], add_bos=False) == raw["prompt_ids"]
  assert tokenizer.render_chat(golden["greedy"]["messages"]) == chat["prompt_text"]
  assert tokenizer.encode_prompt(golden["greedy"]["messages"], max_new_tokens=64) == (
      golden["greedy"]["prompt_ids"])
  assert list(tokenizer.stop_ids) == golden["greedy"]["stop_ids"]


def test_forward_matches_golden_logprobs(name):
  model = _decoder(name)
  for entry in _golden(name)["next_token"]:
    logits = model.forward(jnp.asarray([entry["prompt_ids"]], jnp.int32))[0, -1]
    _check_next_token(_log_softmax(logits), entry, f"{name} forward {entry['kind']}")


def test_padded_prefill_matches_golden_logprobs(name):
  model = _decoder(name)
  entries = _golden(name)["next_token"]
  lengths = [len(entry["prompt_ids"]) for entry in entries]
  width = max(lengths)
  # Left padding: each row's prompt ends at the last column.
  tokens = np.full((len(entries), width), PAD_ID, np.int32)
  for row, entry in enumerate(entries):
    tokens[row, width - lengths[row]:] = entry["prompt_ids"]
  last_logits, _ = model.prefill(jnp.asarray(tokens), jnp.asarray(lengths, jnp.int32),
                                 cache_len=width + 8)
  logprobs = _log_softmax(last_logits)
  for row, entry in enumerate(entries):
    _check_next_token(logprobs[row], entry, f"{name} prefill {entry['kind']}")


@functools.cache
def _greedy_run(name: str) -> tuple[list[int], list[float]]:
  """Runs ec_jax's sampler at temperature 0 on the golden chat prompt; returns tokens, log-probs."""
  greedy = _golden(name)["greedy"]
  graphdef, state = nnx.split(_decoder(name))
  spec = generate_lib.SamplerSpec(num_samples=1, max_new_tokens=greedy["max_new_tokens"],
                                  with_scoring=False, pad_id=PAD_ID)
  sampling = generate_lib.SamplingParams(
      temperature=np.float32(0.0), top_p=np.float32(1.0), top_k=np.int32(0),
      max_new_tokens=np.int32(greedy["max_new_tokens"]))
  prompt = np.asarray([greedy["prompt_ids"]], np.int32)
  out = generate_lib.generate_jit(
      state, prompt, np.asarray([prompt.shape[1]], np.int32), np.zeros((1,), np.int32),
      np.int32(0), np.asarray(_tokenizer(name).stop_ids, np.int32), sampling, None,
      graphdef=graphdef, spec=spec)
  out = jax.device_get(out)
  length = int(out.lengths[0])
  return out.tokens[0, :length].tolist(), out.statistics["logprob"][0, :length].tolist()


def test_greedy_tokens_match_golden(name):
  greedy = _golden(name)["greedy"]
  tokens, logprobs = _greedy_run(name)
  assert tokens == greedy["token_ids"]
  np.testing.assert_allclose(logprobs, greedy["logprobs"], rtol=0, atol=LOGPROB_TOLERANCE)


def test_smollm2_greedy_has_sixteen_tokens():
  name = "smollm2-135m-instruct"
  if not embedded.is_installed(name):
    pytest.skip(f"{name} is not installed; run: {embedded.install_command(name)}")
  tokens, _ = _greedy_run(name)
  assert len(tokens) == 16
  assert _golden(name)["greedy"]["stopped"] is False


def test_qwen_answers_two_plus_three():
  name = "qwen2.5-coder-0.5b-instruct"
  if not embedded.is_installed(name):
    pytest.skip(f"{name} is not installed; run: {embedded.install_command(name)}")
  assert _golden(name)["greedy"]["messages"][0]["content"] == "What is 2+3?"
  tokens, _ = _greedy_run(name)
  answer = _tokenizer(name).decode(tokens, skip_special_tokens=True)
  assert "5" in answer, answer
