r"""Sample N answers per problem, select one with every method, grade and summarise.

  python -m experiments.best_of_n --config=configs/best_of_n.py[:VARIANTS] \
      [--config.KEY=VALUE ...]

The keys are described in configs/best_of_n.py and configs/common.py, the output files in
ec_jax/traces/FORMAT.md. Rerunning the same command resumes its output_dir. An invalid config
ends the command with one error line and exit status 1, before anything is written.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence

from absl import app
from absl import logging
from ml_collections import config_flags

from ec_jax import parallel
from ec_jax.engine import run as run_lib
from ec_jax.scoring import results_folder

# No default file: config_flags applies overrides of a default while this module is imported,
# where an unknown key could only end in a traceback.
_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "best_of_n config file: configs/best_of_n.py[:VARIANTS].", lock_config=True)


def parse_flags(argv: list[str]) -> list[str]:
  """Parse the flags, reporting an override of an unknown config key as one error line."""
  try:
    return app.parse_flags_with_usage(argv)
  except (AttributeError, KeyError) as error:
    # config_flags raises these for a key that the config does not have, e.g. a typo.
    # A KeyError's str() quotes its message and escapes quotes inside, and config_flags wraps
    # one KeyError's str() in another, so undo the quoting before printing.
    detail = str(error)
    while len(detail) > 1 and detail[0] == detail[-1] and detail[0] in "'\"":
      detail = detail[1:-1].replace("\\'", "'")
    detail = " ".join(detail.replace("\\n", " ").split()).rstrip(".")
    ending = "" if detail.endswith("?") else "."
    sys.exit(f"best_of_n: error: invalid config override: {detail}{ending} The keys are listed "
             "in configs/best_of_n.py and configs/common.py.")


def main(argv: Sequence[str]) -> None:
  if len(argv) > 1:
    sys.exit(f"best_of_n: error: unexpected arguments {list(argv[1:])}; pass settings as "
             "--config.KEY=VALUE.")
  config = _CONFIG.value
  if config is None:
    sys.exit("best_of_n: error: no config file given; pass --config=configs/best_of_n.py.")
  parallel.initialize()
  logging.info("Resolved config:\n%s",
               json.dumps(results_folder.config_json(config), indent=2, sort_keys=True))
  try:
    result = run_lib.run(config)
  except run_lib.USER_ERRORS as error:
    sys.exit(f"best_of_n: error: {error}")
  logging.info("Run folder: %s", result.output_dir)


if __name__ == "__main__":
  app.run(main, flags_parser=parse_flags)
