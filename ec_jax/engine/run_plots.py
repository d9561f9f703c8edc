"""The PNG figures of a run folder, drawn with `ec_jax.report.plots` from the run's files.

  plots/centroid_distributions.png   centroids of correct vs incorrect trajectories
  plots/accuracy_vs_n.png            expected accuracy with n of the N trajectories
  plots/token_entropy.png            per-token entropy with phases, for a few trajectories

The figures carry no timestamps, so equal inputs give byte-identical files.
"""

from __future__ import annotations

import pathlib
from collections.abc import Mapping, Sequence

import numpy as np

from ec_jax.engine import batches as batches_lib
from ec_jax.engine import run_folder
from ec_jax.engine import summary as summary_lib
from ec_jax.report import plots
from ec_jax.traces import shards

CENTROIDS_PLOT = "centroid_distributions.png"
ACCURACY_PLOT = "accuracy_vs_n.png"
ENTROPY_PLOT = "token_entropy.png"
# Methods drawn in the accuracy-vs-n figure (the summary lists every curve method).
PLOTTED_METHODS = ("pass@1", "pass@n", "lowest_centroid", "lowest_centroid_delta",
                   "majority_vote", "centroid_vote", "lowest_mean_entropy", "self_certainty",
                   "deepconf_lowest_window")
# Problems whose lowest- and highest-centroid trajectories are drawn in the entropy figure.
ENTROPY_PROBLEMS = 2


def entropy_examples(tables: summary_lib.RunTables) -> list[tuple[int, int]]:
  """Return the (problem, trajectory) pairs to draw.

  They are the lowest- and highest-centroid trajectories of the first ENTROPY_PROBLEMS problems
  that have centroids, or trajectory 0 of problem 0 when no trajectory has one.
  """
  chosen = []
  for p in range(len(tables.problem_ids)):
    row = tables.centroids[p]
    if not np.isfinite(row).any():
      continue
    low = int(np.nanargmin(row))
    high = int(np.nanargmax(row))
    chosen.append((p, low))
    if high != low:
      chosen.append((p, high))
    if len({problem for problem, _ in chosen}) == ENTROPY_PROBLEMS:
      break
  return chosen or [(0, 0)]


def _token_trace(folder: pathlib.Path, tables: summary_lib.RunTables, problem: int,
                 trajectory: int, batch_problems: int, entropy_key: str,
                 cache: dict[int, dict[str, np.ndarray]]) -> plots.TokenTrace:
  batch = batches_lib.batch_of_problem(problem, batch_problems)
  if batch not in cache:
    cache[batch] = shards.read_shard(shards.shard_path(folder, batch))
  arrays = cache[batch]
  problem_id = tables.problem_ids[problem]
  rows = np.flatnonzero((arrays["problem_id"] == problem_id) &
                        (arrays["trajectory_index"] == trajectory))
  if rows.size != 1:
    raise run_folder.RunFolderError(
        f"Shard of batch {batch} has {rows.size} rows of problem {problem_id!r} trajectory "
        f"{trajectory}; remove the run folder and start again.")
  row = int(rows[0])
  record = tables.records[problem][trajectory]
  length = int(arrays["lengths"][row])
  return plots.TokenTrace(
      problem_id=problem_id, trajectory_index=trajectory,
      entropy=arrays[entropy_key][row, :length].astype(np.float64), phases=record["phases"],
      high_threshold=record["high_threshold"], low_threshold=record["low_threshold"],
      correct=record["correct"], centroid=record["centroid"], num_phases=record["num_phases"])


def write_plots(output_dir: str | pathlib.Path, tables: summary_lib.RunTables,
                curves: Mapping[str, Mapping[int, dict]], options: summary_lib.ScoringOptions,
                batch_problems: int) -> list[pathlib.Path]:
  """Draw the run's figures into `<output_dir>/plots` and return the paths written."""
  folder = pathlib.Path(output_dir)
  plot_dir = folder / run_folder.PLOTS_FOLDER
  plot_dir.mkdir(parents=True, exist_ok=True)
  written = [
      plots.plot_centroid_distributions(
          tables.centroids, tables.correct, plot_dir / CENTROIDS_PLOT, present=tables.present,
          centroid_name=f"{options.centroid_method} centroid"),
      plots.plot_accuracy_vs_n({name: curves[name] for name in PLOTTED_METHODS if name in curves},
                               plot_dir / ACCURACY_PLOT,
                               title=f"Expected accuracy with n of the N = "
                               f"{options.num_samples} trajectories"),
  ]
  cache: dict[int, dict[str, np.ndarray]] = {}
  entropy_key = "entropy_" + options.selection_entropy
  traces = [_token_trace(folder, tables, p, n, batch_problems, entropy_key, cache)
            for p, n in entropy_examples(tables)]
  written.append(plots.plot_token_entropy(traces, plot_dir / ENTROPY_PLOT))
  return written

