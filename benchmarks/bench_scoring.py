"""Scoring speed: the plain-Python oracle against ec_jax's jitted scoring, in one run.

Inputs are 64 trajectories x 16,384 tokens whose entropies are the real sequences of
tests/data/reference_traces_small.json, concatenated in a seeded random order. Prints:
  (a) the oracle (tests/scoring_oracle.py), one setting;
  (b) ec_jax, one setting, compiled (compile time reported separately);
  (c) ec_jax, the 27 settings of the reference grid in one call;
  (d) end to end from a reference-format file of about 100 MB: 27 x (json.load + oracle), as
      the reference builds its sweep with one process per setting, against the score_traces
      engine with the sweep on (streaming import, one sweep, compilation, selection and writing
      included).

Usage: python -m benchmarks.bench_scoring [--rows 64] [--time 16384] [--file_mb 100]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import pathlib
import platform
import sys
import tempfile
import time

import jax
import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

import scoring_oracle  # noqa: E402  (the tests' oracle)

from ec_jax.scoring import pipeline  # noqa: E402
from ec_jax.scoring import settings as settings_lib  # noqa: E402

SMALL_TRACES = ROOT / "tests" / "data" / "reference_traces_small.json"


def real_sequences() -> list[list]:
  with open(SMALL_TRACES) as f:
    records = json.load(f)
  return [[e["entropy"] for e in r["entropy_sequence"]] for r in records if r["entropy_sequence"]]


def tiled_rows(rows: int, length: int, seed: int = 0) -> list[list]:
  """Rows of `length` entropies made by concatenating the real sequences in random order."""
  sequences = real_sequences()
  rng = np.random.default_rng(seed)
  out = []
  for _ in range(rows):
    row: list = []
    while len(row) < length:
      row.extend(sequences[rng.integers(len(sequences))])
    out.append(row[:length])
  return out


def to_arrays(rows: list[list], dtype) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  entropies = np.asarray([[math.nan if h is None else h for h in row] for row in rows], dtype)
  valid = ~np.isnan(entropies)
  return entropies, valid, np.full(len(rows), entropies.shape[1], np.int32)


def timed(function, repeats: int) -> float:
  """Return the median wall time of `function()` over `repeats` calls, in seconds."""
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    function()
    times.append(time.perf_counter() - start)
  return float(np.median(times))


def oracle_scores(rows, setting):
  return [scoring_oracle.score(row, setting.top_percent, setting.bottom_percent,
                               setting.consecutive_low) for row in rows]


def bench_arrays(rows, x64: bool, repeats: int) -> dict:
  default = settings_lib.PhaseSetting()
  grid = settings_lib.sweep_grid()
  with jax.enable_x64(x64):
    entropies, valid, lengths = to_arrays(rows, np.float64 if x64 else np.float32)
    one = pipeline.settings_inputs([default])
    every = pipeline.settings_inputs(grid)
    spec = pipeline.ScoringSpec(phase_masses=("length",))
    sweep_spec = pipeline.ScoringSpec(with_details=False, phase_masses=("length",))

    def run(settings, spec):
      return jax.block_until_ready(
          pipeline.score_trajectories_jit(entropies, valid, lengths, settings, spec))

    start = time.perf_counter()
    run(one, spec)
    compile_one = time.perf_counter() - start
    start = time.perf_counter()
    run(every, sweep_spec)
    compile_sweep = time.perf_counter() - start
    return {"one": timed(lambda: run(one, spec), repeats),
            "sweep": timed(lambda: run(every, sweep_spec), repeats),
            "compile_one": compile_one, "compile_sweep": compile_sweep}


def write_reference_file(path: pathlib.Path, target_bytes: int) -> int:
  """Write a reference-format JSON array of about `target_bytes` from the real small file."""
  with open(SMALL_TRACES) as f:
    records = json.load(f)
  count = 0
  written = 0
  with open(path, "w") as f:
    f.write("[")
    while written < target_bytes:
      for record in records:
        copy = dict(record)
        problem = f"{record['original_id']}_copy{count // len(records)}"
        copy["original_id"] = problem
        copy["id"] = f"{problem}_traj_{record['trajectory_index']}"
        text = json.dumps(copy)
        if count:
          f.write(",\n")
        f.write(text)
        written += len(text) + 2
        count += 1
    f.write("]")
  return count


def reference_sweep(path: pathlib.Path, grid) -> None:
  """The reference's way: one process per setting, each loading the whole file."""
  for setting in grid:
    with open(path) as f:
      records = json.load(f)
    for record in records:
      entropies = [e["entropy"] for e in record["entropy_sequence"]]
      scoring_oracle.score(entropies, setting.top_percent, setting.bottom_percent,
                           setting.consecutive_low)


def ec_jax_sweep(path: pathlib.Path, output_dir: pathlib.Path) -> dict:
  """ec_jax's way: the score_traces command's engine with `sweep` on. It streams the file once,
  scores chunks of trajectories for every setting while reading (compilation included), selects
  and writes the results folder. Returns the summary's timing block."""
  sys.path.insert(0, str(ROOT))
  from configs import score_traces as score_traces_config
  from ec_jax.scoring import trace_scoring
  config = score_traces_config.get_config()
  config.input = str(path)
  config.output_dir = str(output_dir)
  config.sweep = True
  return trace_scoring.run(config).summary["timing"]


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--rows", type=int, default=64)
  parser.add_argument("--time", type=int, default=16384)
  parser.add_argument("--file_mb", type=float, default=100.0)
  parser.add_argument("--repeats", type=int, default=5)
  parser.add_argument("--skip_file", action="store_true", help="skip the end-to-end part (d)")
  args = parser.parse_args()

  print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; "
        f"jax {jax.__version__}, backend {jax.default_backend()}")
  rows = tiled_rows(args.rows, args.time)
  grid = settings_lib.sweep_grid()
  print(f"inputs: {args.rows} trajectories x {args.time} tokens, {len(grid)} settings")

  start = time.perf_counter()
  oracle_scores(rows, settings_lib.PhaseSetting())
  oracle_one = time.perf_counter() - start
  print(f"(a) oracle, one setting:            {oracle_one * 1e3:9.1f} ms")

  for x64 in (True, False):
    label = "float64" if x64 else "float32"
    result = bench_arrays(rows, x64, args.repeats)
    print(f"[{label}] compile: one setting {result['compile_one']:.2f} s, "
          f"27 settings {result['compile_sweep']:.2f} s")
    print(f"(b) [{label}] ec_jax, one setting:   {result['one'] * 1e3:9.1f} ms   "
          f"{oracle_one / result['one']:6.1f}x (a)   target >= 4x")
    print(f"(c) [{label}] ec_jax, 27 settings:   {result['sweep'] * 1e3:9.1f} ms   "
          f"{27 * oracle_one / result['sweep']:6.1f}x 27(a)   target >= 20x")

  if args.skip_file:
    return
  with tempfile.TemporaryDirectory() as folder:
    path = pathlib.Path(folder) / "entropy_results.json"
    count = write_reference_file(path, int(args.file_mb * 1e6))
    size = path.stat().st_size / 1e6
    print(f"(d) file: {size:.1f} MB, {count} trajectories")
    start = time.perf_counter()
    timing = ec_jax_sweep(path, pathlib.Path(folder) / "scored")
    ours = time.perf_counter() - start
    print("(d) ec_jax timing: " + ", ".join(f"{k} {v:.2f}" for k, v in timing.items()))
    start = time.perf_counter()
    reference_sweep(path, grid)
    theirs = time.perf_counter() - start
    print(f"(d) 27 x (json.load + oracle): {theirs:8.2f} s; ec_jax import + sweep: {ours:6.2f} s"
          f"   {theirs / ours:6.1f}x   target >= 20x")


if __name__ == "__main__":
  main()
