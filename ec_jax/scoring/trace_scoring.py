"""Scoring of imported traces: from trajectories to per-trajectory records, selections, a summary.

  trajectories ──► pack in row chunks ──► top-k statistics (one jit per chunk shape)
      ──► one jitted call: thresholds, phases, centroids of every setting, DeepConf, means
      ──► [problems, N] tables ──► selection rules ──► bootstrap ──► records and summary

Setting 0 is the configured threshold setting; with a sweep the grid follows in the same call.
The command `experiments/score_traces.py` and the sweep command share this module. The records
are built in `trace_records` and written by `results_folder`; FORMAT.md in `ec_jax/traces`
describes them.
"""

from __future__ import annotations

import dataclasses
import functools
import pathlib
import time
import zlib
from collections.abc import Mapping, Sequence
from typing import Any

from absl import logging
import jax
import jax.numpy as jnp
import numpy as np

from ec_jax import config_checks
from ec_jax import traces
from ec_jax.report import summary as summary_lib
from ec_jax.scoring import deepconf
from ec_jax.scoring import phases as phases_lib
from ec_jax.scoring import pipeline
from ec_jax.scoring import results_folder
from ec_jax.scoring import selection
from ec_jax.scoring import settings as settings_lib
from ec_jax.scoring import token_stats
from ec_jax.scoring import trace_records
from ec_jax.traces import batch as batch_lib
from ec_jax.traces import detect

CENTROIDS_FILE = "centroids.jsonl"
SELECTED_FILE = "selected.jsonl"
SUMMARY_FILE = "summary.json"
CONFIG_FILE = results_folder.CONFIG_FILE
OUTPUT_FILES = (CENTROIDS_FILE, SELECTED_FILE, SUMMARY_FILE, CONFIG_FILE)

# Time axis padding, so traces of similar length share one compiled shape.
PAD_MULTIPLE = 128
# Bytes of top-k log-probabilities packed at once ([rows, time, k] float64).
TOPK_CHUNK_BYTES = 256 << 20
IMPORTED_FORMATS = (detect.REFERENCE_JSON, detect.REFERENCE_JSONL, detect.VLLM_JSONL)
ENTROPY_KINDS = config_checks.ENTROPY_KINDS
_NO_FULL_DISTRIBUTION = ("imported top-k traces record only the k largest probabilities per "
                         "token, not the full-vocabulary distribution it needs")


class TraceScoringError(ValueError):
  """Raised for input that cannot be scored as configured (the message names the fix)."""


# ---------------------------------------------------------------------------------------------
# Options.


@dataclasses.dataclass(frozen=True)
class ScoringOptions:
  """The scoring part of a resolved config, as plain values.

  Attributes:
    settings: setting 0 is the configured one; with a sweep the grid follows.
    sweep: whether settings 1 and later come from the sweep grid.
    max_phases: phases listed per trajectory.
    centroid_method: the centroid behind `centroid` and the centroid selections.
    phase_mass: `length` or `entropy`.
    selection_entropy: `topk`, `full` or `sampling`.
    entropy_k: k for vLLM-style traces.
    delta: the fixed delta of `lowest_centroid_delta`.
    cv_folds: K of `lowest_centroid_delta_cv`.
    centroid_vote_fraction: share of the lowest centroids that vote.
    deepconf_window: DeepConf window in tokens.
    deepconf_tail: DeepConf tail in tokens.
    bootstrap_samples: bootstrap resamples.
    bootstrap_seed: bootstrap seed.
    pass_k: k of the pass@k rows.
    seed: seed of `random` and of the cross-validation folds.
  """

  settings: tuple[settings_lib.PhaseSetting, ...]
  sweep: bool
  max_phases: int
  centroid_method: str
  phase_mass: str
  selection_entropy: str
  entropy_k: int
  delta: float
  cv_folds: int
  centroid_vote_fraction: float
  deepconf_window: int
  deepconf_tail: int
  bootstrap_samples: int
  bootstrap_seed: int
  pass_k: tuple[int, ...]
  seed: int

  @property
  def uses_exact_key(self) -> bool:
    """Whether selections order centroids by the exact integer fraction (length mass, headline)."""
    return self.phase_mass == "length" and self.centroid_method == "weighted_average_center"


def options_from_config(config: Any) -> ScoringOptions:
  """Read the shared scoring keys (configs/common.py) of a validated config."""
  setting = settings_lib.PhaseSetting(float(config.phases.top_percent),
                                      float(config.phases.bottom_percent),
                                      int(config.phases.consecutive_low))
  sweep = bool(config.get("sweep", False))
  grid = ()
  if sweep:
    grid = settings_lib.sweep_grid(tuple(config.sweep_grid.top_percent),
                                   tuple(config.sweep_grid.bottom_percent),
                                   tuple(config.sweep_grid.consecutive_low))
  return ScoringOptions(
      settings=(setting, *grid), sweep=sweep, max_phases=int(config.phases.max_phases),
      centroid_method=str(config.centroid_method), phase_mass=str(config.phase_mass),
      selection_entropy=str(config.selection_entropy), entropy_k=int(config.entropy_k),
      delta=float(config.delta), cv_folds=int(config.cv_folds),
      centroid_vote_fraction=float(config.centroid_vote_fraction),
      deepconf_window=int(config.deepconf.window), deepconf_tail=int(config.deepconf.tail),
      bootstrap_samples=int(config.bootstrap.samples), bootstrap_seed=int(config.bootstrap.seed),
      pass_k=tuple(int(k) for k in config.pass_k), seed=int(config.seed))


# ---------------------------------------------------------------------------------------------
# Token arrays: the [rows, time] inputs of the scoring call.


@dataclasses.dataclass(frozen=True, eq=False)
class TokenArrays:
  """Per-token inputs of every trajectory, one row per trajectory in input order.

  Attributes:
    entropies: `[rows, time]` selection entropy in nats; values where `valid` is False are
      ignored.
    valid: `[rows, time]` bool, a value is present at the position.
    lengths: `[rows]` int32 lengths L, invalid positions included.
    num_nan: `[rows]` int32 positions whose entropy was NaN in the file.
    num_missing: `[rows]` int32 positions whose entropy was null in the file.
    series: other `[rows, time]` per-token values by name (`confidence`, `self_certainty`,
      `entropy_<kind>`), NaN where absent; a name missing here is unavailable.
    unavailable: name of a series -> the reason it is unavailable.
    entropy_source: where `entropies` came from, in words.
  """

  entropies: np.ndarray
  valid: np.ndarray
  lengths: np.ndarray
  num_nan: np.ndarray
  num_missing: np.ndarray
  series: dict[str, np.ndarray]
  unavailable: dict[str, str]
  entropy_source: str

  @property
  def time(self) -> int:
    return int(self.valid.shape[1])


@jax.jit
def _topk_statistics_jit(topk_logprobs: jax.Array, topk_valid: jax.Array
                         ) -> tuple[jax.Array, jax.Array]:
  """Return `[rows, time]` top-k entropy and confidence, NaN where a position has no top-k row."""
  entropy, confidence = token_stats.topk_statistics_from_logprobs(topk_logprobs)
  nan = jnp.asarray(jnp.nan, entropy.dtype)
  return jnp.where(topk_valid, entropy, nan), jnp.where(topk_valid, confidence, nan)


def _pad_rows(array: np.ndarray, rows: int, value: float) -> np.ndarray:
  """Pad the leading axis of `array` to `rows` entries filled with `value`."""
  missing = rows - array.shape[0]
  if missing == 0:
    return array
  padding = np.full((missing, *array.shape[1:]), value, dtype=array.dtype)
  return np.concatenate([array, padding])


def _topk_width(trajectories: Sequence[traces.Trajectory]) -> int | None:
  """Return the largest top-k width, or None when a non-empty trajectory has no top-k table."""
  widths = []
  for trajectory in trajectories:
    if not trajectory.num_tokens:
      continue
    if trajectory.topk_logprobs is None:
      return None
    widths.append(trajectory.topk_logprobs.shape[1])
  return max(widths, default=None)


def _per_token_series(trajectories: Sequence[traces.Trajectory], name: str,
                      time: int) -> np.ndarray | None:
  """Stack `per_token[name]` into `[rows, time]` float64 with NaN padding, or None if absent."""
  table = np.full((len(trajectories), time), np.nan)
  for row, trajectory in enumerate(trajectories):
    if not trajectory.num_tokens:
      continue
    values = trajectory.per_token.get(name)
    if values is None:
      return None
    table[row, :trajectory.num_tokens] = values
  return table


def token_arrays(trajectories: Sequence[traces.Trajectory], detected_format: str,
                 selection_entropy: str, pad_multiple: int = PAD_MULTIPLE) -> TokenArrays:
  """Pack trajectories and derive every per-token series the scores need.

  vLLM-style traces get their entropies and DeepConf confidence from the top-k log-probabilities,
  reference traces keep the file's entropies and get confidence from `top_k_probs` when every
  trajectory has them, and ec_jax run folders supply all series from their shards. Top-k tables
  are packed in row chunks of at most TOPK_CHUNK_BYTES, padded to one shape.

  Raises:
    TraceScoringError: `selection_entropy` is not `topk` for imported top-k traces.
  """
  imported = detected_format in IMPORTED_FORMATS
  if imported and selection_entropy != "topk":
    raise TraceScoringError(
        f"selection_entropy={selection_entropy!r} is unavailable for {detected_format} traces: "
        f"{_NO_FULL_DISTRIBUTION}. Set --config.selection_entropy=topk, or score an ec_jax run "
        "folder, which records all three entropies.")
  rows = len(trajectories)
  max_length = max(trajectory.num_tokens for trajectory in trajectories)
  time = batch_lib.padded_time(max_length, pad_multiple)
  width = _topk_width(trajectories) if detected_format != detect.EC_JAX_RUN else None
  if detected_format == detect.VLLM_JSONL and width is None:
    raise TraceScoringError("vLLM-style traces need top-k log-probabilities in every record.")

  chunk_rows = rows if width is None else max(1, min(rows, TOPK_CHUNK_BYTES // (time * width * 8)))
  parts: dict[str, list[np.ndarray]] = {name: [] for name in (
      "entropies", "valid", "lengths", "num_nan", "num_missing", "topk_entropy", "confidence")}
  for start in range(0, rows, chunk_rows):
    chunk = trajectories[start:start + chunk_rows]
    # With pad_multiple = time the chunk is padded to exactly `time` positions.
    packed = traces.pack(chunk, pad_multiple=time, include_topk=width is not None)
    parts["valid"].append(packed.valid)
    parts["lengths"].append(packed.lengths)
    parts["num_nan"].append(packed.num_nan)
    parts["num_missing"].append(packed.num_missing)
    if packed.entropies is not None:
      parts["entropies"].append(packed.entropies)
    if width is not None:
      topk, topk_valid = _chunk_topk(packed, len(chunk), time, width)
      entropy, confidence = jax.device_get(_topk_statistics_jit(
          _pad_rows(topk, chunk_rows, 0.0), _pad_rows(topk_valid, chunk_rows, False)))
      parts["topk_entropy"].append(np.asarray(entropy)[:len(chunk)])
      parts["confidence"].append(np.asarray(confidence)[:len(chunk)])

  valid = np.concatenate(parts["valid"])
  series: dict[str, np.ndarray] = {}
  unavailable: dict[str, str] = {}
  if detected_format == detect.VLLM_JSONL:
    # Positions without a top-k row hold NaN; zero them so no NaN reaches masked arithmetic.
    entropies = np.where(valid, np.concatenate(parts["topk_entropy"]), 0.0)
    entropy_source = (f"top-{width} entropy computed from the file's log-probabilities")
  else:
    entropies = np.concatenate(parts["entropies"])
    entropy_source = ("the file's entropy values" if imported
                      else f"the run folder's entropy_{selection_entropy} arrays")

  if imported:
    if width is not None:
      series["confidence"] = np.concatenate(parts["confidence"])
    else:
      unavailable["confidence"] = ("some trajectory has no top_k_probs, from which the DeepConf "
                                   "confidence is computed")
    unavailable["self_certainty"] = f"self-certainty is unavailable: {_NO_FULL_DISTRIBUTION}"
    for kind in ("full", "sampling"):
      unavailable[f"entropy_{kind}"] = f"{kind} entropy is unavailable: {_NO_FULL_DISTRIBUTION}"
  else:
    names = ["confidence", "self_certainty"]
    names += [f"entropy_{kind}" for kind in ENTROPY_KINDS if kind != selection_entropy]
    for name in names:
      table = _per_token_series(trajectories, name, time)
      if table is None:
        unavailable[name] = f"the run folder has no {name} arrays"
      else:
        series[name] = table
  return TokenArrays(
      entropies=entropies, valid=valid, lengths=np.concatenate(parts["lengths"]),
      num_nan=np.concatenate(parts["num_nan"]), num_missing=np.concatenate(parts["num_missing"]),
      series=series, unavailable=unavailable, entropy_source=entropy_source)


def _chunk_topk(packed: traces.PackedTraces, rows: int, time: int,
                width: int) -> tuple[np.ndarray, np.ndarray]:
  """Return the chunk's `[rows, time, width]` top-k table and `[rows, time]` validity."""
  if packed.topk_logprobs is None:
    # Only a chunk of empty trajectories has no table.
    return np.zeros((rows, time, width)), np.zeros((rows, time), bool)
  table = packed.topk_logprobs
  if table.shape[2] < width:
    padding = np.full((rows, time, width - table.shape[2]), -np.inf)
    table = np.concatenate([table, padding], axis=2)
  return table, packed.topk_valid


# ---------------------------------------------------------------------------------------------
# The scoring call.


@functools.partial(jax.jit, static_argnames=("spec",))
def _score_jit(entropies: jax.Array, valid: jax.Array, lengths: jax.Array,
               settings: pipeline.SettingsInputs, series: dict[str, jax.Array],
               window: jax.Array, tail: jax.Array, spec: pipeline.ScoringSpec
               ) -> tuple[pipeline.TrajectoryScores, dict[str, jax.Array]]:
  """Score every trajectory under every setting, plus the per-trajectory token scores."""
  scores = pipeline.score_trajectories(entropies, valid, lengths, settings, spec)
  per_trajectory = {"mean_entropy": deepconf.mean_entropy(entropies, lengths, valid)}
  if "confidence" in series:
    per_trajectory.update(deepconf.deepconf_scores(series["confidence"], lengths,
                                                   window=window, tail=tail))
  if "self_certainty" in series:
    per_trajectory["self_certainty"] = deepconf.mean_self_certainty(series["self_certainty"],
                                                                    lengths)
  for kind in ENTROPY_KINDS:
    if f"entropy_{kind}" in series:
      per_trajectory[f"mean_entropy_{kind}"] = deepconf.mean_entropy(series[f"entropy_{kind}"],
                                                                     lengths)
  return scores, per_trajectory


@dataclasses.dataclass(frozen=True, eq=False)
class ScoredTraces:
  """Host copies of the scores of every trajectory.

  Attributes:
    scores: the pipeline's scores as numpy arrays, `[rows, settings]` unless noted.
    per_trajectory: score name -> `[rows]` float64 (NaN: no score); names that are unavailable
      are absent.
  """

  scores: pipeline.TrajectoryScores
  per_trajectory: dict[str, np.ndarray]


def score_arrays(arrays: TokenArrays, options: ScoringOptions) -> ScoredTraces:
  """Run the one jitted scoring call over all trajectories and settings."""
  if not jax.config.jax_enable_x64 and arrays.time > phases_lib.MAX_TIME_UINT32:
    raise TraceScoringError(
        f"The longest trajectory needs {arrays.time} positions, but without x64 the exact "
        f"phase sums allow at most {phases_lib.MAX_TIME_UINT32}. Set --config.x64=True.")
  dtype = jax.dtypes.canonicalize_dtype(jnp.float64)
  spec = pipeline.ScoringSpec(max_phases=options.max_phases, with_details=True,
                              phase_masses=(options.phase_mass,))
  series = {name: values.astype(dtype) for name, values in arrays.series.items()}
  start = time.perf_counter()
  scores, per_trajectory = _score_jit(
      arrays.entropies.astype(dtype), arrays.valid, arrays.lengths,
      pipeline.settings_inputs(options.settings), series,
      np.int32(options.deepconf_window), np.int32(options.deepconf_tail), spec)
  scores, per_trajectory = jax.device_get((scores, per_trajectory))
  logging.info("Scored %d trajectories under %d settings in %.2f s (compilation included).",
               arrays.lengths.shape[0], len(options.settings), time.perf_counter() - start)
  per_trajectory = {name: np.asarray(values, np.float64) for name, values in
                    per_trajectory.items()}
  per_trajectory[f"mean_entropy_{options.selection_entropy}"] = per_trajectory["mean_entropy"]
  return ScoredTraces(scores=jax.tree.map(np.asarray, scores), per_trajectory=per_trajectory)


# ---------------------------------------------------------------------------------------------
# Selections and accuracies.

# Per-trajectory score names and the selection method that uses each.
SCORE_METHODS = {
    "mean_entropy": "lowest_mean_entropy",
    "self_certainty": "self_certainty",
    **{name: name for name in deepconf.DEEPCONF_METHODS},
}
# Reason keys of TokenArrays.unavailable behind each per-trajectory score.
_SCORE_SOURCES = {
    "self_certainty": "self_certainty",
    **{name: "confidence" for name in deepconf.DEEPCONF_METHODS},
    **{f"mean_entropy_{kind}": f"entropy_{kind}" for kind in ENTROPY_KINDS},
}


def problem_uid(problem_id: str) -> int:
  """Return the problem's uid, `crc32(problem_id) & 0x7fffffff`."""
  return zlib.crc32(problem_id.encode("utf-8")) & 0x7FFFFFFF


def normalise_answer(answer: str | None) -> str | None:
  """Return the answer with outer whitespace removed and inner runs of whitespace collapsed."""
  if answer is None:
    return None
  text = " ".join(str(answer).split())
  return text or None


@dataclasses.dataclass(frozen=True, eq=False)
class Selections:
  """Every method's selections and accuracies over the problems.

  Attributes:
    groups: rows grouped by problem, `[problems, N]`.
    summaries: method -> accuracy entry (with its bootstrap interval) or {"unavailable": ...}.
    selections: method -> `[problems]` column index into `groups.rows`, -1 for unanswered.
    labelled: `[problems]` bool, the problems that count in every accuracy.
    paired_difference: `lowest_centroid` minus `pass@1` with its bootstrap interval.
  """

  groups: traces.ProblemGroups
  summaries: dict[str, dict]
  selections: dict[str, np.ndarray]
  labelled: np.ndarray
  paired_difference: dict


def _selection_entry(chosen: np.ndarray, labels: np.ndarray,
                     labelled: np.ndarray) -> tuple[dict, np.ndarray]:
  """Return the accuracy entry and per-problem scores (NaN when unlabelled) of a selection."""
  picked = np.take_along_axis(labels, np.maximum(chosen, 0)[:, None], axis=-1)[:, 0]
  hits = (picked & (chosen >= 0)).astype(np.float64)
  total = int(np.sum(labelled))
  correct = int(np.sum(hits[labelled]))
  entry = {
      "accuracy": correct / total if total else None,
      "correct": correct,
      "total": total,
      "unanswered": int(np.sum(labelled & (chosen < 0))),
      "unlabelled": int(np.sum(~labelled)),
  }
  return entry, np.where(labelled, hits, np.nan)


def select_and_evaluate(trajectories: Sequence[traces.Trajectory], scored: ScoredTraces,
                        options: ScoringOptions, unavailable: Mapping[str, str]) -> Selections:
  """Group trajectories by problem, apply every selection method and bootstrap the accuracies.

  Raises:
    TraceScoringError: a problem has the same trajectory index twice.
  """
  try:
    groups = traces.group_by_problem([t.problem_id for t in trajectories],
                                     [t.trajectory_index for t in trajectories])
  except ValueError as error:
    raise TraceScoringError(f"Cannot group the trajectories by problem: {error}.") from error
  present = groups.mask
  correct = [[trajectories[row].label if row >= 0 else None for row in problem_rows]
             for problem_rows in groups.rows]
  answers = [[normalise_answer(trajectories[row].answer) if row >= 0 else None
              for row in problem_rows] for problem_rows in groups.rows]
  has_answers = any(answer is not None for row in answers for answer in row)
  if not has_answers:
    logging.info("No trajectory has an extracted answer; the votes are unavailable.")
  scores = scored.scores
  method = options.centroid_method

  def centroid_rows(setting: int) -> np.ndarray:
    if method == "raw_entropy":
      return scores.raw_entropy
    return scores.centroids[options.phase_mass][method][:, setting]

  def exact_key(setting: int) -> tuple[np.ndarray, np.ndarray] | None:
    if not options.uses_exact_key:
      return None
    return (trace_records.gather_by_problem(scores.center_numerator[:, setting], groups, 0),
            trace_records.gather_by_problem(scores.center_denominator[:, setting], groups, 0))

  score_tables: dict[str, np.ndarray | str] = {}
  for name, method_name in SCORE_METHODS.items():
    if name in scored.per_trajectory:
      score_tables[method_name] = trace_records.gather_by_problem(scored.per_trajectory[name], groups, np.nan)
    else:
      score_tables[method_name] = unavailable[_SCORE_SOURCES[name]]

  evaluation = selection.evaluate_methods(
      present, correct, problem_uids=[problem_uid(p) for p in groups.problem_ids],
      centroids=trace_records.gather_by_problem(centroid_rows(0), groups, np.nan), exact_key=exact_key(0),
      answers=answers if has_answers else None, scores=score_tables, pass_k=options.pass_k,
      delta=options.delta, cv_folds=options.cv_folds, cv_seed=options.seed,
      centroid_vote_fraction=options.centroid_vote_fraction, seed=options.seed)
  summaries = dict(evaluation.summaries)
  if not has_answers:
    for name in selection.VOTE_METHODS:
      summaries[name] = {"unavailable": "no trajectory has an extracted answer (the labels file "
                                        "or the traces give none)"}
  selections = dict(evaluation.selections)
  problem_scores = dict(evaluation.problem_scores)
  labels, _ = selection.correctness_labels(correct, present)
  labelled = evaluation.labelled

  # Lowest mean entropy under each entropy kind (an ablation of `lowest_mean_entropy`).
  for kind in ENTROPY_KINDS:
    name = f"lowest_mean_entropy_{kind}"
    values = scored.per_trajectory.get(f"mean_entropy_{kind}")
    if values is None:
      summaries[name] = {"unavailable": unavailable[f"entropy_{kind}"]}
      continue
    chosen = selection.select_lowest_host(trace_records.gather_by_problem(values, groups, np.nan), present)
    summaries[name], problem_scores[name] = _selection_entry(chosen, labels, labelled)
    selections[name] = chosen

  # Lowest centroid under every sweep setting.
  if options.sweep:
    for index, setting in enumerate(options.settings[1:], start=1):
      name = "lowest_centroid" + setting.suffix
      chosen = selection.select_lowest_host(trace_records.gather_by_problem(centroid_rows(index), groups, np.nan), present,
                                            exact_key(index))
      summaries[name], problem_scores[name] = _selection_entry(chosen, labels, labelled)
      selections[name] = chosen

  methods = summary_lib.methods_with_intervals(summaries, problem_scores,
                                               samples=options.bootstrap_samples,
                                               seed=options.bootstrap_seed)
  difference = summary_lib.headline_difference(summaries, problem_scores,
                                               samples=options.bootstrap_samples,
                                               seed=options.bootstrap_seed)
  return Selections(groups=groups, summaries=methods, selections=selections, labelled=labelled,
                    paired_difference=difference)


# ---------------------------------------------------------------------------------------------
# The whole run.


@dataclasses.dataclass(frozen=True)
class RunResult:
  """The results folder of a run and the summary written into it."""

  output_dir: pathlib.Path
  summary: dict


def _labels_argument(labels: str) -> str | None:
  if labels == config_checks.LABELS_AUTO:
    return "auto"
  if labels == config_checks.LABELS_NONE:
    return None
  return labels


def run(config: Any) -> RunResult:
  """Score the traces named by a score_traces config and write the results folder.

  Raises:
    ConfigError: the config is invalid (nothing is read).
    results_folder.OutputFolderError: `output_dir` contains other results (nothing is read).
    TraceFormatError, FileNotFoundError: the input or the labels file is malformed or missing.
    TraceScoringError: the traces cannot be scored as configured.
  """
  config_checks.check_score_traces_config(config)
  requested = results_folder.config_json(config)
  results_folder.check_output_folder(config.output_dir, requested)
  options = options_from_config(config)
  started = time.perf_counter()

  loaded = traces.load_traces(config.input, format=config.format, k=options.entropy_k,
                              labels=_labels_argument(config.labels),
                              entropy_kind=options.selection_entropy)
  if not loaded.trajectories:
    raise TraceScoringError(f"{loaded.path} contains no trajectories; nothing to score.")
  loaded_at = time.perf_counter()

  with jax.enable_x64(bool(config.x64)):
    arrays = token_arrays(loaded.trajectories, loaded.detected_format, options.selection_entropy)
    packed_at = time.perf_counter()
    scored = score_arrays(arrays, options)
  scored_at = time.perf_counter()
  chosen = select_and_evaluate(loaded.trajectories, scored, options, arrays.unavailable)
  selected_at = time.perf_counter()

  timing = {
      "load_seconds": loaded_at - started,
      "pack_seconds": packed_at - loaded_at,
      "score_seconds": scored_at - packed_at,
      "select_seconds": selected_at - scored_at,
      "total_seconds": selected_at - started,
  }
  summary = trace_records.summary_record(loaded, config, arrays, scored, chosen, options, timing)
  files = {
      CENTROIDS_FILE: trace_records.centroid_records(loaded.trajectories, arrays, scored, options),
      SELECTED_FILE: trace_records.selection_records(loaded.trajectories, chosen),
      SUMMARY_FILE: summary,
      CONFIG_FILE: requested,
  }
  folder = results_folder.write_results_folder(config.output_dir, files, requested)
  logging.info("Wrote %s to %s.", ", ".join(files), folder)
  _log_headline(summary)
  return RunResult(output_dir=folder, summary=summary)


def _log_headline(summary: Mapping[str, Any]) -> None:
  for name in ("pass@1", "lowest_centroid"):
    entry = summary["methods"].get(name, {})
    if entry.get("accuracy") is not None:
      logging.info("%s: accuracy %.4f over %d labelled problems.", name, entry["accuracy"],
                   entry["total"])
  if summary["methods"].get("lowest_centroid", {}).get("total") == 0:
    logging.warning("No problem is fully labelled, so no accuracy was computed; pass "
                    "--config.labels=evaluation_cache.json to score selections.")


# Errors caused by the input or the config, which the command reports as one line.
USER_ERRORS = (config_checks.ConfigError, results_folder.OutputFolderError, TraceScoringError,
               traces.TraceFormatError, FileNotFoundError)
