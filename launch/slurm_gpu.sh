#!/usr/bin/env bash
#SBATCH --job-name=ec_jax
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=1
#SBATCH --gpus-per-node=8
#SBATCH --cpus-per-task=16
#SBATCH --time=24:00:00
#SBATCH --output=ec_jax-%j.out
#
# Run the main job on a SLURM GPU cluster: one process per node, each using all the node's GPUs.
#
# Usage: sbatch [--nodes=K] [--gpus-per-node=G] launch/slurm_gpu.sh CONFIG [FLAG ...]
#   CONFIG  config argument of the main job, e.g. configs/best_of_n.py:qwen_math.
#   FLAG    further flags of the main job, e.g. --config.mesh.model=8.
# Submit from the repository root: the job runs in SLURM_SUBMIT_DIR. The sbatch options above
# are defaults; options on the sbatch command line override them.
# Environment (exported by sbatch from the submitting shell):
#   PYTHON                          interpreter (default: python, i.e. the active environment).
#   EC_JAX_COORDINATOR_PORT         coordinator port on the first node (default 20000 plus the
#                                   job id modulo 10000).
#   XLA_PYTHON_CLIENT_MEM_FRACTION  share of GPU memory JAX preallocates (default here 0.90;
#                                   JAX's own default of 0.75 leaves less room for the KV cache).
#
# The first node of the allocation hosts the coordinator. Every task gets EC_JAX_DISTRIBUTED=slurm
# and EC_JAX_COORDINATOR=FIRST_NODE:PORT; ec_jax reads SLURM_NTASKS and SLURM_PROCID for the
# process count and id, and keeps all of a node's GPUs visible to its one process.
#
# Prerequisites:
#   - the repository on a file system shared by all nodes, with a Python environment that has
#     requirements.txt and a CUDA build of jaxlib 0.10.2 (e.g. pip install "jax[cuda12]==0.10.2");
#   - the nodes can reach each other on the coordinator port and on the ports NCCL uses;
#   - the model at a path every node can read.
#
# The tests check this script only with `bash -n` and shellcheck; it has not been run on a
# cluster.
set -euo pipefail

if [[ $# -lt 1 ]]; then
  echo "Usage: sbatch launch/slurm_gpu.sh CONFIG [FLAG ...]" >&2
  exit 2
fi
if [[ -z "${SLURM_JOB_ID:-}" ]]; then
  echo "slurm_gpu.sh: SLURM_JOB_ID is not set; submit this script with sbatch." >&2
  exit 2
fi
config=$1
shift

cd "${SLURM_SUBMIT_DIR:-.}"
python=${PYTHON:-python}
first_node=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)
port=${EC_JAX_COORDINATOR_PORT:-$((20000 + SLURM_JOB_ID % 10000))}

export EC_JAX_DISTRIBUTED=slurm
export EC_JAX_COORDINATOR="$first_node:$port"
export XLA_PYTHON_CLIENT_MEM_FRACTION=${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.90}

echo "slurm_gpu.sh: job $SLURM_JOB_ID, $SLURM_NNODES nodes, coordinator $EC_JAX_COORDINATOR." >&2
srun --nodes="$SLURM_NNODES" --ntasks-per-node=1 --kill-on-bad-exit=1 \
  "$python" -m experiments.best_of_n --config="$config" "$@"
