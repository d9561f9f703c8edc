r"""Ablations on saved traces, without sampling again.

  python -m experiments.sweep --config=configs/sweep.py \
      --config.input=PATH --config.output_dir=DIR

The keys are described in configs/sweep.py and configs/common.py, the output files in
docs/sweep.md. An invalid config or input ends the command with one error line and exit
status 1, before anything is written.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence

from absl import app
from absl import logging
import jax
from ml_collections import config_flags

from ec_jax.scoring import results_folder
from ec_jax.scoring import sweep
from ec_jax.scoring import trace_records

# No default file: config_flags applies overrides of a default while this module is imported,
# where an unknown key could only end in a traceback.
_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Sweep config file: configs/sweep.py[:VARIANTS].", lock_config=True)


def parse_flags(argv: list[str]) -> list[str]:
  """Parse the flags, reporting an override of an unknown config key as one error line."""
  try:
    return app.parse_flags_with_usage(argv)
  except (AttributeError, KeyError) as error:
    # config_flags raises these for a key that the config does not have, e.g. a typo. Their
    # text is a quoted repr of a message, so it is unquoted here.
    parts = [part.replace("\\", "").replace("'", "").strip(' "')
             for part in str(error).split("\\n")]
    detail = ". ".join(part for part in parts if part)
    if not detail.endswith(("?", ".")):
      detail += "."
    sys.exit(f"sweep: error: unknown config key: {detail} The keys are listed in "
             "configs/sweep.py and configs/common.py.")


def main(argv: Sequence[str]) -> None:
  if len(argv) > 1:
    sys.exit(f"sweep: error: unexpected arguments {list(argv[1:])}; pass settings as "
             "--config.KEY=VALUE.")
  config = _CONFIG.value
  if config is None:
    sys.exit("sweep: error: no config file given; pass --config=configs/sweep.py.")
  # x64 must be set before the first JAX computation.
  jax.config.update("jax_enable_x64", bool(config.x64))
  for name, version in trace_records.versions().items():
    logging.info("%s %s", name, version)
  logging.info("Resolved config:\n%s",
               json.dumps(results_folder.config_json(config), indent=2, sort_keys=True))
  try:
    result = sweep.run(config)
  except sweep.USER_ERRORS as error:
    sys.exit(f"sweep: error: {error}")
  logging.info("Results in %s.", result.output_dir)


if __name__ == "__main__":
  app.run(main, flags_parser=parse_flags)
