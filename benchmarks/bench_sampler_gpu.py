"""Sampler speed on one GPU: Qwen2.5-Coder-0.5B in bfloat16, tokens per second and bandwidth.

For each batch size B (default 64 and 256), one prompt of `--prompt_len` real tokens (GSM8K
question text) is sampled into B rows by ec_jax's `generate_jit` (per-step statistics on,
scoring off, stop tokens ignored) for `--new_tokens` tokens T. Decode time is the time of a
T-token run minus a 1-token run (compilation, prefill and post-loop work excluded), and:

  tokens per second = B x (T - 1) / decode time
  achieved bandwidth = bytes read per step x (T - 1) / decode time

Bytes read per step are the bfloat16 weights (all but an untied embedding table) plus each row's
keys and values in every cache slot, since the decoder attends over all P + T slots at every step
(`bench_sampler.decode_cost`). The reference is the card's copy bandwidth measured in the same
run: a jitted `x + 1` over a `--copy_gib` GiB bfloat16 array, counted as bytes read plus bytes
written, as STREAM's copy does. The decode counts only bytes read, so its share is a lower bound.

Needs a JAX build with GPU support on top of requirements.txt, for example
`pip install "jax[cuda12]==0.10.2"`, and the embedded model
(`python -m ec_jax.weights install qwen2.5-coder-0.5b-instruct`). Run from the repository root;
it is sized to finish within 10 minutes on one H200 (loading and compiling included):

  python -m benchmarks.bench_sampler_gpu [--batches 64 256] [--prompt_len 128]
      [--new_tokens 256] [--repeats 3] [--copy_gib 4] [--dry_run]

`--dry_run` needs no GPU: it parses the arguments, reads the model's config from the GGUF
metadata, prints the bytes per step that the measurement would use, and times the copy on the
default JAX device with a small array.
"""

from __future__ import annotations

import argparse
import gc
import sys
import time
from collections.abc import Sequence

import gguf
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from benchmarks import bench_sampler
from ec_jax import text
from ec_jax.weights import embedded
from ec_jax.weights import gguf_reader

MODEL_NAME = "qwen2.5-coder-0.5b-instruct"
DRY_RUN_COPY_GIB = 0.0625


def copy_bandwidth(gib: float, repeats: int, device: jax.Device | None = None) -> float:
  """Measures the bytes per second of `x + 1` over a `gib` GiB bfloat16 array (read + write)."""
  elements = int(gib * 2**30) // 2
  source = jax.device_put(jnp.zeros((elements,), jnp.bfloat16), device)
  add_one = jax.jit(lambda x: x + jnp.bfloat16(1))
  jax.block_until_ready(add_one(source))
  seconds = bench_sampler.min_time(lambda: jax.block_until_ready(add_one(source)), repeats)
  return 2 * elements * 2 / seconds


def bandwidth_rows(cost: bench_sampler.DecodeCost, batches: Sequence[int], new_tokens: int,
                   decode_seconds: dict[int, float]) -> list[dict]:
  """Returns per-batch tokens per second, bytes per step and achieved bytes per second."""
  rows = []
  for batch in batches:
    seconds = decode_seconds[batch]
    steps = new_tokens - 1
    step_bytes = cost.bytes_per_step(batch)
    rows.append({
        "batch": batch,
        "decode_seconds": seconds,
        "tokens_per_second": batch * steps / seconds,
        "bytes_per_step": step_bytes,
        "bytes_per_second": step_bytes * steps / seconds,
    })
  return rows


def print_table(rows: list[dict], copy: float, card: str) -> None:
  print(f"\n## Qwen2.5-Coder-0.5B, bfloat16, on {card} (copy bandwidth {copy / 1e9:.0f} GB/s)\n")
  print("| batch | decode s | tokens/s | GB read per step | achieved GB/s | share of copy |")
  print("| --- | --- | --- | --- | --- | --- |")
  for row in rows:
    print(f"| {row['batch']} | {row['decode_seconds']:.3f} | {row['tokens_per_second']:.0f} | "
          f"{row['bytes_per_step'] / 1e9:.3f} | {row['bytes_per_second'] / 1e9:.0f} | "
          f"{100 * row['bytes_per_second'] / copy:.0f} % |")


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--batches", nargs="+", type=int, default=[64, 256],
                      help="rows sampled from the prompt (default: 64 256)")
  parser.add_argument("--prompt_len", type=int, default=128, help="prompt tokens (default: 128)")
  parser.add_argument("--new_tokens", type=int, default=256,
                      help="new tokens per row, at least 2 (default: 256)")
  parser.add_argument("--repeats", type=int, default=3,
                      help="timed runs per measurement; the shortest counts (default: 3)")
  parser.add_argument("--copy_gib", type=float, default=4.0,
                      help="size of the copied array in GiB (default: 4)")
  parser.add_argument("--dry_run", action="store_true",
                      help="check the arguments and the arithmetic without a GPU")
  args = parser.parse_args(argv)
  if args.new_tokens < 2:
    parser.error(f"--new_tokens must be at least 2, got {args.new_tokens}.")
  if args.prompt_len < 1 or min(args.batches) < 1 or args.repeats < 1 or args.copy_gib <= 0:
    parser.error("--prompt_len, --batches, --repeats and --copy_gib must be positive.")
  return args


def dry_run(args: argparse.Namespace) -> int:
  """Prints the bytes per step from the GGUF metadata and times a small copy on any device."""
  path = embedded.require_installed(MODEL_NAME)
  config = gguf_reader.config_from_gguf(gguf.GGUFReader(str(path)))
  # NOTE: the real run reads the cache's element size from the compiled prefill; bfloat16
  # compute gives 2 bytes, assumed here without building the model.
  cost = bench_sampler.decode_cost(config, args.prompt_len + args.new_tokens, param_bytes=2,
                                   cache_bytes=2)
  print(f"dry run: {MODEL_NAME}, {config.num_layers} layers, weights read per step "
        f"{cost.weight_bytes / 1e9:.3f} GB, cache read per row and step "
        f"{cost.cache_bytes_per_row / 1e6:.2f} MB")
  # Decode times of 1 ms per step only exercise the arithmetic; they are not measurements.
  seconds = {batch: 1e-3 * (args.new_tokens - 1) for batch in args.batches}
  rows = bandwidth_rows(cost, args.batches, args.new_tokens, seconds)
  copy = copy_bandwidth(DRY_RUN_COPY_GIB, 1)
  print_table(rows, copy, f"{jax.devices()[0].device_kind} (dry run: 1 ms per step assumed)")
  return 0


def main(argv: Sequence[str]) -> int:
  args = parse_args(argv)
  if args.dry_run:
    return dry_run(args)
  try:
    devices = jax.devices("gpu")
  except RuntimeError as error:
    raise SystemExit(
        f"No GPU found by JAX ({error}). This benchmark needs one GPU and a JAX build with GPU "
        "support, e.g. `pip install \"jax[cuda12]==0.10.2\"`; use --dry_run to check it "
        "without one.") from None
  card = devices[0].device_kind
  start = time.perf_counter()
  print(f"card: {card}; {bench_sampler.versions()}; JAX backend {jax.default_backend()}")
  print(f"command: python -m benchmarks.bench_sampler_gpu {' '.join(argv)}".rstrip(), flush=True)

  copy = copy_bandwidth(args.copy_gib, args.repeats, devices[0])
  print(f"copy bandwidth ({args.copy_gib:g} GiB bfloat16, read + write): {copy / 1e9:.0f} GB/s",
        flush=True)

  path = embedded.require_installed(MODEL_NAME)
  decoder = gguf_reader.load_gguf_decoder(path, param_dtype="bfloat16")
  print(f"loaded {MODEL_NAME} in {time.perf_counter() - start:.0f} s", flush=True)
  graphdef, state = nnx.split(decoder)
  prompt = bench_sampler.benchmark_prompt(text.load_tokenizer(path), args.prompt_len)
  cache_slots = args.prompt_len + args.new_tokens
  _, cache = jax.eval_shape(
      lambda weights, tokens: nnx.merge(graphdef, weights).prefill(
          tokens, jnp.asarray([args.prompt_len]), cache_slots),
      state, jnp.asarray(prompt[None, :]))
  cost = bench_sampler.decode_cost(decoder.config, cache_slots, param_bytes=2,
                                   cache_bytes=cache.keys[0].dtype.itemsize)
  del decoder
  gc.collect()

  decode_seconds = {}
  for batch in args.batches:
    sampler = bench_sampler.EcJaxSampler(graphdef, state, prompt, batch, args.new_tokens)
    sampler.compile("statistics", with_statistics=True, with_scoring=False)
    one = sampler.time("statistics", 1, args.repeats)
    full = sampler.time("statistics", args.new_tokens, args.repeats)
    decode_seconds[batch] = full - one
    print(f"batch {batch}: compile {sampler.compile_seconds['statistics']:.0f} s, "
          f"{args.new_tokens} tokens {full:.3f} s, 1 token {one:.3f} s "
          f"(elapsed {time.perf_counter() - start:.0f} s)", flush=True)
    del sampler
    gc.collect()

  print_table(bandwidth_rows(cost, args.batches, args.new_tokens, decode_seconds), copy, card)
  print(f"\nTotal wall time: {time.perf_counter() - start:.0f} s.")
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
