"""Ablation tables: the accuracy of a selection under each value of one or more settings.

An entry is a pair (axes, centroids): a mapping from axis name to value, and the `[problems, N]`
centroid table computed under those settings (NaN where a trajectory has no centroid). Each
entry becomes one row {axis values..., accuracy, interval, correct, total, unanswered,
unlabelled} of `lowest_centroid`, scored on the same labels. Axis names used in ec_jax:

- `top_percent`, `bottom_percent`, `consecutive_low`: the threshold grid, from the per-trajectory
  keys `<method>@<t>/<b>/<c>` (`threshold_grid_entries`).
- `centroid_method`: `weighted_average_center`, `weighted_average`, `moment`, `raw_entropy`,
  from the keys of those names.
- `entropy`: `topk`, `full`, `sampling`, one scoring per entropy kind.
- `phase_mass`: `length`, `entropy`, one scoring per phase mass.
- `method`, `num_samples`: a method and n of the N trajectories (`num_samples_rows`).

The rows give a Markdown table (`format_ablation_table`) and the grid of a heat-map
(`heatmap_data`).
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Hashable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from ec_jax.report import accuracy_vs_n
from ec_jax.report import statistics
from ec_jax.scoring import host_selection as selection
from ec_jax.scoring import settings as settings_lib

# Keys of a row that are results rather than axes.
RESULT_KEYS = ("accuracy", "interval", "correct", "total", "unanswered", "unlabelled",
               "estimate", "samples")
SETTING_AXES = ("top_percent", "bottom_percent", "consecutive_low")

_SETTING_KEY = re.compile(r"^(?P<name>[^@]+)@(?P<top>[^/]+)/(?P<bottom>[^/]+)/(?P<low>[^/]+)$")

Entry = tuple[Mapping[str, Any], Any]


# ---------------------------------------------------------------------------------------------
# Entries from per-trajectory keys.


def parse_setting_key(key: str) -> tuple[str, settings_lib.PhaseSetting]:
  """Split a key such as `weighted_average_center@5/50/3` into its name and threshold setting."""
  match = _SETTING_KEY.match(key)
  if match is None:
    raise ValueError(
        f"Invalid setting key {key!r}; expected <name>@<top_percent>/<bottom_percent>/"
        f"<consecutive_low>, e.g. 'weighted_average_center@1/80/2'.")
  try:
    top = float(match["top"])
    bottom = float(match["bottom"])
    low = float(match["low"])
  except ValueError:
    raise ValueError(f"Invalid setting key {key!r}: the three settings must be numbers.") from None
  if not low.is_integer():
    raise ValueError(f"Invalid setting key {key!r}: consecutive_low must be an integer.")
  return match["name"], settings_lib.PhaseSetting(top, bottom, int(low))


def setting_axes(setting: settings_lib.PhaseSetting) -> dict[str, Any]:
  """Return the three threshold axes of a setting."""
  return dict(zip(SETTING_AXES,
                  (setting.top_percent, setting.bottom_percent, setting.consecutive_low)))


def threshold_grid_entries(tables: Mapping[str, Any],
                           name: str = "weighted_average_center") -> list[Entry]:
  """Return an entry per `name@<t>/<b>/<c>` key of `tables`, with the three threshold axes.

  Args:
    tables: per-trajectory key -> `[problems, N]` table; other keys are ignored.
    name: the centroid method whose settings make the grid.
  """
  entries = []
  for key, table in tables.items():
    if "@" not in key or key.split("@", 1)[0] != name:
      continue
    entries.append((setting_axes(parse_setting_key(key)[1]), table))
  if not entries:
    raise ValueError(
        f"No key of the form {name}@<top>/<bottom>/<consecutive_low> among {sorted(tables)}; "
        f"score with the sweep enabled to get the threshold grid.")
  return entries


def axis_entries(axis: str, tables: Mapping[Hashable, Any]) -> list[Entry]:
  """Return an entry per table with one axis, e.g. `axis_entries("phase_mass", {...})`."""
  return [({axis: value}, table) for value, table in tables.items()]


@dataclasses.dataclass(frozen=True)
class RecordTables:
  """Per-trajectory values of records arranged as `[problems, N]` tables.

  Attributes:
    problem_ids: the problem ids in order of first appearance.
    present: `[problems, N]` bools, true where a record exists; N is the largest
      trajectory_index + 1.
    tables: key -> `[problems, N]` float64, NaN where the value is null or the record absent;
      booleans become 1.0 and 0.0.
  """

  problem_ids: tuple[str, ...]
  present: np.ndarray
  tables: dict[str, np.ndarray]


def tables_from_records(records: Iterable[Mapping[str, Any]], keys: Sequence[str]) -> RecordTables:
  """Arrange per-trajectory records (`centroids.jsonl`, `trajectories.jsonl`) as tables.

  Args:
    records: objects with `problem_id`, `trajectory_index` and every key in `keys`.
    keys: per-trajectory keys to tabulate, e.g. `weighted_average_center@5/50/3` or `correct`.

  Raises:
    ValueError: a record lacks a key, repeats a (problem_id, trajectory_index) pair, or
      contains a value that is not a number, a bool or null.
  """
  rows: dict[str, dict[int, list[float]]] = {}
  width = 0
  for position, record in enumerate(records):
    for field in ("problem_id", "trajectory_index", *keys):
      if field not in record:
        raise ValueError(f"Record {position} has no {field!r} key; it has {sorted(record)}.")
    problem_id = str(record["problem_id"])
    index = record["trajectory_index"]
    if isinstance(index, bool) or not isinstance(index, int) or index < 0:
      raise ValueError(
          f"Record {position} has trajectory_index {index!r}; expected an integer >= 0.")
    trajectories = rows.setdefault(problem_id, {})
    if index in trajectories:
      raise ValueError(f"Record {position} repeats problem {problem_id!r} trajectory {index}.")
    trajectories[index] = [_table_value(record[key], position, key) for key in keys]
    width = max(width, index + 1)

  problem_ids = tuple(rows)
  present = np.zeros((len(problem_ids), width), dtype=bool)
  values = np.full((len(keys), len(problem_ids), width), np.nan)
  for row, problem_id in enumerate(problem_ids):
    for index, entries in rows[problem_id].items():
      present[row, index] = True
      values[:, row, index] = entries
  return RecordTables(problem_ids, present, {key: values[i] for i, key in enumerate(keys)})


def _table_value(value: Any, position: int, key: str) -> float:
  if value is None:
    return math.nan
  if isinstance(value, (bool, int, float)):
    return float(value)
  raise ValueError(
      f"Record {position} has {key} = {value!r}; expected a number, a bool or null.")


# ---------------------------------------------------------------------------------------------
# Rows.


def _axis_names(entries: Sequence[Entry]) -> tuple[str, ...]:
  """Return the axis names shared by every entry, checking that they are not result keys."""
  if not entries:
    raise ValueError("No ablation entries; give at least one (axes, centroids) pair.")
  names = tuple(entries[0][0])
  for axes, _ in entries:
    if tuple(axes) != names:
      raise ValueError(
          f"Every entry must have the same axes in the same order; got {list(axes)} and "
          f"{list(names)}.")
  clashes = sorted(set(names) & set(RESULT_KEYS))
  if clashes:
    raise ValueError(f"Axis names {clashes} are result keys of a row; rename those axes.")
  return names


def _summary_row(axes: Mapping[str, Any], per_problem: np.ndarray, unanswered: np.ndarray,
                 labelled: np.ndarray, samples: int, seed: int) -> dict[str, Any]:
  """Summarise per-problem scores (NaN unlabelled) over the labelled problems."""
  total = int(np.sum(labelled))
  correct = float(np.sum(per_problem[labelled]))
  interval = statistics.bootstrap_interval(per_problem, samples=samples, seed=seed)
  return {
      **axes,
      "accuracy": correct / total if total else None,
      "interval": None if interval is None else list(interval),
      "correct": int(correct) if correct.is_integer() else correct,
      "total": total,
      "unanswered": _count(float(np.sum(unanswered[labelled]))),
      "unlabelled": int(np.sum(~labelled)),
  }


def _count(value: float) -> int | float:
  return int(value) if value.is_integer() else value


def ablation_rows(entries: Sequence[Entry], correct, *, present=None,
                  bootstrap_samples: int = statistics.DEFAULT_SAMPLES,
                  bootstrap_seed: int = statistics.DEFAULT_SEED) -> list[dict[str, Any]]:
  """Score `lowest_centroid` under every entry, on the same problems and labels.

  Args:
    entries: (axes, centroids) pairs; centroids is `[problems, N]`, NaN for no centroid.
    correct: `[problems, N]` correctness, see `accuracy_vs_n.labels_table`. A problem with an
      unlabelled present trajectory is left out of every row and counted as unlabelled.
    present: `[problems, N]` bools; default all present.
    bootstrap_samples: resamples of each interval.
    bootstrap_seed: seed of every interval, so all rows use the same resampled problem sets.

  Returns:
    One row per entry, in order: the axes, then accuracy (None when no problem is labelled),
    interval ([low, high] or None), correct, total, unanswered and unlabelled.

  NOTE: ties between equal centroids go to the lowest index by the float values. Tables read
  from records carry no exact integer key, so rounding can rarely move such a tie (see
  `selection`).
  """
  names = _axis_names(entries)
  shape = np.shape(np.asarray(entries[0][1], dtype=np.float64))
  present = np.ones(shape, dtype=bool) if present is None else np.asarray(present, dtype=bool)
  labels, labelled = accuracy_vs_n.labels_table(correct, present)
  rows = []
  for axes, centroids in entries:
    centroids = np.asarray(centroids, dtype=np.float64)
    if centroids.shape != present.shape:
      raise ValueError(
          f"The centroids of entry {dict(axes)} have shape {centroids.shape}; expected "
          f"[problems, N] = {present.shape} like the labels.")
    chosen = selection.select_lowest_host(centroids, present)
    picked = labels[np.arange(chosen.size), np.maximum(chosen, 0)] & (chosen >= 0)
    per_problem = np.where(labelled, picked.astype(np.float64), np.nan)
    rows.append(_summary_row({name: axes[name] for name in names}, per_problem,
                             (chosen < 0).astype(np.float64), labelled, bootstrap_samples,
                             bootstrap_seed))
  return rows


def num_samples_rows(
    correct,
    n_values: Sequence[int] | None = None,
    *,
    method: str = "lowest_centroid",
    present=None,
    centroids=None,
    scores=None,
    answers: Sequence[Sequence[Hashable | None]] | None = None,
    bootstrap_samples: int = statistics.DEFAULT_SAMPLES,
    bootstrap_seed: int = statistics.DEFAULT_SEED,
    **curve_options,
) -> list[dict[str, Any]]:
  """Return rows {method, num_samples, ...} of a method's expected accuracy with n trajectories.

  Each row's accuracy is the exact expectation over random n-subsets (or an estimate, marked by
  `estimate` and `samples`; see `accuracy_vs_n`). Its interval bootstraps the per-problem
  expectations over problems.

  Args:
    correct: `[problems, N]` correctness, see `accuracy_vs_n.labels_table`.
    n_values: the n; default 1 .. N.
    method: one of `accuracy_vs_n.CURVE_METHODS`.
    present, centroids, scores, answers: the tables, as `accuracy_vs_n.accuracy_curve` takes
      them.
    bootstrap_samples: resamples of each interval.
    bootstrap_seed: seed of every interval.
    **curve_options: exact_key, delta, centroid_vote_fraction, max_subsets, samples, seed.
  """
  if n_values is None:
    n_values = range(1, np.shape(np.asarray(correct, dtype=object))[1] + 1)
  by_n = accuracy_vs_n.expected_scores_by_n(method, correct, n_values, present=present,
                                            centroids=centroids, scores=scores, answers=answers,
                                            **curve_options)
  rows = []
  for n, expected in by_n.items():
    row = _summary_row({"method": method, "num_samples": n}, expected.scores,
                       expected.unanswered, expected.labelled, bootstrap_samples, bootstrap_seed)
    estimate = bool(np.any(expected.estimated & expected.labelled))
    row["estimate"] = estimate
    row["samples"] = expected.samples if estimate else None
    rows.append(row)
  return rows


# ---------------------------------------------------------------------------------------------
# Markdown table and heat-map grid.


def _axis_text(value: Any) -> str:
  if isinstance(value, (float, np.floating)):
    return f"{float(value):g}"
  return str(value)


def _percent(value: float | None) -> str:
  return "n/a" if value is None else f"{100 * value:.1f}"


def _number_text(value: int | float) -> str:
  return f"{value:.4g}" if isinstance(value, float) else str(value)


def row_axes(rows: Sequence[Mapping[str, Any]]) -> tuple[str, ...]:
  """Return the axis names of the rows: the keys of the first row that are not results."""
  if not rows:
    raise ValueError("No ablation rows; nothing to tabulate.")
  return tuple(key for key in rows[0] if key not in RESULT_KEYS)


def format_ablation_table(rows: Sequence[Mapping[str, Any]],
                          axes: Sequence[str] | None = None) -> str:
  """Format ablation rows as a Markdown table, one line per row in the given order.

  Args:
    rows: rows of `ablation_rows` or `num_samples_rows`.
    axes: the axis columns, in order; default `row_axes(rows)`.

  Returns:
    The table with accuracy and interval in percent. An estimated accuracy is marked as an
    estimate, with the number of random subsets drawn per problem.
  """
  axes = row_axes(rows) if axes is None else tuple(axes)
  header = [*axes, "accuracy %", "95 % interval", "correct / total", "unanswered", "unlabelled"]
  lines = ["| " + " | ".join(header) + " |",
           "| " + " | ".join(["---"] * len(axes) + ["---:"] * 5) + " |"]
  for row in rows:
    missing = [axis for axis in axes if axis not in row]
    if missing:
      raise ValueError(f"Row {dict(row)} has no value for the axes {missing}.")
    accuracy = _percent(row["accuracy"])
    if row.get("estimate"):
      accuracy += f" (estimate, {row['samples']} subsets)"
    interval = row["interval"]
    interval_text = "" if interval is None else (
        f"{_percent(interval[0])} to {_percent(interval[1])}")
    cells = [*(_axis_text(row[axis]) for axis in axes), accuracy, interval_text,
             f"{_number_text(row['correct'])} / {row['total']}",
             _number_text(row["unanswered"]), str(row["unlabelled"])]
    lines.append("| " + " | ".join(cells) + " |")
  return "\n".join(lines)


@dataclasses.dataclass(frozen=True)
class HeatmapData:
  """A 2-D slice of ablation rows.

  Attributes:
    row_axis: the axis along the heat-map's rows.
    column_axis: the axis along its columns.
    row_values: the row axis values, ascending when all are numbers, else in row order.
    column_values: the column axis values, ordered likewise.
    accuracy: `[rows, columns]` float64 accuracies, NaN where no row or no labelled problem.
    fixed: the values of the other axes shared by every cell.
  """

  row_axis: str
  column_axis: str
  row_values: tuple
  column_values: tuple
  accuracy: np.ndarray
  fixed: dict[str, Any]


def _ordered_values(values: Iterable[Any]) -> tuple:
  distinct = list(dict.fromkeys(values))
  if all(isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool)
         for v in distinct):
    return tuple(sorted(distinct))
  return tuple(distinct)


def heatmap_data(rows: Sequence[Mapping[str, Any]], row_axis: str, column_axis: str,
                 fixed: Mapping[str, Any] | None = None) -> HeatmapData:
  """Arrange the rows that match `fixed` as a grid over two axes.

  Args:
    rows: ablation rows.
    row_axis: the axis of the grid's rows, e.g. `top_percent`.
    column_axis: the axis of its columns, e.g. `bottom_percent`.
    fixed: values of other axes to keep, e.g. {"consecutive_low": 2}. Every axis besides the
      two must take a single value among the kept rows.

  Raises:
    ValueError: an unknown axis, no row left, or an axis that still varies.
  """
  fixed = dict(fixed or {})
  axes = row_axes(rows)
  for axis in (row_axis, column_axis, *fixed):
    if axis not in axes:
      raise ValueError(f"Unknown axis {axis!r}; the rows have axes {list(axes)}.")
  if row_axis == column_axis:
    raise ValueError(f"row_axis and column_axis must differ, both are {row_axis!r}.")
  kept = [row for row in rows if all(row[axis] == value for axis, value in fixed.items())]
  if not kept:
    raise ValueError(f"No row has the fixed values {fixed}.")
  for axis in axes:
    if axis in (row_axis, column_axis) or axis in fixed:
      continue
    values = _ordered_values(row[axis] for row in kept)
    if len(values) > 1:
      raise ValueError(
          f"Axis {axis!r} takes the values {list(values)} among the kept rows; choose one with "
          f"fixed={{{axis!r}: value}}.")
    fixed[axis] = values[0]

  row_values = _ordered_values(row[row_axis] for row in kept)
  column_values = _ordered_values(row[column_axis] for row in kept)
  accuracy = np.full((len(row_values), len(column_values)), np.nan)
  filled = np.zeros(accuracy.shape, dtype=bool)
  for row in kept:
    i = row_values.index(row[row_axis])
    j = column_values.index(row[column_axis])
    if filled[i, j]:
      raise ValueError(
          f"Two rows share the cell {row_axis} = {row[row_axis]!r}, {column_axis} = "
          f"{row[column_axis]!r}; each setting must appear once.")
    filled[i, j] = True
    if row["accuracy"] is not None:
      accuracy[i, j] = row["accuracy"]
  return HeatmapData(row_axis, column_axis, row_values, column_values, accuracy, fixed)
