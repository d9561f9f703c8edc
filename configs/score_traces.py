"""Scoring of existing trace files: centroids, selections and a summary, without sampling.

Run from the repository root:

  python -m experiments.score_traces --config=configs/score_traces.py \
      --config.input=PATH --config.output_dir=DIR

`PATH` is a trace file (the reference implementation's `entropy_results.json(l)` or a
vLLM-style JSONL file) or an ec_jax run folder. Variants: `configs/score_traces.py:reference`
uses the 5 / 50 / 3 threshold setting; `:sweep` also scores the whole sweep grid.
"""

from __future__ import annotations

from ml_collections import config_dict

from configs import common

_VARIANTS = ("", "reference", "sweep")


def get_config(arg: str | None = None) -> config_dict.ConfigDict:
  """Return the trace-scoring config; `arg` is a comma-separated list of variants."""
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
  # Also score every setting of sweep_grid, in the same compiled call.
  config.sweep = False
  # Score in float64, which reproduces numpy's percentiles bit for bit.
  config.x64 = True
  common.add_scoring_groups(config)

  variants = [name.strip() for name in (arg or "").split(",") if name.strip()]
  for variant in variants:
    if variant == "reference":
      common.use_reference_setting(config)
    elif variant == "sweep":
      config.sweep = True
    else:
      raise ValueError(
          f"Unknown score_traces config variant {variant!r}; use one of "
          f"{[name for name in _VARIANTS if name]}, e.g. configs/score_traces.py:sweep.")
  return config
