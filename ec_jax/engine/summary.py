"""The end of a run: every method's selections and accuracies, `selected.jsonl`, `summary.json`.

Everything here is computed from the files of the run folder (`trajectories.jsonl`,
`greedy.jsonl` and the shards), never from in-memory results, so a resumed run and an
uninterrupted one produce the same files. Only `summary.json`'s `timing` differs.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ec_jax import traces
from ec_jax.engine import run_folder
from ec_jax.report import accuracy_vs_n
from ec_jax.report import summary as summary_lib
from ec_jax.scoring import selection
from ec_jax.scoring import settings as settings_lib
from ec_jax.scoring import trace_records
from ec_jax.tasks import base as tasks_base
from ec_jax.traces import records as records_lib

# Selection methods scored from a per-trajectory record key.
SCORE_SOURCES = {
    "lowest_mean_entropy": "mean_entropy",
    "self_certainty": "self_certainty",
    "deepconf_tail": "deepconf_tail",
    "deepconf_mean": "deepconf_mean",
    "deepconf_lowest_window": "deepconf_lowest_window",
    "deepconf_bottom10": "deepconf_bottom10",
}


@dataclasses.dataclass(frozen=True)
class ScoringOptions:
  """The scoring keys of a validated config, as plain values."""

  centroid_method: str
  phase_mass: str
  selection_entropy: str
  settings: tuple[settings_lib.PhaseSetting, ...]
  max_phases: int
  num_samples: int
  pass_k: tuple[int, ...]
  delta: float
  cv_folds: int
  centroid_vote_fraction: float
  seed: int
  bootstrap_samples: int
  bootstrap_seed: int
  greedy: bool

  @property
  def uses_exact_key(self) -> bool:
    """Whether centroids are ordered by their exact integer fraction (length-mass headline)."""
    return self.centroid_method == "weighted_average_center" and self.phase_mass == "length"


def scoring_options(config: Any, settings: Sequence[settings_lib.PhaseSetting]) -> ScoringOptions:
  """Read the scoring options of a validated best_of_n config."""
  return ScoringOptions(
      centroid_method=str(config.centroid_method), phase_mass=str(config.phase_mass),
      selection_entropy=str(config.selection_entropy), settings=tuple(settings),
      max_phases=int(config.phases.max_phases), num_samples=int(config.num_samples),
      pass_k=tuple(int(k) for k in config.pass_k), delta=float(config.delta),
      cv_folds=int(config.cv_folds), centroid_vote_fraction=float(config.centroid_vote_fraction),
      seed=int(config.seed), bootstrap_samples=int(config.bootstrap.samples),
      bootstrap_seed=int(config.bootstrap.seed), greedy=bool(config.greedy))


@dataclasses.dataclass(frozen=True, eq=False)
class RunTables:
  """The records of a run arranged as `[problems, N]` tables, problems in run order.

  Attributes:
    problem_ids: the problems' ids.
    records: `records[p][n]`, the `trajectories.jsonl` object of trajectory n of problem p.
    present: `[problems, N]` bools (all true for a finished run).
    correct: `[problems][N]` True, False or None.
    answers: `[problems][N]` normalised answers (the task's `normalize`) or None.
    centroids: `[problems, N]` float64, NaN for no centroid.
    exact_key: the exact `(numerator, denominator)` centroid order, or None.
    scores: score method -> `[problems, N]` float64, NaN for no score.
    sweep_centroids: setting suffix -> `[problems, N]` float64 centroids.
  """

  problem_ids: tuple[str, ...]
  records: list[list[dict]]
  present: np.ndarray
  correct: list[list[bool | None]]
  answers: list[list[str | None]]
  centroids: np.ndarray
  exact_key: tuple[np.ndarray, np.ndarray] | None
  scores: dict[str, np.ndarray]
  sweep_centroids: dict[str, np.ndarray]


def _float(value: Any) -> float:
  return np.nan if value is None else float(value)


def build_tables(records: Sequence[dict], problem_ids: Sequence[str], task: tasks_base.Task,
                 options: ScoringOptions) -> RunTables:
  """Arrange the trajectory records as `[problems, N]` tables.

  Raises:
    RunFolderError: a problem lacks one of its N trajectories or has one twice.
  """
  width = options.num_samples
  index_of = {problem_id: p for p, problem_id in enumerate(problem_ids)}
  cells: list[list[dict | None]] = [[None] * width for _ in problem_ids]
  for record in records:
    p, n = index_of[record["problem_id"]], int(record["trajectory_index"])
    if cells[p][n] is not None:
      raise run_folder.RunFolderError(
          f"Problem {record['problem_id']!r} trajectory {n} has two records; remove the run "
          "folder and start again.")
    cells[p][n] = record
  for p, row in enumerate(cells):
    missing = [n for n, record in enumerate(row) if record is None]
    if missing:
      raise run_folder.RunFolderError(
          f"Problem {problem_ids[p]!r} lacks trajectories {missing}; rerun the same command to "
          "sample them.")

  def table(key: str) -> np.ndarray:
    return np.array([[_float(record[key]) for record in row] for row in cells], np.float64)

  exact_key = None
  if options.uses_exact_key:
    exact_key = tuple(np.array([[int(record[key]) for record in row] for row in cells], np.int64)
                      for key in ("center_numerator", "center_denominator"))
  answers = [[None if record["answer"] is None else task.normalize(record["answer"])
              for record in row] for row in cells]
  sweep = {}
  for setting in options.settings[1:]:
    sweep[setting.suffix] = table(options.centroid_method + setting.suffix)
  return RunTables(
      problem_ids=tuple(problem_ids), records=cells,
      present=np.ones((len(problem_ids), width), bool),
      correct=[[record["correct"] for record in row] for row in cells], answers=answers,
      centroids=table("centroid"), exact_key=exact_key,
      scores={method: table(key) for method, key in SCORE_SOURCES.items()},
      sweep_centroids=sweep)


@dataclasses.dataclass(frozen=True)
class Evaluation:
  """Every method's accuracy entry (with interval), selections and the paired difference."""

  methods: dict[str, dict]
  selections: dict[str, np.ndarray]
  labelled: np.ndarray
  paired_difference: dict


def evaluate(tables: RunTables, options: ScoringOptions,
             greedy_correct: Sequence[bool | None] | None) -> Evaluation:
  """Select with every method, score on the same problems and bootstrap the accuracies."""
  evaluation = selection.evaluate_methods(
      tables.present, tables.correct,
      problem_uids=[tasks_base.compute_problem_uid(p) for p in tables.problem_ids],
      centroids=tables.centroids, exact_key=tables.exact_key, answers=tables.answers,
      scores=tables.scores, pass_k=options.pass_k, delta=options.delta,
      cv_folds=options.cv_folds, cv_seed=options.seed,
      centroid_vote_fraction=options.centroid_vote_fraction, seed=options.seed,
      greedy_correct=greedy_correct)
  summaries = dict(evaluation.summaries)
  selections = dict(evaluation.selections)
  problem_scores = dict(evaluation.problem_scores)
  labels, _ = selection.correctness_labels(tables.correct, tables.present)
  for suffix, centroids in tables.sweep_centroids.items():
    name = "lowest_centroid" + suffix
    # NOTE: sweep settings have no exact integer key in the records, so ties between centroids
    # that round to the same float go to the lowest index.
    chosen = selection.select_lowest_host(centroids, tables.present)
    summaries[name], problem_scores[name] = _selection_entry(chosen, labels,
                                                             evaluation.labelled)
    selections[name] = chosen
  methods = summary_lib.methods_with_intervals(summaries, problem_scores,
                                               samples=options.bootstrap_samples,
                                               seed=options.bootstrap_seed)
  difference = summary_lib.headline_difference(summaries, problem_scores,
                                               samples=options.bootstrap_samples,
                                               seed=options.bootstrap_seed)
  return Evaluation(methods=methods, selections=selections, labelled=evaluation.labelled,
                    paired_difference=difference)


def _selection_entry(chosen: np.ndarray, labels: np.ndarray,
                     labelled: np.ndarray) -> tuple[dict, np.ndarray]:
  """Return the accuracy entry and per-problem scores (NaN when unlabelled) of a selection."""
  hits = np.take_along_axis(labels, np.maximum(chosen, 0)[:, None], axis=-1)[:, 0]
  per_problem = np.where(labelled, (hits & (chosen >= 0)).astype(np.float64), np.nan)
  total = int(np.sum(labelled))
  correct = int(np.nansum(per_problem))
  entry = {"accuracy": correct / total if total else None, "correct": correct, "total": total,
           "unanswered": int(np.sum(labelled & (chosen < 0))),
           "unlabelled": int(np.sum(~labelled))}
  return entry, per_problem


def selection_records(tables: RunTables, evaluation: Evaluation) -> list[dict]:
  """Return one `selected.jsonl` object per problem and selection method, problems outermost.

  An unanswered problem has null `trajectory_index` and `answer`, and `correct` false when the
  problem is labelled or null when it is not.
  """
  methods = [name for name in evaluation.methods if name in evaluation.selections]
  selected = []
  for p, problem_id in enumerate(tables.problem_ids):
    for name in methods:
      n = int(evaluation.selections[name][p])
      if n < 0:
        selected.append({"problem_id": problem_id, "method": name, "trajectory_index": None,
                         "answer": None,
                         "correct": False if evaluation.labelled[p] else None})
        continue
      record = tables.records[p][n]
      selected.append({"problem_id": problem_id, "method": name, "trajectory_index": n,
                       "answer": record["answer"], "correct": record["correct"]})
  return selected


def curve_n_values(num_samples: int) -> tuple[int, ...]:
  """Return the n of the accuracy-vs-n curves: every n up to 16, else powers of two and N."""
  if num_samples <= 16:
    return tuple(range(1, num_samples + 1))
  values = [n for n in (2**i for i in range(num_samples.bit_length())) if n <= num_samples]
  if values[-1] != num_samples:
    values.append(num_samples)
  return tuple(values)


def accuracy_curves(tables: RunTables, options: ScoringOptions) -> dict[str, dict[int, dict]]:
  """Return each curve method's expected accuracy with n of the N trajectories."""
  n_values = curve_n_values(options.num_samples)
  curves = {}
  for method in accuracy_vs_n.CURVE_METHODS:
    curves[method] = accuracy_vs_n.accuracy_curve(
        method, tables.correct, n_values, present=tables.present, centroids=tables.centroids,
        scores=tables.scores.get(method), answers=tables.answers, exact_key=tables.exact_key,
        delta=options.delta, centroid_vote_fraction=options.centroid_vote_fraction,
        seed=options.seed)
  return curves


def run_counts(tables: RunTables, options: ScoringOptions) -> dict[str, Any]:
  """Return the `counts` entry of the summary."""
  records = [record for row in tables.records for record in row]
  has_centroid = np.isfinite(tables.centroids)
  overflow = np.array([record["nucleus_overflow"] for record in records], np.int64)
  return {
      "problems": len(tables.problem_ids),
      "trajectories": len(records),
      "tokens": int(sum(record["num_tokens"] for record in records)),
      "stopped_trajectories": sum(record["finish_reason"] == "stop" for record in records),
      "length_cutoff_trajectories": sum(record["finish_reason"] == "length"
                                        for record in records),
      "trajectories_without_answer": sum(record["answer"] is None for record in records),
      "correct_trajectories": sum(record["correct"] is True for record in records),
      "unlabelled_trajectories": sum(record["correct"] is None for record in records),
      "nucleus_overflow_trajectories": int(np.sum(overflow > 0)),
      "nucleus_overflow_steps": int(np.sum(overflow)),
      "trajectories_without_centroid": int(np.sum(~has_centroid)),
      "problems_without_centroid": int(np.sum(~np.any(has_centroid, axis=1))),
      "trajectories_over_max_phases": sum(record["num_phases"] > options.max_phases
                                          for record in records),
  }


def read_greedy_correct(path: pathlib.Path, problem_ids: Sequence[str]) -> list[bool | None]:
  """Return the greedy trajectory's correctness per problem, in run order.

  Raises:
    RunFolderError: a problem has no greedy record.
  """
  by_problem = {record["problem_id"]: record["correct"] for record in traces.read_jsonl(path)}
  missing = [p for p in problem_ids if p not in by_problem]
  if missing:
    raise run_folder.RunFolderError(
        f"{path} has no greedy record of problems {missing[:5]}; rerun the same command.")
  return [by_problem[p] for p in problem_ids]


def summary_record(tables: RunTables, evaluation: Evaluation,
                   curves: Mapping[str, Mapping[int, dict]], options: ScoringOptions,
                   task: tasks_base.Task, timing: Mapping[str, Any]) -> dict[str, Any]:
  """Return the `summary.json` object; times and throughputs appear only under `timing`."""
  return {
      "task": {"name": task.name, "data_file": os.fspath(task.data_path),
               "problems": len(tables.problem_ids)},
      "scoring": {
          "setting": options.settings[0].suffix[1:],
          "settings_scored": len(options.settings),
          "centroid_method": options.centroid_method,
          "phase_mass": options.phase_mass,
          "selection_entropy": options.selection_entropy,
          "exact_tie_key": options.uses_exact_key,
      },
      "methods": evaluation.methods,
      "paired_difference": evaluation.paired_difference,
      "accuracy_vs_n": {method: {str(n): point for n, point in curve.items()}
                        for method, curve in curves.items()},
      "counts": run_counts(tables, options),
      "versions": trace_records.versions(),
      "timing": dict(timing),
  }


def write_jsonl_atomic(path: pathlib.Path, objects: Sequence[Mapping[str, Any]]) -> None:
  """Write a whole JSONL file atomically (temporary file, then rename)."""
  data = b"".join(records_lib.encode_json_line(obj) for obj in objects)
  records_lib.write_bytes_atomic(path, lambda file: file.write(data))
