"""Configuration groups shared by every command that scores trajectories.

The main job, trace scoring and sweeps add these keys to their own, so the same names and
defaults hold everywhere. `ec_jax.config_checks` validates them.
"""

from __future__ import annotations

from ml_collections import config_dict

# The headline threshold setting of the method: top 1 %, bottom 80 %, two low tokens.
DEFAULT_PHASES = {"top_percent": 1.0, "bottom_percent": 80.0, "consecutive_low": 2,
                  "max_phases": 256}
# The reference implementation's sweep grid, 3 x 3 x 3 settings.
DEFAULT_SWEEP_GRID = {"top_percent": (1.0, 3.0, 5.0), "bottom_percent": (30.0, 50.0, 80.0),
                      "consecutive_low": (2, 3, 5)}


def add_scoring_groups(config: config_dict.ConfigDict) -> config_dict.ConfigDict:
  """Add the scoring keys and groups to `config` in place and return it.

  Keys:
    entropy_k: k of the top-k entropy and of the DeepConf confidence (vLLM-style traces keep
      the k largest log-probabilities per token).
    selection_entropy: the entropy behind phases, centroids and `lowest_mean_entropy`: `topk`,
      `full` or `sampling`. Imported top-k traces only have `topk`.
    seed: seed of the `random` pick and of the cross-validation folds.
    pass_k: the k of the pass@k rows; k >= N is skipped with a log line.
    phases: the threshold setting (percentages in [0, 100], consecutive_low >= 1) and the
      number of phases listed per trajectory (counts and centroids stay exact beyond it).
    centroid_method: `weighted_average_center`, `weighted_average`, `moment` or `raw_entropy`.
    phase_mass: `length` (phase duration) or `entropy` (summed entropy of the phase).
    delta: the fixed delta of `lowest_centroid_delta`, in centroid units.
    cv_folds: K of the cross-validated delta (leave-one-out with fewer problems).
    centroid_vote_fraction: share of the lowest centroids that vote in `centroid_vote`.
    deepconf: `window` and `tail` of the DeepConf scores, in tokens.
    bootstrap: `samples` and `seed` of the bootstrap intervals.
    sweep_grid: lists of top_percent, bottom_percent and consecutive_low values.
  """
  config.entropy_k = 10
  config.selection_entropy = "topk"
  config.seed = 0
  config.pass_k = (2, 4, 8, 16, 32)
  config.phases = config_dict.ConfigDict(dict(DEFAULT_PHASES))
  config.centroid_method = "weighted_average_center"
  config.phase_mass = "length"
  config.delta = 0.10
  config.cv_folds = 5
  config.centroid_vote_fraction = 0.3
  # DeepConf's sizes for long traces. Short traces need smaller ones.
  config.deepconf = config_dict.ConfigDict({"window": 2048, "tail": 2048})
  config.bootstrap = config_dict.ConfigDict({"samples": 10_000, "seed": 0})
  config.sweep_grid = config_dict.ConfigDict(dict(DEFAULT_SWEEP_GRID))
  return config


def use_reference_setting(config: config_dict.ConfigDict) -> config_dict.ConfigDict:
  """Switch the threshold setting to 5 / 50 / 3, the default of parts of the reference code."""
  config.phases.top_percent = 5.0
  config.phases.bottom_percent = 50.0
  config.phases.consecutive_low = 3
  return config
