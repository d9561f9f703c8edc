#!/usr/bin/env bash
# Set up ec_jax on a fresh machine: a .venv with requirements.txt, then the embedded models named
# as arguments (none by default). Safe to run again: each step is skipped when already done.
#
# Usage: launch/setup.sh [MODEL ...]
#   MODEL: an embedded model name, e.g. smollm2-135m-instruct or qwen2.5-coder-0.5b-instruct.
# Environment: PYTHON (default python3), EC_JAX_CACHE (model cache, default ~/.cache/ec_jax).
set -euo pipefail
cd "$(dirname "$0")/.."

python=${PYTHON:-python3}
if [[ ! -x .venv/bin/python ]]; then
  "$python" -m venv .venv
fi

# Reinstall only when requirements.txt changed since the last successful install.
stamp=.venv/.requirements.sha256
want=$(sha256sum requirements.txt | cut -d' ' -f1)
if [[ ! -f "$stamp" || "$(cat "$stamp")" != "$want" ]]; then
  .venv/bin/python -m pip install --quiet --upgrade pip
  .venv/bin/python -m pip install --quiet -r requirements.txt
  echo "$want" > "$stamp"
fi

for model in "$@"; do
  .venv/bin/python -m ec_jax.weights install "$model"
done
