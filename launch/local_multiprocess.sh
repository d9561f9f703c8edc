#!/usr/bin/env bash
# Run a Python module as N JAX processes on this machine, each with its own fake CPU devices,
# joined through jax.distributed on a free loopback port. Used to test multi-process code
# without a cluster.
#
# Usage: launch/local_multiprocess.sh [-n PROCESSES] [-d DEVICES] [-t TIMEOUT_S] [--]
#                                     [MODULE [ARG ...]]
#   -n PROCESSES  number of processes (default 2).
#   -d DEVICES    CPU devices per process, set as JAX_NUM_CPU_DEVICES (default 2).
#   -t TIMEOUT_S  seconds before all processes are stopped and the script exits 124
#                 (default 600).
#   MODULE        run as `python -m MODULE ARG ...` (default ec_jax.parallel.selfcheck).
#
# Prerequisites: the Python environment with requirements.txt installed, active or named by
# PYTHON (default `python`); run from anywhere, the processes start in the repository root.
# Environment passed to each process: EC_JAX_COORDINATOR=127.0.0.1:PORT,
# EC_JAX_NUM_PROCESSES, EC_JAX_PROCESS_ID, JAX_NUM_CPU_DEVICES, JAX_PLATFORMS=cpu, and
# EC_JAX_HEARTBEAT_TIMEOUT_S (default 10 here, so a dead process is noticed within seconds).
# Output lines are prefixed with "[process I]".
#
# Exit status: 0 when every process exits 0. When one fails, the script names it, stops the
# others and exits with that process's status; on timeout it exits 124.
set -euo pipefail

num_processes=2
devices_per_process=2
timeout_s=600
while getopts ":n:d:t:h" option; do
  case "$option" in
    n) num_processes=$OPTARG ;;
    d) devices_per_process=$OPTARG ;;
    t) timeout_s=$OPTARG ;;
    h) sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'; exit 0 ;;
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
module=${1:-ec_jax.parallel.selfcheck}
if [[ $# -gt 0 ]]; then
  shift
fi

cd "$(dirname "$0")/.."
python=${PYTHON:-python}
if ! command -v "$python" > /dev/null; then
  echo "local_multiprocess.sh: Python interpreter '$python' not found; activate the" \
       "environment or set PYTHON." >&2
  exit 2
fi

# The port is free when chosen. Another program could still take it before process 0 binds
# it, and then the run fails at start-up instead of hanging.
port=$("$python" -c 'import socket
with socket.socket() as s:
  s.bind(("127.0.0.1", 0))
  print(s.getsockname()[1])')

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

echo "local_multiprocess.sh: $num_processes processes x $devices_per_process CPU devices," \
     "coordinator 127.0.0.1:$port, module $module, timeout ${timeout_s}s." >&2
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

# Poll the processes: the first one to fail ends the run.
deadline=$((SECONDS + timeout_s))
remaining=$num_processes
declare -A done_pids=()
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
echo "local_multiprocess.sh: all $num_processes processes exited with status 0." >&2
