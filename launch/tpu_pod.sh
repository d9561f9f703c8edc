#!/usr/bin/env bash
# Run the main job on every worker of a Cloud TPU VM pod slice, one process per worker.
#
# Usage: launch/tpu_pod.sh TPU_NAME ZONE CONFIG [FLAG ...]
#   TPU_NAME  name of the TPU VM (e.g. a v5p-32 slice).
#   ZONE      its zone, e.g. us-east5-a.
#   CONFIG    config argument of the main job, e.g. configs/best_of_n.py:qwen_math.
#   FLAG      further flags of the main job, e.g. --config.num_samples=64.
# Environment:
#   EC_JAX_REMOTE_DIR  repository folder on every worker (default: ec_jax in the home folder).
#   PROJECT            Google Cloud project (default: gcloud's configured project).
#   SETUP=1            first run launch/setup.sh on every worker.
#
# Each worker runs, in EC_JAX_REMOTE_DIR:
#   EC_JAX_DISTRIBUTED=tpu .venv/bin/python -m experiments.best_of_n --config=CONFIG FLAG ...
# EC_JAX_DISTRIBUTED=tpu makes ec_jax call jax.distributed.initialize(), which reads the
# workers from the TPU VM metadata. Process 0 (worker 0) writes the output files.
#
# Prerequisites:
#   - the gcloud CLI, logged in (gcloud auth login) with access to the TPU;
#   - the TPU VM slice created, e.g.
#       gcloud compute tpus tpu-vm create NAME --zone ZONE --accelerator-type v5p-32 \
#         --version v2-alpha-tpuv5;
#   - this repository at EC_JAX_REMOTE_DIR on every worker, at the same commit (for example
#     cloned with `gcloud compute tpus tpu-vm ssh NAME --zone ZONE --worker=all --command
#     "git clone URL ec_jax"`), set up with launch/setup.sh (SETUP=1 runs it), plus the TPU
#     runtime: `.venv/bin/pip install "jax[tpu]==0.10.2"` on every worker, because
#     requirements.txt installs the CPU build of jaxlib;
#   - the model reachable on every worker at the same path (or an hf: name when online).
#
# The tests check this script only with `bash -n` and shellcheck; it has not been run on a pod.
set -euo pipefail

if [[ $# -lt 3 ]]; then
  echo "Usage: launch/tpu_pod.sh TPU_NAME ZONE CONFIG [FLAG ...]" >&2
  exit 2
fi
tpu_name=$1
zone=$2
config=$3
shift 3

remote_dir=${EC_JAX_REMOTE_DIR:-ec_jax}
gcloud_args=(compute tpus tpu-vm ssh "$tpu_name" --zone "$zone" --worker=all)
if [[ -n "${PROJECT:-}" ]]; then
  gcloud_args+=(--project "$PROJECT")
fi

# Quote every argument for the remote shell.
printf -v quoted_dir '%q' "$remote_dir"
printf -v quoted_flags ' %q' "--config=$config" "$@"

if [[ "${SETUP:-0}" == "1" ]]; then
  gcloud "${gcloud_args[@]}" --command "cd $quoted_dir && launch/setup.sh"
fi

command="cd $quoted_dir && EC_JAX_DISTRIBUTED=tpu .venv/bin/python -m experiments.best_of_n"
command+="$quoted_flags"
echo "tpu_pod.sh: running on every worker of $tpu_name: $command" >&2
gcloud "${gcloud_args[@]}" --command "$command"
