"""Ablations on saved traces without sampling again: the engine of `experiments/sweep.py`.

  input ──► main pass: configured entropy and phase mass, configured setting + sweep grid
        ──► one pass per other entropy kind and per other phase mass (configured setting)
        ──► [problems, N] centroid tables ──► `lowest_centroid` rows of each ablation
        ──► expected accuracy with n of the N trajectories (`report.accuracy_vs_n`)
        ──► sweep.json, ablations.md and PNG figures, written into a new folder at once

Every pass reads the input and scores it with `trace_scoring.score_traces`, the engine of
score_traces. One chunked call per chunk computes every centroid method under every setting of
the pass. The main pass uses exactly the options of `score_traces --config.sweep`, and each row
selects and bootstraps as score_traces does, so the threshold-grid rows equal its
`lowest_centroid@<t>/<b>/<c>` entries. docs/sweep.md describes the output files.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
import shutil
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from absl import logging
import jax
from ml_collections import config_dict
import numpy as np

from ec_jax import config_checks
from ec_jax import traces
from ec_jax.report import ablation
from ec_jax.report import accuracy_vs_n
from ec_jax.report import plots
from ec_jax.report import statistics
from ec_jax.scoring import host_selection
from ec_jax.scoring import results_folder
from ec_jax.scoring import settings as settings_lib
from ec_jax.scoring import trace_records
from ec_jax.scoring import trace_scoring
from ec_jax.traces import labels as labels_lib
from ec_jax.traces import records as records_lib

SWEEP_FILE = "sweep.json"
ABLATIONS_FILE = "ablations.md"
CONFIG_FILE = results_folder.CONFIG_FILE
CURVE_FILE = "accuracy_vs_num_samples.png"
# Methods of the accuracy-vs-n ablation, in table order.
CURVE_METHODS = ("lowest_centroid", "majority_vote", "pass@1", "pass@n")
# Ablation names in sweep.json and ablations.md, in order.
ABLATIONS = ("threshold_grid", "centroid_method", "entropy", "phase_mass", "num_samples")
ENTROPY_KINDS = config_checks.ENTROPY_KINDS
USER_ERRORS = trace_scoring.USER_ERRORS

_HEADLINE = "lowest_centroid"
_NO_ANSWERS = ("majority vote is unavailable: no trajectory has an extracted answer (neither "
               "the labels file nor the traces give one)")


def heatmap_file(consecutive_low: int) -> str:
  """Return the file name of the threshold-grid heat-map at one consecutive_low."""
  return f"threshold_grid_consecutive_low_{consecutive_low}.png"


# ---------------------------------------------------------------------------------------------
# Config checks.


def _score_traces_view(config: Any) -> config_dict.ConfigDict:
  """Return the score_traces config that a sweep config scores with: a copy with `sweep` on."""
  as_dict = config.to_dict() if hasattr(config, "to_dict") else dict(config)
  view = config_dict.ConfigDict(as_dict)
  view.sweep = True
  return view


def _problem(key: str, value: Any, rule: str, fix: str) -> str:
  return f"{key} = {value!r} is invalid: {rule}. {fix}"


def _name_list_problems(config: Any, key: str, choices: Sequence[str]) -> list[str]:
  """Check a non-empty list of distinct names, each one of `choices`."""
  if key not in config:
    return [f"{key} is missing from the config; start from configs/sweep.py's get_config() so "
            "that every key is present."]
  value = config[key]
  names = ", ".join(choices)
  if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
    return [_problem(key, value, "it must be a list of names",
                     f"Set --config.{key} to a tuple of names among {names}.")]
  if len(value) == 0:
    return [_problem(key, value, "it must not be empty",
                     f"Give --config.{key} at least one of {names}.")]
  unknown = [name for name in value if name not in choices]
  if unknown:
    fix = "Fix the spelling or remove it."
    if any(isinstance(name, str) and ("(" in name or "," in name) for name in unknown):
      # config_flags keeps a value that is not a Python literal, such as (a, b), as one string.
      fix = (f"Quote each name in a tuple, e.g. --config.{key}=\"('{choices[0]}', "
             f"'{choices[-1]}')\", or pass a single name without brackets.")
    return [_problem(key, value, f"{', '.join(map(repr, unknown))} is not one of {names}", fix)]
  repeated = sorted({name for name in value if list(value).count(name) > 1})
  if repeated:
    return [_problem(key, value, f"it lists {', '.join(map(repr, repeated))} more than once",
                     "List each name once.")]
  return []


def _num_samples_problems(config: Any) -> list[str]:
  """Check num_samples_grid: None (every n), or distinct integers >= 1."""
  key = "num_samples_grid"
  if key not in config:
    return [f"{key} is missing from the config; start from configs/sweep.py's get_config() so "
            "that every key is present."]
  value = config[key]
  if value is None:
    return []
  fix = ("Give n values such as (1, 2, 4, 8), or leave num_samples_grid unset for every n from "
         "1 to N.")
  if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
    return [_problem(key, value, "it must be a tuple of integers", fix)]
  if len(value) == 0:
    return [_problem(key, value, "it must not be empty", fix)]
  problems = []
  for index, item in enumerate(value):
    if isinstance(item, bool) or not isinstance(item, (int, np.integer)) or item < 1:
      problems.append(_problem(f"{key}[{index}]", item, "it must be an integer >= 1", fix))
  if not problems:
    repeated = sorted({int(n) for n in value if list(value).count(n) > 1})
    if repeated:
      problems.append(_problem(key, value, f"it lists {repeated} more than once",
                               "List each n once."))
  return problems


def _grid_duplicate_problems(config: Any) -> list[str]:
  """Report a sweep_grid list that repeats a value, which would score a setting twice."""
  problems = []
  for axis in ablation.SETTING_AXES:
    values = config_checks.lookup(config, f"sweep_grid.{axis}")
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence):
      continue  # reported by the shared checks
    numbers = [float(v) for v in values
               if isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool)]
    repeated = sorted({v for v in numbers if numbers.count(v) > 1})
    if repeated:
      problems.append(_problem(f"sweep_grid.{axis}", values,
                               f"it lists {', '.join(f'{v:g}' for v in repeated)} more than once",
                               "List each value once."))
  return problems


def sweep_problems(config: Any) -> list[str]:
  """Return one message per invalid value of a sweep config (the score_traces keys included)."""
  problems = config_checks.score_traces_problems(_score_traces_view(config))
  problems += _name_list_problems(config, "centroid_methods", settings_lib.CENTROID_METHODS)
  problems += _name_list_problems(config, "phase_masses", settings_lib.PHASE_MASSES)
  problems += _name_list_problems(config, "entropies", ENTROPY_KINDS)
  problems += _num_samples_problems(config)
  problems += _grid_duplicate_problems(config)
  return problems


def check_sweep_config(config: Any) -> None:
  """Raise ConfigError listing every invalid value of a sweep config."""
  problems = sweep_problems(config)
  if problems:
    raise config_checks.ConfigError(problems)


def num_samples_values(config: Any, num_samples: int) -> tuple[int, ...]:
  """Return the n of the accuracy-vs-n ablation for an input with N = `num_samples`.

  Raises:
    ConfigError: an n of `num_samples_grid` exceeds N.
  """
  if config.num_samples_grid is None:
    return tuple(range(1, num_samples + 1))
  problems = [
      _problem(f"num_samples_grid[{index}]", n,
               f"it must be at most N = {num_samples}, the most trajectories any problem of the "
               "input has",
               "Remove it, or leave num_samples_grid unset for every n from 1 to N.")
      for index, n in enumerate(config.num_samples_grid) if n > num_samples]
  if problems:
    raise config_checks.ConfigError(problems)
  return tuple(int(n) for n in config.num_samples_grid)


def sweep_options(config: Any) -> trace_scoring.ScoringOptions:
  """Return the options of the main pass: score_traces' options with the sweep grid on."""
  return trace_scoring.options_from_config(_score_traces_view(config))


# ---------------------------------------------------------------------------------------------
# Scoring passes.


@dataclasses.dataclass(frozen=True, eq=False)
class ScoredPass:
  """One read and scoring of the input under one entropy kind and phase mass.

  Attributes:
    entropy: the entropy kind behind the phases and centroids.
    phase_mass: the phase mass of the centroids.
    options: the scoring options, whose setting 0 is the configured one.
    source: the opened input (format, path, label file).
    infos: per-trajectory metadata in input order, labels as read from the traces.
    counts: lengths, NaN and missing counts, and the unavailable series.
    scored: per-trajectory scores, `[rows, settings]` centroids of every method.
    seconds: time spent reading and scoring.
  """

  entropy: str
  phase_mass: str
  options: trace_scoring.ScoringOptions
  source: trace_scoring.TraceInput
  infos: list[trace_scoring.TrajectoryInfo]
  counts: trace_scoring.TrajectoryCounts
  scored: trace_scoring.ScoredTraces
  seconds: float


def score_pass(config: Any, options: trace_scoring.ScoringOptions, *, max_rows: int,
               min_time: int, overlap: bool) -> ScoredPass:
  """Read the input and score it under `options` (`trace_scoring.score_traces`)."""
  logging.info("Scoring %s with the %s entropy and %s phase mass under %d settings.",
               config.input, options.selection_entropy, options.phase_mass,
               len(options.settings))
  started = time.perf_counter()
  source = trace_scoring.open_traces(config, options)
  with jax.enable_x64(bool(config.x64)):
    infos, counts, scored = trace_scoring.score_traces(
        source.trajectories, source.detected_format, options, max_rows=max_rows,
        min_time=min_time, overlap=overlap, name=str(source.path))
  return ScoredPass(entropy=options.selection_entropy, phase_mass=options.phase_mass,
                    options=options, source=source, infos=infos, counts=counts, scored=scored,
                    seconds=time.perf_counter() - started)


@dataclasses.dataclass(frozen=True, eq=False)
class ProblemTables:
  """Labels and answers of the input arranged by problem, shared by every pass and row.

  Attributes:
    trajectories: per-trajectory metadata in input order, with the label file's labels.
    label_match: match counts with the label file, or None without one.
    groups: rows grouped by problem, `[problems, N]`.
    correct: `[problems, N]` nested lists of True, False or None (no label or no trajectory).
    labels: `[problems, N]` bools, False where absent or unlabelled.
    labelled: `[problems]` bools, the problems that count in every accuracy.
    answers: `[problems, N]` normalised answers (None for none), or None when no trajectory has
      an answer.
  """

  trajectories: list[trace_scoring.TrajectoryInfo]
  label_match: labels_lib.LabelMatch | None
  groups: traces.ProblemGroups
  correct: list[list[bool | None]]
  labels: np.ndarray
  labelled: np.ndarray
  answers: list[list[str | None]] | None

  @property
  def num_samples(self) -> int:
    """N, the most trajectories any problem has."""
    return int(self.groups.rows.shape[1])


def problem_tables(main: ScoredPass) -> ProblemTables:
  """Attach the label file's labels to the main pass's trajectories and group them by problem.

  Raises:
    TraceScoringError: a problem has the same trajectory index twice.
  """
  infos, match = main.infos, None
  if main.source.label_cache is not None:
    infos, match = labels_lib.attach_labels(infos, main.source.label_cache,
                                            source=str(main.source.labels_path))
  try:
    groups = traces.group_by_problem([t.problem_id for t in infos],
                                     [t.trajectory_index for t in infos])
  except ValueError as error:
    raise trace_scoring.TraceScoringError(
        f"Cannot group the trajectories by problem: {error}.") from error
  correct = [[infos[row].label if row >= 0 else None for row in rows] for rows in groups.rows]
  answers = [[trace_scoring.normalise_answer(infos[row].answer) if row >= 0 else None
              for row in rows] for rows in groups.rows]
  has_answers = any(answer is not None for row in answers for answer in row)
  labels, labelled = host_selection.correctness_labels(correct, groups.mask)
  logging.info("Read %d trajectories of %d problems (N = %d); %d problems are fully labelled.",
               len(infos), len(groups.problem_ids), groups.rows.shape[1], int(np.sum(labelled)))
  return ProblemTables(trajectories=infos, label_match=match, groups=groups, correct=correct,
                       labels=labels, labelled=labelled,
                       answers=answers if has_answers else None)


def _check_same_trajectories(main: ScoredPass, other: ScoredPass) -> None:
  if [t.key for t in main.infos] != [t.key for t in other.infos]:
    raise trace_scoring.TraceScoringError(
        f"{main.source.path} gave other trajectories when read for the {other.entropy} entropy "
        f"than for the {main.entropy} entropy; the input changed while it was read, or its "
        "entropy arrays cover different trajectories. Rerun on an input that is not being "
        "written.")


# ---------------------------------------------------------------------------------------------
# Rows.


def centroid_table(scored: ScoredPass, groups: traces.ProblemGroups, method: str,
                   setting: int = 0
                   ) -> tuple[np.ndarray, host_selection.HostExactKey | None]:
  """Return a pass's `[problems, N]` centroids of one method and setting, and their exact key.

  The exact integer key orders the headline centroid with the length mass, as score_traces does
  (`ScoringOptions.uses_exact_key`). Other centroids are ordered by their float values.
  """
  scores = scored.scored.scores
  if method == "raw_entropy":
    values = scores.raw_entropy
  else:
    values = scores.centroids[scored.phase_mass][method][:, setting]
  table = trace_records.gather_by_problem(np.asarray(values, np.float64), groups, np.nan)
  if scored.phase_mass != "length" or method != "weighted_average_center":
    return table, None
  key = (trace_records.gather_by_problem(scores.center_numerator[:, setting], groups, 0),
         trace_records.gather_by_problem(scores.center_denominator[:, setting], groups, 0))
  return table, key


def selection_row(axes: Mapping[str, Any], chosen: np.ndarray, tables: ProblemTables,
                  options: trace_scoring.ScoringOptions) -> dict[str, Any]:
  """Return an ablation row of a selection: the axes, accuracy, interval and counts.

  The counts and the bootstrap interval are those of score_traces' summary entries: the same
  labelled problems, resampled with `bootstrap.samples` and `bootstrap.seed`.

  Args:
    axes: axis name -> value, e.g. {"centroid_method": "moment"}.
    chosen: `[problems]` chosen column per problem, -1 for unanswered.
    tables: the labels.
    options: the bootstrap settings.
  """
  labels, labelled = tables.labels, tables.labelled
  picked = np.take_along_axis(labels, np.maximum(chosen, 0)[:, None], axis=-1)[:, 0]
  hits = picked & (chosen >= 0)
  per_problem = np.where(labelled, hits.astype(np.float64), np.nan)
  total = int(np.sum(labelled))
  correct = int(np.sum(hits[labelled]))
  interval = statistics.bootstrap_interval(per_problem, samples=options.bootstrap_samples,
                                           seed=options.bootstrap_seed)
  return {
      **axes,
      "accuracy": correct / total if total else None,
      "interval": None if interval is None else list(interval),
      "correct": correct,
      "total": total,
      "unanswered": int(np.sum(labelled & (chosen < 0))),
      "unlabelled": int(np.sum(~labelled)),
  }


def lowest_centroid_row(axes: Mapping[str, Any], scored: ScoredPass, tables: ProblemTables,
                        method: str, setting: int = 0) -> dict[str, Any]:
  """Return the row of `lowest_centroid` under one pass, centroid method and setting."""
  centroids, key = centroid_table(scored, tables.groups, method, setting)
  chosen = host_selection.select_lowest_host(centroids, tables.groups.mask, key)
  return selection_row(axes, chosen, tables, scored.options)


def threshold_grid_rows(main: ScoredPass, tables: ProblemTables) -> list[dict[str, Any]]:
  """Return a row per sweep-grid setting (settings 1 and later of the main pass)."""
  method = main.options.centroid_method
  return [lowest_centroid_row(ablation.setting_axes(setting), main, tables, method, index)
          for index, setting in enumerate(main.options.settings[1:], start=1)]


def centroid_method_rows(main: ScoredPass, tables: ProblemTables,
                         methods: Sequence[str]) -> list[dict[str, Any]]:
  """Return a row per centroid method at the configured setting."""
  return [lowest_centroid_row({"centroid_method": method}, main, tables, method)
          for method in methods]


def num_samples_rows(main: ScoredPass, tables: ProblemTables,
                     n_values: Sequence[int]) -> list[dict[str, Any]]:
  """Return rows {method, num_samples, ...} of the expected accuracy with n trajectories.

  `lowest_centroid` uses the configured centroid (with its exact key), and `majority_vote`
  the normalised answers. An estimated point is marked `estimate`, with its random subsets per
  problem under `samples`.
  """
  options = main.options
  centroids, key = centroid_table(main, tables.groups, options.centroid_method)
  rows: list[dict[str, Any]] = []
  for method in CURVE_METHODS:
    if method == "majority_vote" and tables.answers is None:
      rows.append({"method": method, "unavailable": _NO_ANSWERS})
      continue
    headline = method == _HEADLINE
    rows += ablation.num_samples_rows(
        tables.correct, n_values, method=method, present=tables.groups.mask,
        centroids=centroids if headline else None, exact_key=key if headline else None,
        answers=tables.answers if method == "majority_vote" else None,
        bootstrap_samples=options.bootstrap_samples, bootstrap_seed=options.bootstrap_seed,
        seed=options.seed)
  return rows


# ---------------------------------------------------------------------------------------------
# The Markdown page.


def _rows_markdown(rows: Sequence[Mapping[str, Any]], axes: Sequence[str]) -> str:
  """Return the available rows as a Markdown table, then a list of the unavailable ones."""
  available = [row for row in rows if "unavailable" not in row]
  unavailable = []
  for row in rows:
    if "unavailable" in row:
      name = ", ".join(f"{axis} {row[axis]}" for axis in axes if axis in row)
      unavailable.append(f"- {name}: {row['unavailable']}.")
  parts = []
  if available:
    parts.append(ablation.format_ablation_table(available, axes))
  if unavailable:
    parts.append("\n".join(unavailable))
  return "\n\n".join(parts)


def ablations_markdown(report: Mapping[str, Any]) -> str:
  """Return the text of ablations.md from the sweep.json object."""
  scoring = report["scoring"]
  counts = report["counts"]
  labels = report["labels"]
  bootstrap = scoring["bootstrap"]
  figures = report["figures"]
  ablations = report["ablations"]
  lines = [
      "# Ablations of the entropy centroid",
      "",
      f"Input: `{report['input']['path']}` ({report['input']['format']}), "
      f"{counts['problems']} problems with up to N = {counts['num_samples']} trajectories "
      f"each. {labels['labelled_problems']} fully labelled problems count in every accuracy; "
      f"{labels['unlabelled_problems']} problems with an unlabelled trajectory are left out.",
      "",
      f"Unless a section varies it: threshold setting {scoring['setting']} (top percent / "
      f"bottom percent / consecutive low), centroid method `{scoring['centroid_method']}`, "
      f"phase mass `{scoring['phase_mass']}`, entropy `{scoring['selection_entropy']}`.",
      "",
      f"Each row gives the accuracy of `{_HEADLINE}` (the trajectory with the lowest centroid "
      "per problem) in percent, with a 95 % bootstrap interval over problems "
      f"({bootstrap['samples']} resamples, seed {bootstrap['seed']}). A problem where no "
      "trajectory has a centroid is unanswered and counts as wrong.",
      "",
      "## Threshold grid",
      "",
      _rows_markdown(ablations["threshold_grid"], ablation.SETTING_AXES),
      "",
      "Heat-maps of top percent by bottom percent, one per consecutive low: "
      + ", ".join(f"`{name}`" for name in figures["threshold_grid"]) + ".",
      "",
      "## Centroid method",
      "",
      _rows_markdown(ablations["centroid_method"], ("centroid_method",)),
      "",
      "## Entropy",
      "",
      "The entropy behind the thresholds, phases and centroids. Only an ec_jax run folder "
      "records `full` and `sampling`.",
      "",
      _rows_markdown(ablations["entropy"], ("entropy",)),
      "",
      "## Phase mass",
      "",
      "`length`: a phase weighs its duration; `entropy`: the summed entropy of its tokens.",
      "",
      _rows_markdown(ablations["phase_mass"], ("phase_mass",)),
      "",
      "## Accuracy with n of the N trajectories",
      "",
      "The expected accuracy when each problem offers a uniformly random n of its "
      "trajectories (all of them when it has fewer than n). It is exact for "
      "`lowest_centroid`, `pass@1` and `pass@n`. For `majority_vote` every n-subset is "
      "evaluated while there are at most "
      f"{scoring['curve']['max_subsets']}, otherwise {scoring['curve']['samples']} seeded "
      f"random subsets per problem (seed {scoring['curve']['seed']}), marked as an estimate.",
      "",
      _rows_markdown(ablations["num_samples"], ("method", "num_samples")),
      "",
      f"Curve: `{figures['num_samples']}`.",
      "",
  ]
  return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# Figures and the results folder.


def write_figures(folder: pathlib.Path, report: Mapping[str, Any]) -> None:
  """Draw the threshold-grid heat-maps and the accuracy-vs-n curve into `folder`."""
  grid_rows = report["ablations"]["threshold_grid"]
  lows = sorted({row["consecutive_low"] for row in grid_rows})
  for low in lows:
    data = ablation.heatmap_data(grid_rows, "top_percent", "bottom_percent",
                                 fixed={"consecutive_low": low})
    plots.plot_ablation_heatmap(
        data, folder / heatmap_file(low),
        title=f"{_HEADLINE} accuracy (%), consecutive_low = {low}")
  curves: dict[str, dict[int, Mapping[str, Any]]] = {}
  for row in report["ablations"]["num_samples"]:
    if "unavailable" not in row:
      curves.setdefault(row["method"], {})[row["num_samples"]] = row
  plots.plot_accuracy_vs_n(curves, folder / report["figures"]["num_samples"],
                           title="Expected accuracy with n of the N trajectories")


def write_results(output_dir: str | os.PathLike[str], requested: Mapping[str, Any],
                  write: Callable[[pathlib.Path], None]) -> pathlib.Path:
  """Fill a temporary folder beside `output_dir` with `write(folder)`, then rename it there.

  The rules of `results_folder.write_results_folder`: an existing results folder of the same
  config is replaced, and on an exception `output_dir` is left as it was.

  NOTE: this repeats `results_folder.write_results_folder`, which writes only JSON and JSONL
  files, because the sweep also writes Markdown and PNG files.
  """
  folder = pathlib.Path(output_dir)
  folder.parent.mkdir(parents=True, exist_ok=True)
  temporary = _new_hidden_folder(folder, "tmp")
  try:
    write(temporary)
    results_folder.check_output_folder(folder, requested)
    if folder.exists():
      aside = _new_hidden_folder(folder, "old")
      os.replace(folder, aside / folder.name)
      try:
        os.replace(temporary, folder)
      except BaseException:
        os.replace(aside / folder.name, folder)
        aside.rmdir()
        raise
      shutil.rmtree(aside)
    else:
      os.replace(temporary, folder)
  except BaseException:
    shutil.rmtree(temporary, ignore_errors=True)
    raise
  return folder


def _new_hidden_folder(folder: pathlib.Path, kind: str) -> pathlib.Path:
  """Create a folder `.<name>.<kind>-<random>` beside `folder`."""
  while True:
    candidate = folder.parent / f".{folder.name}.{kind}-{uuid.uuid4().hex[:12]}"
    try:
      candidate.mkdir()
    except FileExistsError:
      continue
    return candidate


# ---------------------------------------------------------------------------------------------
# The whole sweep.


@dataclasses.dataclass(frozen=True)
class SweepResult:
  """The results folder of a sweep and the sweep.json object written into it."""

  output_dir: pathlib.Path
  report: dict


def _labels_record(tables: ProblemTables, labels_path: pathlib.Path | None) -> dict[str, Any]:
  labelled_trajectories = sum(t.label is not None for t in tables.trajectories)
  record: dict[str, Any] = {
      "file": None if labels_path is None else os.fspath(labels_path),
      "labelled_trajectories": labelled_trajectories,
      "unlabelled_trajectories": len(tables.trajectories) - labelled_trajectories,
      "labelled_problems": int(np.sum(tables.labelled)),
      "unlabelled_problems": int(np.sum(~tables.labelled)),
  }
  if tables.label_match is not None:
    record["unused_entries"] = tables.label_match.num_unused
    record["unlabelled_examples"] = list(tables.label_match.unlabelled_examples)
  return record


class _Passes:
  """Scores the passes the ablations need, each (entropy, phase mass) pair once."""

  def __init__(self, config: Any, main: ScoredPass, layout: Mapping[str, Any]):
    self._config = config
    self._layout = dict(layout)
    self.main = main
    self.scored = {(main.entropy, main.phase_mass): main}

  def get(self, entropy: str, phase_mass: str) -> ScoredPass:
    key = (entropy, phase_mass)
    if key not in self.scored:
      # The other passes score the configured setting only; the grid belongs to the main pass.
      options = dataclasses.replace(self.main.options, selection_entropy=entropy,
                                    phase_mass=phase_mass,
                                    settings=self.main.options.settings[:1], sweep=False)
      scored = score_pass(self._config, options, **self._layout)
      _check_same_trajectories(self.main, scored)
      self.scored[key] = scored
    return self.scored[key]


def _entropy_rows(passes: _Passes, tables: ProblemTables,
                  entropies: Sequence[str]) -> list[dict[str, Any]]:
  main = passes.main
  method = main.options.centroid_method
  rows = []
  for kind in entropies:
    reason = main.counts.unavailable.get(f"entropy_{kind}")
    if kind != main.entropy and reason is not None:
      rows.append({"entropy": kind, "unavailable": reason})
      continue
    rows.append(lowest_centroid_row({"entropy": kind}, passes.get(kind, main.phase_mass),
                                    tables, method))
  return rows


def _phase_mass_rows(passes: _Passes, tables: ProblemTables,
                     masses: Sequence[str]) -> list[dict[str, Any]]:
  main = passes.main
  return [lowest_centroid_row({"phase_mass": mass}, passes.get(main.entropy, mass), tables,
                              main.options.centroid_method)
          for mass in masses]


def run(config: Any, *, max_rows: int = trace_scoring.CHUNK_ROWS,
        min_time: int = trace_scoring.MIN_TIME, overlap: bool = True) -> SweepResult:
  """Score the ablations named by a sweep config and write the results folder.

  Args:
    config: a sweep config (configs/sweep.py).
    max_rows, min_time, overlap: the chunk layout and threading of
      `trace_scoring.score_traces`; the results do not depend on them.

  Raises:
    ConfigError: the config is invalid (nothing is read), or an n of num_samples_grid exceeds
      the input's N (nothing is written).
    results_folder.OutputFolderError: `output_dir` contains other results (nothing is read).
    TraceFormatError, FileNotFoundError: the input or the labels file is malformed or missing.
    TraceScoringError: the traces cannot be scored as configured.
  """
  check_sweep_config(config)
  requested = results_folder.config_json(config)
  results_folder.check_output_folder(config.output_dir, requested)
  started = time.perf_counter()
  layout = {"max_rows": max_rows, "min_time": min_time, "overlap": overlap}

  main = score_pass(config, sweep_options(config), **layout)
  tables = problem_tables(main)
  n_values = num_samples_values(config, tables.num_samples)
  passes = _Passes(config, main, layout)
  ablations = {
      "threshold_grid": threshold_grid_rows(main, tables),
      "centroid_method": centroid_method_rows(main, tables, tuple(config.centroid_methods)),
      "entropy": _entropy_rows(passes, tables, tuple(config.entropies)),
      "phase_mass": _phase_mass_rows(passes, tables, tuple(config.phase_masses)),
  }
  rows_at = time.perf_counter()
  ablations["num_samples"] = num_samples_rows(main, tables, n_values)
  curves_at = time.perf_counter()

  report = _report(config, main, tables, passes, ablations)
  report["timing"] = {
      "passes": [{"entropy": p.entropy, "phase_mass": p.phase_mass, "seconds": p.seconds}
                 for p in passes.scored.values()],
      "num_samples_seconds": curves_at - rows_at,
  }

  def write(folder: pathlib.Path) -> None:
    write_figures(folder, report)
    text = ablations_markdown(report).encode("utf-8")
    records_lib.write_bytes_atomic(folder / ABLATIONS_FILE, lambda file: file.write(text))
    report["timing"]["total_seconds"] = time.perf_counter() - started
    traces.write_json_atomic(folder / SWEEP_FILE, report)
    traces.write_json_atomic(folder / CONFIG_FILE, requested)

  output = write_results(config.output_dir, requested, write)
  logging.info("Wrote %s, %s and %d figures to %s.", SWEEP_FILE, ABLATIONS_FILE,
               len(report["figures"]["threshold_grid"]) + 1, output)
  _log_headline(ablations)
  return SweepResult(output_dir=output, report=report)


def _report(config: Any, main: ScoredPass, tables: ProblemTables, passes: _Passes,
            ablations: Mapping[str, list]) -> dict[str, Any]:
  """Return the sweep.json object without its timing."""
  options = main.options
  lows = sorted({row["consecutive_low"] for row in ablations["threshold_grid"]})
  return {
      "input": {"path": str(config.input), "read": os.fspath(main.source.path),
                "format": main.source.detected_format},
      "labels": _labels_record(tables, main.source.labels_path),
      "scoring": {
          "setting": options.settings[0].suffix[1:],
          "centroid_method": options.centroid_method,
          "phase_mass": options.phase_mass,
          "selection_entropy": options.selection_entropy,
          "exact_tie_key": options.uses_exact_key,
          "bootstrap": {"samples": options.bootstrap_samples, "seed": options.bootstrap_seed},
          "curve": {"max_subsets": accuracy_vs_n.DEFAULT_MAX_SUBSETS,
                    "samples": accuracy_vs_n.DEFAULT_SAMPLES, "seed": options.seed},
          "passes": [{"entropy": p.entropy, "phase_mass": p.phase_mass,
                      "settings": len(p.options.settings)} for p in passes.scored.values()],
      },
      "counts": {
          "problems": len(tables.groups.problem_ids),
          "trajectories": len(tables.trajectories),
          "num_samples": tables.num_samples,
          "tokens": int(main.counts.lengths.sum()),
      },
      "ablations": dict(ablations),
      "figures": {"threshold_grid": [heatmap_file(low) for low in lows],
                  "num_samples": CURVE_FILE},
      "versions": trace_records.versions(),
  }


def _log_headline(ablations: Mapping[str, list]) -> None:
  for name in ("centroid_method", "entropy", "phase_mass"):
    for row in ablations[name]:
      if row.get("accuracy") is not None:
        axis = next(key for key in row if key not in ablation.RESULT_KEYS)
        logging.info("%s %s: %s accuracy %.4f over %d problems.", name, row[axis], _HEADLINE,
                     row["accuracy"], row["total"])
