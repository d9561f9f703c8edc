"""Ablations on saved traces: the threshold grid, centroid methods, entropies, phase masses, N.

Run from the repository root:

  python -m experiments.sweep --config=configs/sweep.py \
      --config.input=PATH --config.output_dir=DIR

`PATH` is a trace file (the reference implementation's `entropy_results.json(l)` or a
vLLM-style JSONL file) or an ec_jax run folder. Only a run folder records the `full` and
`sampling` entropies; for imported top-k traces those rows are marked unavailable. The variant
`configs/sweep.py:reference` uses the 5 / 50 / 3 threshold setting. docs/sweep.md lists the
output files.
"""

from __future__ import annotations

from ml_collections import config_dict

from configs import common

_VARIANTS = ("", "reference")


def get_config(arg: str | None = None) -> config_dict.ConfigDict:
  """Return the sweep config; `arg` is a comma-separated list of variants."""
  config = config_dict.ConfigDict()
  # A trace file or an ec_jax run folder.
  config.input = ""
  # auto, reference, vllm or ec_jax.
  config.format = "auto"
  # An evaluation_cache.json path. Empty uses the one beside the input if there is one, and
  # "none" uses only the labels stored in the traces.
  config.labels = ""
  # The results folder. It must be new or empty, or contain results of the same config, which
  # the run then replaces.
  config.output_dir = ""
  # Score in float64, which reproduces numpy's percentiles bit for bit.
  config.x64 = True
  common.add_scoring_groups(config)

  # The centroid methods compared at the configured threshold setting.
  config.centroid_methods = ("weighted_average_center", "weighted_average", "moment",
                             "raw_entropy")
  # The phase masses compared at the configured setting and centroid method.
  config.phase_masses = ("length", "entropy")
  # The entropy kinds compared. Only an ec_jax run folder records `full` and `sampling`.
  config.entropies = ("topk", "full", "sampling")
  # The n of the accuracy-vs-n curves, each in [1, N]. None (the default) takes every n.
  config.num_samples_grid = config_dict.placeholder(tuple)

  variants = [name.strip() for name in (arg or "").split(",") if name.strip()]
  for variant in variants:
    if variant == "reference":
      common.use_reference_setting(config)
    else:
      raise ValueError(
          f"Unknown sweep config variant {variant!r}; use one of "
          f"{[name for name in _VARIANTS if name]}, e.g. configs/sweep.py:reference.")
  return config
