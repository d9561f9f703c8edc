"""Sampler speed on CPU: ec_jax's decode loop against transformers' generate, in one run.

For each embedded model and batch size B, one prompt of `--prompt_len` real tokens (GSM8K
question text) is sampled into B rows, as the best-of-N sampler does. Each row gets
`--new_tokens` new tokens T: stop tokens are ignored, so every row runs all T steps. Decode time is the time
of a run with T new tokens minus a run with 1 new token, so it leaves out compilation, the
prompt's prefill and the post-loop work; tokens per second are B x (T - 1) / decode time.

Measured in the same process (float32 ec_jax; temperature 0.7, top-p 0.95, whole candidate set):
  - ec_jax's sampler (`generate_jit`) with per-step statistics on, scoring off (the headline),
    with statistics off, and with post-loop scoring on; the compile time of each;
  - transformers' `generate` on the same GGUF file in float32 and in bfloat16 (do_sample,
    output_scores, num_return_sequences=B, min_new_tokens = max_new_tokens = T), its decode
    time taken between the first and the last new token by a stopping criterion's clock;
  - a float32 `jnp.dot` of two `--matmul_size` square matrices, the reference GFLOP/s;
  - with `--breakdown` (default on), the per-step time of pieces of one step inside a
    `lax.fori_loop`: the model's decode_step, `lax.top_k` of the candidates, top-k plus the
    token statistics, and top-k plus the sampling filter.

FLOPs of a decode token (see `decode_cost`): 2 x the parameters of every matrix product (the
vocabulary projection included, the embedding lookup not), plus attention: 4 x layers x query
heads x head width x cache slots. The decoder attends over all P + T cache slots at every step,
so that is what is counted.

Needs requirements-bench.txt (torch, transformers) and both embedded models. Run from the
repository root; the defaults took 9 minutes on 2 idle CPU cores (jax 0.10.2):

  python -m benchmarks.bench_sampler [--models NAME ...] [--batches 8 64] [--prompt_len 64]
      [--new_tokens 32] [--repeats 1] [--no_transformers] [--no_breakdown]
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import importlib.metadata
import os
import platform
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax import lax

from ec_jax import text
from ec_jax.model.config import ModelConfig
from ec_jax.sampling import filters
from ec_jax.sampling import generate as generate_lib
from ec_jax.scoring import pipeline
from ec_jax.scoring import settings as settings_lib
from ec_jax.scoring import token_stats
from ec_jax.tasks import registry
from ec_jax.weights import embedded
from ec_jax.weights import gguf_reader

MODEL_NAMES = ("smollm2-135m-instruct", "qwen2.5-coder-0.5b-instruct")
TEMPERATURE = 0.7
TOP_P = 0.95
# Targets, printed next to the measured values.
TARGET_SPEEDUP_SMALL_BATCH = 1.5  # x transformers' best, at the smallest batch
TARGET_SPEEDUP_LARGE_BATCH = 1.0  # x transformers' best, at the largest batch
TARGET_MATMUL_SHARE = 0.5  # of the jnp.dot rate, at the largest batch
TARGET_STATISTICS_SHARE = 0.10  # of decode time
TARGET_SCORING_SHARE = 0.03  # of decode time


@dataclasses.dataclass(frozen=True)
class DecodeCost:
  """Work of one decode token.

  Attributes:
    matmul_flops: 2 x parameters of all matrix products, vocabulary projection included.
    attention_flops: 4 x layers x query heads x head width x cache slots (scores and values).
    weight_bytes: bytes of the weights a step reads (all of them except an untied embedding
      table, of which a step reads only its rows).
    cache_bytes_per_row: bytes of keys and values one row reads per step (all cache slots).
  """

  matmul_flops: int
  attention_flops: int
  weight_bytes: int
  cache_bytes_per_row: int

  @property
  def flops(self) -> int:
    return self.matmul_flops + self.attention_flops

  def bytes_per_step(self, batch: int) -> int:
    """Bytes that one decode step of `batch` rows reads: the weights once, each row's cache."""
    return self.weight_bytes + batch * self.cache_bytes_per_row


def decode_cost(config: ModelConfig, cache_slots: int, param_bytes: int = 4,
                cache_bytes: int = 4) -> DecodeCost:
  """Counts the FLOPs and bytes of one decode token of `config` with `cache_slots` slots.

  Args:
    config: the model config.
    cache_slots: cache slots attended per step (prompt length + new tokens for ec_jax).
    param_bytes: bytes per parameter (4 for float32, 2 for bfloat16).
    cache_bytes: bytes per cached key or value element.
  """
  hidden = config.hidden_size
  query_width = config.num_heads * config.head_dim
  kv_width = config.num_kv_heads * config.head_dim
  per_layer = (hidden * query_width + 2 * hidden * kv_width + query_width * hidden
               + 3 * hidden * config.intermediate_size)
  projection = config.vocab_size * hidden
  matmul_params = config.num_layers * per_layer + projection
  norms = (2 * config.num_layers + 1) * hidden
  biases = config.num_layers * (query_width + 2 * kv_width) if config.attention_bias else 0
  weight_params = matmul_params + norms + biases
  return DecodeCost(
      matmul_flops=2 * matmul_params,
      attention_flops=4 * config.num_layers * query_width * cache_slots,
      weight_bytes=weight_params * param_bytes,
      cache_bytes_per_row=2 * config.num_layers * kv_width * cache_slots * cache_bytes,
  )


def check_parameter_count(config: ModelConfig, state: nnx.State) -> None:
  """Checks `decode_cost`'s parameter arithmetic against the loaded weights.

  Raises:
    ValueError: the parameters counted from the config differ from the loaded ones.
  """
  loaded = sum(leaf.size for leaf in jax.tree.leaves(state))
  cost = decode_cost(config, cache_slots=0, param_bytes=1)
  counted = cost.weight_bytes
  if not config.tie_embeddings:
    counted += config.vocab_size * config.hidden_size  # the embedding table
  if counted != loaded:
    raise ValueError(f"decode_cost counts {counted} parameters, the model has {loaded}; "
                     "the FLOP and byte counts would be wrong.")


def machine_description() -> str:
  """Returns the CPU model, usable cores and memory of this machine."""
  model = platform.processor() or platform.machine()
  try:
    with open("/proc/cpuinfo", encoding="utf-8") as f:
      for line in f:
        if line.startswith("model name"):
          model = line.split(":", 1)[1].strip()
          break
  except OSError:
    pass
  cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
  memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
  return f"{model}, {cores} cores, {memory:.0f} GiB memory, {platform.system()}"


def versions() -> str:
  """Returns the versions of Python and the packages that the numbers depend on."""
  names = ("jax", "jaxlib", "flax", "numpy", "torch", "transformers")
  found = []
  for name in names:
    try:
      found.append(f"{name} {importlib.metadata.version(name)}")
    except importlib.metadata.PackageNotFoundError:
      found.append(f"{name} (not installed)")
  return f"Python {platform.python_version()}, " + ", ".join(found)


def min_time(function: Callable[[], Any], repeats: int) -> float:
  """Returns the shortest wall time of `function()` over `repeats` calls, in seconds."""
  best = float("inf")
  for _ in range(repeats):
    start = time.perf_counter()
    function()
    best = min(best, time.perf_counter() - start)
  return best


def matmul_gflops(size: int, repeats: int) -> float:
  """Measures the float32 GFLOP/s of a jitted `jnp.dot` of two [size, size] matrices."""
  keys = jax.random.split(jax.random.key(0))
  left = jax.random.normal(keys[0], (size, size), jnp.float32)
  right = jax.random.normal(keys[1], (size, size), jnp.float32)
  dot = jax.jit(jnp.dot)
  jax.block_until_ready(dot(left, right))
  seconds = min_time(lambda: jax.block_until_ready(dot(left, right)), max(repeats, 3))
  return 2 * size**3 / seconds / 1e9


def benchmark_prompt(tokenizer: text.Tokenizer, length: int) -> np.ndarray:
  """Returns `[length]` token ids: the start of the shipped GSM8K questions, joined."""
  questions = []
  ids: list[int] = []
  for problem in registry.get_task("gsm8k").load(64):
    questions.append(problem.question)
    ids = tokenizer.encode("\n\n".join(questions), add_bos=False)
    if len(ids) >= length:
      return np.asarray(ids[:length], np.int32)
  raise ValueError(f"--prompt_len {length} is longer than the first 64 GSM8K questions "
                   f"({len(ids)} tokens); use a shorter prompt.")


class EcJaxSampler:
  """Compiled `generate_jit` variants of one model at one batch size, and their timings."""

  def __init__(self, graphdef: nnx.GraphDef, state: nnx.State, prompt: np.ndarray, batch: int,
               new_tokens: int):
    self.graphdef = graphdef
    self.state = state
    self.batch = batch
    self.new_tokens = new_tokens
    self.prompts = prompt[None, :]
    self.scoring = generate_lib.ScoringParams(
        pipeline.settings_inputs([settings_lib.PhaseSetting()]), np.float32(0.1),
        np.int32(min(64, new_tokens)), np.int32(min(64, new_tokens)))
    self.compiled: dict[str, Any] = {}
    self.compile_seconds: dict[str, float] = {}

  def _arguments(self, limit: int) -> tuple:
    sampling = generate_lib.SamplingParams(
        np.float32(TEMPERATURE), np.float32(TOP_P), np.int32(0), np.int32(limit))
    # No stop ids: every row runs all `limit` steps.
    return (self.state, self.prompts, np.asarray([self.prompts.shape[1]], np.int32),
            np.zeros((1,), np.int32), np.int32(0), np.zeros((0,), np.int32), sampling,
            self.scoring)

  def compile(self, variant: str, with_statistics: bool, with_scoring: bool) -> None:
    spec = generate_lib.SamplerSpec(
        num_samples=self.batch, max_new_tokens=self.new_tokens, with_statistics=with_statistics,
        with_scoring=with_scoring)
    start = time.perf_counter()
    lowered = generate_lib.generate_jit.lower(
        *self._arguments(self.new_tokens), graphdef=self.graphdef, spec=spec)
    self.compiled[variant] = lowered.compile()
    self.compile_seconds[variant] = time.perf_counter() - start
    # One untimed run, so buffers are allocated before the timed runs.
    self.run(variant, 1)

  def run(self, variant: str, limit: int) -> None:
    out = jax.block_until_ready(self.compiled[variant](*self._arguments(limit)))
    if int(out.steps) != limit:
      raise RuntimeError(f"ec_jax ran {int(out.steps)} decode steps, expected {limit}.")

  def time(self, variant: str, limit: int, repeats: int) -> float:
    return min_time(lambda: self.run(variant, limit), repeats)


def bench_ec_jax(graphdef: nnx.GraphDef, state: nnx.State, prompt: np.ndarray, batch: int,
                 new_tokens: int, repeats: int) -> dict[str, float]:
  """Times the sampler variants of one model at one batch size; returns seconds by name."""
  sampler = EcJaxSampler(graphdef, state, prompt, batch, new_tokens)
  sampler.compile("statistics", with_statistics=True, with_scoring=False)
  sampler.compile("plain", with_statistics=False, with_scoring=False)
  sampler.compile("scoring", with_statistics=True, with_scoring=True)
  result = {f"compile_{name}": seconds for name, seconds in sampler.compile_seconds.items()}
  result["one_token"] = sampler.time("statistics", 1, repeats)
  for variant in ("statistics", "plain", "scoring"):
    result[f"full_{variant}"] = sampler.time(variant, new_tokens, repeats)
  result["decode"] = result["full_statistics"] - result["one_token"]
  return result


def bench_step_pieces(graphdef: nnx.GraphDef, state: nnx.State, prompt: np.ndarray,
                      batch: int, new_tokens: int, candidate_k: int, entropy_k: int,
                      steps: int = 4) -> dict[str, float]:
  """Times pieces of one decode step inside `lax.fori_loop`; returns seconds per step by name.

  Each loop runs `steps` iterations on the logits and cache of the real prompt, repeated to
  `batch` rows. The logits are shifted by the loop index so that no piece is hoisted out of the
  loop.
  """
  model = nnx.merge(graphdef, state)
  prompts = jnp.asarray(np.repeat(prompt[None, :], batch, axis=0))
  logits, cache = jax.jit(model.prefill, static_argnums=2)(
      prompts, jnp.full((batch,), prompt.shape[0], jnp.int32), prompt.shape[0] + new_tokens)
  keys = jax.random.split(jax.random.key(0), batch)

  def decode_only(state, logits, cache):
    model = nnx.merge(graphdef, state)

    def body(_, carry):
      logits, cache = carry
      token = jnp.argmax(logits, axis=-1).astype(jnp.int32)
      return model.decode_step(token, cache)

    return lax.fori_loop(0, steps, body, (logits, cache))

  def top_k_piece(extra):
    def run(state, logits, cache):
      del state, cache

      def body(i, total):
        shifted = logits + i.astype(logits.dtype)
        values, ids = lax.top_k(shifted, candidate_k)
        return total + extra(shifted, values, ids)

      return lax.fori_loop(0, steps, body, jnp.zeros((), jnp.float32))
    return run

  def statistics(shifted, values, ids):
    # A gather, not `ids[:, 0]`: slicing the top-k outputs makes XLA's CPU backend sort instead.
    token = jnp.take_along_axis(ids, jnp.argmax(values, axis=-1)[:, None], axis=-1)[:, 0]
    stats = token_stats.token_statistics(shifted, token, entropy_k, top_logits=values)
    return sum(jnp.sum(value) for value in stats)

  def sampling(shifted, values, ids):
    draw = filters.sample_from_candidates(keys, values, ids, shifted, jnp.float32(TEMPERATURE),
                                          jnp.float32(TOP_P), jnp.int32(0))
    return jnp.sum(draw.token) + jnp.sum(draw.entropy)

  pieces = {
      "decode_step": decode_only,
      "top_k": top_k_piece(lambda shifted, values, ids: jnp.sum(values)),
      "top_k_statistics": top_k_piece(statistics),
      "top_k_sampling": top_k_piece(sampling),
  }
  result = {}
  for name, piece in pieces.items():
    compiled = jax.jit(piece)
    jax.block_until_ready(compiled(state, logits, cache))
    result[name] = min_time(lambda: jax.block_until_ready(compiled(state, logits, cache)),
                            2) / steps
  return result


def bench_transformers(name: str, prompt: np.ndarray, batches: Sequence[int], new_tokens: int,
                       repeats: int) -> tuple[dict, float]:
  """Times transformers' generate in float32 and bfloat16; returns results and the load time.

  A stopping criterion that never stops records the time after each new token. One call thus
  gives the decode time of steps 2..T, from the first new token to the last. These are the
  steps that ec_jax's T-token run adds over its 1-token run. Results map (dtype name, batch) to
  {"decode", "full"} seconds.
  """
  import torch  # pylint: disable=g-import-not-at-top
  import transformers  # pylint: disable=g-import-not-at-top

  class StepClock(transformers.StoppingCriteria):
    """Records the time after each new token and never stops generation."""

    def __init__(self):
      self.times: list[float] = []

    def __call__(self, input_ids, scores, **kwargs):
      del scores, kwargs
      self.times.append(time.perf_counter())
      return torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)

  path = embedded.require_installed(name)
  start = time.perf_counter()
  model = transformers.AutoModelForCausalLM.from_pretrained(
      str(path.parent), gguf_file=path.name, dtype=torch.float32)
  load_seconds = time.perf_counter() - start
  model.eval()
  input_ids = torch.tensor(prompt[None, :], dtype=torch.long)
  torch.manual_seed(0)

  def generate(batch: int, limit: int) -> tuple[float, float]:
    """Returns the decode time of steps 2..limit and the whole call's time."""
    clock = StepClock()
    start = time.perf_counter()
    with torch.no_grad():
      out = model.generate(
          input_ids=input_ids, attention_mask=torch.ones_like(input_ids), do_sample=True,
          temperature=TEMPERATURE, top_p=TOP_P, top_k=0, num_return_sequences=batch,
          max_new_tokens=limit, min_new_tokens=limit, output_scores=True,
          return_dict_in_generate=True, pad_token_id=0,
          stopping_criteria=transformers.StoppingCriteriaList([clock]))
    full = time.perf_counter() - start
    if out.sequences.shape != (batch, prompt.shape[0] + limit) or len(clock.times) != limit:
      raise RuntimeError(
          f"transformers returned sequences of shape {tuple(out.sequences.shape)} after "
          f"{len(clock.times)} steps; expected {(batch, prompt.shape[0] + limit)} and {limit}.")
    return clock.times[-1] - clock.times[0], full

  results = {}
  for dtype_name, dtype in (("float32", torch.float32), ("bfloat16", torch.bfloat16)):
    model.to(dtype)
    generate(min(batches), 2)  # warm-up of the new dtype
    for batch in batches:
      runs = [generate(batch, new_tokens) for _ in range(repeats)]
      decode = min(run[0] for run in runs)
      full = min(run[1] for run in runs)
      results[dtype_name, batch] = {"decode": decode, "full": full}
      print(f"  transformers {dtype_name} batch {batch}: decode {decode:.1f} s, whole call "
            f"{full:.1f} s", flush=True)
  del model
  gc.collect()
  return results, load_seconds


def _ratio(value: float, target: float) -> str:
  mark = "met" if value >= target else "missed"
  return f"{value:.2f}x (target >= {target:g}x, {mark})"


def _share(value: float, target: float) -> str:
  mark = "met" if value <= target else "missed"
  return f"{100 * value:.1f} % (target <= {100 * target:g} %, {mark})"


def print_report(args: argparse.Namespace, matmul: float, rows: list[dict]) -> None:
  """Prints the results as Markdown tables."""
  largest = max(args.batches)
  smallest = min(args.batches)
  print("\n## Decode speed (tokens per second, rows x steps)\n")
  print("| model | batch | ec_jax | ec_jax, no statistics | transformers float32 | "
        "transformers bfloat16 | ec_jax / transformers' best |")
  print("| --- | --- | --- | --- | --- | --- | --- |")
  for row in rows:
    tokens = row["batch"] * (args.new_tokens - 1)
    ours = tokens / row["ec_jax"]["decode"]
    plain = tokens / (row["ec_jax"]["full_plain"] - row["ec_jax"]["one_token"])
    cells = [row["model"], str(row["batch"]), f"{ours:.1f}", f"{plain:.1f}"]
    theirs = []
    for dtype_name in ("float32", "bfloat16"):
      timing = row.get("transformers", {}).get(dtype_name)
      if timing is None:
        cells.append("not run")
        continue
      theirs.append(tokens / timing["decode"])
      cells.append(f"{theirs[-1]:.1f}")
    if theirs and row["batch"] in (smallest, largest):
      target = TARGET_SPEEDUP_SMALL_BATCH if row["batch"] == smallest else (
          TARGET_SPEEDUP_LARGE_BATCH)
      cells.append(_ratio(ours / max(theirs), target))
    elif theirs:
      cells.append(f"{ours / max(theirs):.2f}x")
    else:
      cells.append("not run")
    print("| " + " | ".join(cells) + " |")

  print(f"\n## Achieved GFLOP/s of ec_jax's decode (float32 jnp.dot {args.matmul_size}^2: "
        f"{matmul:.1f} GFLOP/s)\n")
  print("| model | batch | GFLOP per token (matmul + attention) | GFLOP/s | share of jnp.dot |")
  print("| --- | --- | --- | --- | --- |")
  for row in rows:
    cost = row["cost"]
    rate = row["batch"] * (args.new_tokens - 1) * cost.flops / row["ec_jax"]["decode"] / 1e9
    share = rate / matmul
    share_text = f"{100 * share:.0f} %"
    if row["batch"] == largest:
      mark = "met" if share >= TARGET_MATMUL_SHARE else "missed"
      share_text += f" (target >= {100 * TARGET_MATMUL_SHARE:g} %, {mark})"
    print(f"| {row['model']} | {row['batch']} | {cost.matmul_flops / 1e9:.3f} + "
          f"{cost.attention_flops / 1e9:.4f} | {rate:.1f} | {share_text} |")

  print("\n## Cost of the per-step statistics and the post-loop scoring (share of decode time)\n")
  print("| model | batch | decode s | per-step statistics | post-loop scoring |")
  print("| --- | --- | --- | --- | --- |")
  for row in rows:
    timing = row["ec_jax"]
    plain_decode = timing["full_plain"] - timing["one_token"]
    statistics = (timing["full_statistics"] - timing["full_plain"]) / plain_decode
    scoring = (timing["full_scoring"] - timing["full_statistics"]) / timing["decode"]
    print(f"| {row['model']} | {row['batch']} | {timing['decode']:.2f} | "
          f"{_share(statistics, TARGET_STATISTICS_SHARE)} | "
          f"{_share(scoring, TARGET_SCORING_SHARE)} |")

  print("\n## Compile and load times (seconds)\n")
  print("| model | batch | statistics | no statistics | statistics + scoring |")
  print("| --- | --- | --- | --- | --- |")
  for row in rows:
    timing = row["ec_jax"]
    print(f"| {row['model']} | {row['batch']} | {timing['compile_statistics']:.1f} | "
          f"{timing['compile_plain']:.1f} | {timing['compile_scoring']:.1f} |")
  for row in rows:
    if row["batch"] == smallest:
      loads = f"ec_jax {row['load_ec_jax']:.1f} s"
      if "load_transformers" in row:
        loads += f", transformers {row['load_transformers']:.1f} s"
      print(f"\nLoad time of {row['model']} (GGUF to float32): {loads}.")

  if any("pieces" in row for row in rows):
    print("\n## Where a decode step's time goes (ms per step, pieces in lax.fori_loop)\n")
    print("| model | batch | sampler step | decode_step | top_k | top_k + statistics | "
          "top_k + sampling filter |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for row in rows:
      if "pieces" not in row:
        continue
      pieces = row["pieces"]
      step = row["ec_jax"]["decode"] / (args.new_tokens - 1)
      print(f"| {row['model']} | {row['batch']} | {1e3 * step:.1f} | "
            f"{1e3 * pieces['decode_step']:.1f} | {1e3 * pieces['top_k']:.1f} | "
            f"{1e3 * pieces['top_k_statistics']:.1f} | {1e3 * pieces['top_k_sampling']:.1f} |")


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--models", nargs="+", choices=MODEL_NAMES, default=list(MODEL_NAMES),
                      help="embedded models to run (default: both)")
  parser.add_argument("--batches", nargs="+", type=int, default=[8, 64],
                      help="rows sampled from the prompt; targets apply to the smallest and "
                      "largest (default: 8 64)")
  parser.add_argument("--prompt_len", type=int, default=64, help="prompt tokens (default: 64)")
  parser.add_argument("--new_tokens", type=int, default=32,
                      help="new tokens per row, at least 2 (default: 32)")
  parser.add_argument("--repeats", type=int, default=1,
                      help="timed runs per measurement; the shortest counts (default: 1)")
  parser.add_argument("--matmul_size", type=int, default=2048,
                      help="side of the square float32 matrices of the reference jnp.dot")
  parser.add_argument("--no_transformers", dest="transformers", action="store_false",
                      help="skip the transformers baselines")
  parser.add_argument("--no_breakdown", dest="breakdown", action="store_false",
                      help="skip timing the pieces of one decode step")
  args = parser.parse_args(argv)
  if args.new_tokens < 2:
    parser.error(f"--new_tokens must be at least 2, got {args.new_tokens}.")
  if args.prompt_len < 1 or min(args.batches) < 1 or args.repeats < 1:
    parser.error("--prompt_len, --batches and --repeats must be positive.")
  return args


def main(argv: Sequence[str]) -> int:
  args = parse_args(argv)
  print(f"machine: {machine_description()}")
  print(f"versions: {versions()}; JAX backend {jax.default_backend()}")
  print(f"command: python -m benchmarks.bench_sampler {' '.join(argv)}".rstrip())
  print(f"prompt {args.prompt_len} tokens, {args.new_tokens} new tokens, batches {args.batches}, "
        f"repeats {args.repeats}", flush=True)
  start = time.perf_counter()
  matmul = matmul_gflops(args.matmul_size, args.repeats)
  print(f"jnp.dot float32 {args.matmul_size}^2: {matmul:.1f} GFLOP/s", flush=True)

  rows = []
  for name in args.models:
    path = embedded.require_installed(name)
    load_start = time.perf_counter()
    decoder = gguf_reader.load_gguf_decoder(path)
    load_seconds = time.perf_counter() - load_start
    graphdef, state = nnx.split(decoder)
    check_parameter_count(decoder.config, state)
    prompt = benchmark_prompt(text.load_tokenizer(path), args.prompt_len)
    cost = decode_cost(decoder.config, args.prompt_len + args.new_tokens)
    spec_defaults = generate_lib.SamplerSpec(num_samples=1, max_new_tokens=1)
    model_rows = []
    for batch in args.batches:
      print(f"{name} batch {batch}: ec_jax", flush=True)
      row = {"model": name, "batch": batch, "cost": cost, "load_ec_jax": load_seconds,
             "ec_jax": bench_ec_jax(graphdef, state, prompt, batch, args.new_tokens,
                                    args.repeats)}
      timing = row["ec_jax"]
      print(f"  ec_jax: decode {timing['decode']:.1f} s; {args.new_tokens} tokens: statistics "
            f"{timing['full_statistics']:.1f} s, none {timing['full_plain']:.1f} s, scoring "
            f"{timing['full_scoring']:.1f} s; 1 token {timing['one_token']:.1f} s", flush=True)
      if args.breakdown:
        row["pieces"] = bench_step_pieces(graphdef, state, prompt, batch, args.new_tokens,
                                          spec_defaults.candidate_k, spec_defaults.entropy_k)
      model_rows.append(row)
    del decoder, graphdef, state
    gc.collect()
    if args.transformers:
      print(f"{name}: transformers", flush=True)
      baselines, load_transformers = bench_transformers(name, prompt, args.batches,
                                                        args.new_tokens, args.repeats)
      for row in model_rows:
        row["load_transformers"] = load_transformers
        row["transformers"] = {dtype_name: baselines[dtype_name, row["batch"]]
                               for dtype_name in ("float32", "bfloat16")}
    rows.extend(model_rows)

  print_report(args, matmul, rows)
  print(f"\nTotal wall time: {time.perf_counter() - start:.0f} s.")
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
