"""The records that trace scoring writes: `centroids.jsonl`, `selected.jsonl`, `summary.json`.

The functions turn the engine's results (`ec_jax.scoring.trace_scoring`) into plain JSON-ready
dicts; NaN and infinite values become None. FORMAT.md in `ec_jax/traces` describes the keys.
"""

from __future__ import annotations

import os
import platform
from collections.abc import Mapping, Sequence
from typing import Any, TYPE_CHECKING

import jax
import numpy as np

import ec_jax
from ec_jax import config_checks
from ec_jax import traces
from ec_jax.scoring import deepconf

if TYPE_CHECKING:
  from ec_jax.scoring import trace_scoring

PHASE_CENTROID_METHODS = ("weighted_average_center", "weighted_average", "moment")
ENTROPY_KINDS = config_checks.ENTROPY_KINDS
# Per-trajectory scores in record order; null where a score is unavailable.
SCORE_NAMES = ("mean_entropy", *(f"mean_entropy_{kind}" for kind in ENTROPY_KINDS),
               "self_certainty", *deepconf.DEEPCONF_METHODS)


def gather_by_problem(values: np.ndarray, groups: traces.ProblemGroups, fill: Any) -> np.ndarray:
  """Gather `[rows]` values into a `[problems, N]` table, `fill` where a problem has no row."""
  return np.where(groups.mask, values[np.maximum(groups.rows, 0)], fill)


def _float_or_none(value: Any) -> float | None:
  value = float(value)
  return value if np.isfinite(value) else None


def centroid_records(trajectories: Sequence[traces.Trajectory], arrays: trace_scoring.TokenArrays,
                     scored: trace_scoring.ScoredTraces, options: trace_scoring.ScoringOptions) -> list[dict]:
  """Return one `centroids.jsonl` record per trajectory, in input order (NaN becomes None)."""
  scores = scored.scores
  centroids = scores.centroids[options.phase_mass]
  num_invalid = arrays.lengths - scores.num_valid
  records = []
  for row, trajectory in enumerate(trajectories):
    count = int(scores.num_phases[row, 0])
    listed = min(count, options.max_phases)
    by_method = {name: _float_or_none(centroids[name][row, 0]) for name in PHASE_CENTROID_METHODS}
    by_method["raw_entropy"] = _float_or_none(scores.raw_entropy[row])
    record = {
        "problem_id": trajectory.problem_id,
        "trajectory_index": trajectory.trajectory_index,
        "num_tokens": int(arrays.lengths[row]),
        "num_invalid": int(num_invalid[row]),
        "num_phases": count,
        "high_threshold": _float_or_none(scores.high_threshold[row, 0]),
        "low_threshold": _float_or_none(scores.low_threshold[row, 0]),
        "phases": scores.details.phases[row, :listed].tolist(),
        "centroid": by_method[options.centroid_method],
        **by_method,
    }
    for name in SCORE_NAMES:
      values = scored.per_trajectory.get(name)
      record[name] = None if values is None else _float_or_none(values[row])
    record["answer"] = trajectory.answer
    record["correct"] = trajectory.label
    if options.sweep:
      for index, setting in enumerate(options.settings[1:], start=1):
        suffix = setting.suffix
        for name in PHASE_CENTROID_METHODS:
          record[name + suffix] = _float_or_none(centroids[name][row, index])
        record["num_phases" + suffix] = int(scores.num_phases[row, index])
        record["high_threshold" + suffix] = _float_or_none(scores.high_threshold[row, index])
        record["low_threshold" + suffix] = _float_or_none(scores.low_threshold[row, index])
    records.append(record)
  return records


def selection_records(trajectories: Sequence[traces.Trajectory],
                      chosen: trace_scoring.Selections) -> list[dict]:
  """Return one `selected.jsonl` record per problem and selection method, problems outermost.

  An unanswered problem has null `trajectory_index` and `answer`, and `correct` false when the
  problem is labelled (it counts as wrong) or null when it is not.
  """
  methods = [name for name in chosen.summaries if name in chosen.selections]
  records = []
  for problem, problem_id in enumerate(chosen.groups.problem_ids):
    for name in methods:
      column = int(chosen.selections[name][problem])
      if column < 0:
        records.append({"problem_id": problem_id, "method": name, "trajectory_index": None,
                        "answer": None,
                        "correct": False if chosen.labelled[problem] else None})
        continue
      trajectory = trajectories[int(chosen.groups.rows[problem, column])]
      records.append({"problem_id": problem_id, "method": name,
                      "trajectory_index": trajectory.trajectory_index,
                      "answer": trajectory.answer, "correct": trajectory.label})
  return records


def versions() -> dict[str, str]:
  """Return the versions of ec_jax, Python and the numerical libraries, and the JAX backend."""
  import jaxlib  # pylint: disable=import-outside-toplevel
  import ml_collections  # pylint: disable=import-outside-toplevel
  return {
      "ec_jax": ec_jax.__version__,
      "python": platform.python_version(),
      "jax": jax.__version__,
      "jaxlib": jaxlib.__version__,
      "numpy": np.__version__,
      "ml_collections": getattr(ml_collections, "__version__", "unknown"),
      "backend": jax.default_backend(),
  }


def summary_record(loaded: traces.LoadedTraces, config: Any, arrays: trace_scoring.TokenArrays,
                   scored: trace_scoring.ScoredTraces, chosen: trace_scoring.Selections, options: trace_scoring.ScoringOptions,
                   timing: Mapping[str, float]) -> dict:
  """Return the `summary.json` object; times and throughputs appear only under `timing`."""
  scores = scored.scores
  centroid_column = (scores.raw_entropy if options.centroid_method == "raw_entropy" else
                     scores.centroids[options.phase_mass][options.centroid_method][:, 0])
  has_centroid = np.isfinite(centroid_column)
  problem_has_centroid = np.any(gather_by_problem(has_centroid, chosen.groups, False), axis=1)
  per_problem = chosen.groups.mask.sum(axis=1)
  trajectories = loaded.trajectories
  labelled_trajectories = sum(t.label is not None for t in trajectories)
  labels: dict[str, Any] = {
      "file": None if loaded.labels_path is None else os.fspath(loaded.labels_path),
      "labelled_trajectories": labelled_trajectories,
      "unlabelled_trajectories": len(trajectories) - labelled_trajectories,
      "labelled_problems": int(np.sum(chosen.labelled)),
      "unlabelled_problems": int(np.sum(~chosen.labelled)),
  }
  if loaded.label_match is not None:
    labels.update({
        "unused_entries": loaded.label_match.num_unused,
        "unlabelled_examples": list(loaded.label_match.unlabelled_examples),
        "unused_examples": list(loaded.label_match.unused_examples),
    })
  counts = {
      "problems": len(chosen.groups.problem_ids),
      "trajectories": len(trajectories),
      "trajectories_per_problem": {"min": int(per_problem.min()), "max": int(per_problem.max())},
      "tokens": int(arrays.lengths.sum()),
      "empty_trajectories": int(np.sum(arrays.lengths == 0)),
      "nan_positions": int(arrays.num_nan.sum() + scores.num_nan.sum()),
      "missing_positions": int(arrays.num_missing.sum()),
      "trajectories_without_centroid": int(np.sum(~has_centroid)),
      "problems_without_centroid": int(np.sum(~problem_has_centroid)),
      "trajectories_over_max_phases": int(np.sum(scores.num_phases[:, 0] > options.max_phases)),
  }
  seconds = timing.get("total_seconds", 0.0)
  timing = {**timing,
            "trajectories_per_second": len(trajectories) / seconds if seconds else None,
            "tokens_per_second": counts["tokens"] / seconds if seconds else None}
  return {
      "input": {"path": str(config.input), "read": os.fspath(loaded.path),
                "format": loaded.detected_format},
      "scoring": {
          "setting": options.settings[0].suffix[1:],
          "settings_scored": len(options.settings),
          "centroid_method": options.centroid_method,
          "phase_mass": options.phase_mass,
          "selection_entropy": options.selection_entropy,
          "entropy_source": arrays.entropy_source,
          "exact_tie_key": options.uses_exact_key,
      },
      "methods": chosen.summaries,
      "paired_difference": chosen.paired_difference,
      "counts": counts,
      "labels": labels,
      "versions": versions(),
      "timing": timing,
  }
