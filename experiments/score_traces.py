r"""Score existing traces: centroids, selections and a summary, without sampling.

  python -m experiments.score_traces --config=configs/score_traces.py \
      --config.input=PATH --config.output_dir=DIR

The keys are described in configs/score_traces.py and configs/common.py, the output files in
ec_jax/traces/FORMAT.md. An invalid config or input ends the command with one error line and
exit status 1, before anything is written.
"""

from __future__ import annotations

import json
import pathlib
import sys
from collections.abc import Sequence

from absl import app
from absl import logging
import jax
from ml_collections import config_flags

from ec_jax.scoring import results_folder
from ec_jax.scoring import trace_records
from ec_jax.scoring import trace_scoring

_DEFAULT_CONFIG = pathlib.Path(__file__).resolve().parents[1] / "configs" / "score_traces.py"
_CONFIG = config_flags.DEFINE_config_file(
    "config", str(_DEFAULT_CONFIG), "Trace-scoring config file (configs/score_traces.py).",
    lock_config=True)


def main(argv: Sequence[str]) -> None:
  if len(argv) > 1:
    sys.exit(f"score_traces: error: unexpected arguments {list(argv[1:])}; pass settings as "
             "--config.KEY=VALUE.")
  config = _CONFIG.value
  # x64 must be set before the first JAX computation.
  jax.config.update("jax_enable_x64", bool(config.x64))
  for name, version in trace_records.versions().items():
    logging.info("%s %s", name, version)
  logging.info("Resolved config:\n%s",
               json.dumps(results_folder.config_json(config), indent=2, sort_keys=True))
  try:
    result = trace_scoring.run(config)
  except trace_scoring.USER_ERRORS as error:
    sys.exit(f"score_traces: error: {error}")
  logging.info("Results in %s.", result.output_dir)


if __name__ == "__main__":
  app.run(main)
