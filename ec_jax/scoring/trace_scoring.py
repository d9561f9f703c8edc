"""Scoring of imported traces: from trajectories to per-trajectory records, selections, a summary.

  trace file ──► reader (one trajectory at a time) ──► chunks of fixed shape on a worker thread
      (thresholds, phases, centroids of every setting, DeepConf, means)
      ──► per-trajectory results in input order (per-token arrays are dropped)
      ──► labels by key ──► [problems, N] tables ──► selection rules ──► bootstrap ──► records

Setting 0 is the configured threshold setting; with a sweep the grid follows in the same call.
`streaming.ChunkedScorer` scores the chunks; a trajectory's results do not depend on the chunk
it lands in. The command `experiments/score_traces.py` and the sweep command share this module.
The records are built in `trace_records` and written by `results_folder`; FORMAT.md in
`ec_jax/traces` describes them.
"""

from __future__ import annotations

import dataclasses
import pathlib
import time
import zlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

from absl import logging
import jax
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
from ec_jax.scoring import streaming
from ec_jax.scoring import trace_records
from ec_jax.traces import detect
from ec_jax.traces import labels as labels_lib

CENTROIDS_FILE = "centroids.jsonl"
SELECTED_FILE = "selected.jsonl"
SUMMARY_FILE = "summary.json"
CONFIG_FILE = results_folder.CONFIG_FILE
OUTPUT_FILES = (CENTROIDS_FILE, SELECTED_FILE, SUMMARY_FILE, CONFIG_FILE)

# Chunk layout: rows per chunk for short trajectories, and the smallest time bucket. Larger
# chunks amortise the per-call overhead; the memory of a chunk grows with both.
CHUNK_ROWS = 128
MIN_TIME = 256
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
# Opening the input: format, label file, trajectory iterator.


@dataclasses.dataclass(frozen=True)
class TrajectoryInfo:
  """The metadata of one trajectory that the records and selections use (no per-token arrays).

  `labels.attach_labels` accepts it in place of a `traces.Trajectory`.
  """

  problem_id: str
  trajectory_index: int
  label: bool | None = None
  answer: str | None = None
  ground_truth: str | None = None

  @property
  def key(self) -> tuple[str, int]:
    """(problem_id, trajectory_index), the identity used to match labels."""
    return (self.problem_id, self.trajectory_index)


@dataclasses.dataclass(frozen=True, eq=False)
class TraceInput:
  """An opened trace input: trajectories still to read, and the label file to apply after.

  Attributes:
    path: the trace file or run folder that is read.
    detected_format: one of `reference_json`, `reference_jsonl`, `vllm`, `ec_jax`.
    trajectories: the trajectories in file order, read lazily (run folders are read whole).
    labels_path: the label file, or None.
    label_cache: its entries, read before the traces so that a bad label file fails first.
  """

  path: pathlib.Path
  detected_format: str
  trajectories: Iterator[traces.Trajectory]
  labels_path: pathlib.Path | None
  label_cache: Mapping[str, labels_lib.CacheEntry] | None


def _labels_argument(labels: str) -> str | None:
  if labels == config_checks.LABELS_AUTO:
    return "auto"
  if labels == config_checks.LABELS_NONE:
    return None
  return labels


def open_traces(config: Any, options: ScoringOptions) -> TraceInput:
  """Detect the input's format, read its label file, and start reading its trajectories.

  Raises:
    TraceFormatError, FileNotFoundError: the input or the label file is malformed or missing.
    TraceScoringError: `selection_entropy` is not `topk` for imported top-k traces.
  """
  path = detect.resolve_trace_path(config.input)
  trajectories = traces.iter_traces(path, format=config.format, k=options.entropy_k,
                                    entropy_kind=options.selection_entropy)
  detected_format = detect.detect_format(path)
  if detected_format in IMPORTED_FORMATS and options.selection_entropy != "topk":
    raise TraceScoringError(
        f"selection_entropy={options.selection_entropy!r} is unavailable for {detected_format} "
        f"traces: {_NO_FULL_DISTRIBUTION}. Set --config.selection_entropy=topk, or score an "
        "ec_jax run folder, which records all three entropies.")

  labels = _labels_argument(config.labels)
  if labels == "auto":
    labels_path = labels_lib.find_labels_file(path)
  elif labels is None:
    labels_path = None
  else:
    labels_path = pathlib.Path(labels)
    if not labels_path.is_file():
      raise FileNotFoundError(
          f"labels file {labels_path} does not exist; pass an evaluation_cache.json, leave "
          "labels empty to use the one beside the input, or pass labels=none")
    logging.info("Using labels from %s.", labels_path)
  cache = None if labels_path is None else labels_lib.read_evaluation_cache(labels_path)
  return TraceInput(path=path, detected_format=detected_format, trajectories=trajectories,
                    labels_path=labels_path, label_cache=cache)


# ---------------------------------------------------------------------------------------------
# Streaming the trajectories into the chunked scorer.


@dataclasses.dataclass(frozen=True, eq=False)
class TrajectoryCounts:
  """Per-trajectory counts kept while the trajectories stream past, one row each in input order.

  Attributes:
    lengths: `[rows]` int32 lengths L, invalid positions included.
    num_nan: `[rows]` int32 positions whose entropy was NaN in the file.
    num_missing: `[rows]` int32 positions whose entropy was null in the file.
    unavailable: name of a per-token series (`confidence`, `self_certainty`, `entropy_<kind>`)
      -> the reason it is unavailable.
    entropy_source: where the selection entropies came from, in words.
  """

  lengths: np.ndarray
  num_nan: np.ndarray
  num_missing: np.ndarray
  unavailable: dict[str, str]
  entropy_source: str


# NOTE: the name that trace_records' type annotations still use.
TokenArrays = TrajectoryCounts


@dataclasses.dataclass(frozen=True, eq=False)
class ScoredTraces:
  """Host copies of the scores of every trajectory.

  Attributes:
    scores: the pipeline's scores as numpy arrays, `[rows, settings]` unless noted. The phase
      list `details.phases` is `[rows, P, 2]`, with P the most phases any row lists (at most
      max_phases), and `details.phase_id` is None.
    per_trajectory: score name -> `[rows]` float64 (NaN: no score); names that are unavailable
      are absent.
  """

  scores: pipeline.TrajectoryScores
  per_trajectory: dict[str, np.ndarray]


def _run_folder_series(selection_entropy: str) -> tuple[str, ...]:
  """Return the per-token series of an ec_jax run folder that get per-trajectory means."""
  return ("self_certainty",
          *(f"entropy_{kind}" for kind in ENTROPY_KINDS if kind != selection_entropy))


class _TraceStream:
  """Turns trajectories into scorer rows, keeping only their metadata and counts.

  The scorer is created at the first trajectory with tokens, because its top-k table decides
  whether reference traces get a DeepConf confidence. Empty trajectories before it wait in a list.
  """

  def __init__(self, detected_format: str, options: ScoringOptions, max_rows: int,
               min_time: int, overlap: bool):
    self.detected_format = detected_format
    self.options = options
    self.infos: list[TrajectoryInfo] = []
    self.lengths: list[int] = []
    self.num_nan: list[int] = []
    self.num_missing: list[int] = []
    self.topk_width = 0
    # Series that some trajectory with tokens lacks (unavailable for all, as one table).
    self.lacking: set[str] = set()
    self.scorer: streaming.ChunkedScorer | None = None
    self._waiting: list[streaming.TokenRow] = []
    self._layout = {"max_rows": max_rows, "min_time": min_time}
    self._overlap = overlap
    self._series = (_run_folder_series(options.selection_entropy)
                    if detected_format == detect.EC_JAX_RUN else ())

  def add(self, trajectory: traces.Trajectory) -> None:
    self.infos.append(TrajectoryInfo(
        problem_id=trajectory.problem_id, trajectory_index=trajectory.trajectory_index,
        label=trajectory.label, answer=trajectory.answer, ground_truth=trajectory.ground_truth))
    self.lengths.append(trajectory.num_tokens)
    self.num_missing.append(int(np.count_nonzero(trajectory.missing)))
    row = self._token_row(trajectory)
    if self.scorer is None and trajectory.num_tokens:
      self._start_scorer(trajectory)
    if self.scorer is None:
      self._waiting.append(row)
    else:
      self.scorer.add(row)

  def _token_row(self, trajectory: traces.Trajectory) -> streaming.TokenRow:
    """Return the scorer row of a trajectory and count its NaN entropies."""
    length = trajectory.num_tokens
    if not jax.config.jax_enable_x64 and length > streaming.MAX_TIME_WITHOUT_X64:
      raise TraceScoringError(
          f"Problem {trajectory.problem_id!r} trajectory {trajectory.trajectory_index} has "
          f"{length} tokens, but without x64 the exact phase sums allow at most "
          f"{streaming.MAX_TIME_WITHOUT_X64}. Set --config.x64=True.")
    if self.detected_format == detect.VLLM_JSONL:
      self.num_nan.append(0)
      table = trajectory.topk_logprobs
      if table is None:
        if length:
          raise TraceScoringError(
              f"vLLM-style traces need top-k log-probabilities in every record; problem "
              f"{trajectory.problem_id!r} trajectory {trajectory.trajectory_index} has none.")
        table = np.zeros((0, self.options.entropy_k))
      if length:
        self.topk_width = max(self.topk_width, table.shape[1])
      # A position counts when its top-k row is complete; null positions are NaN rows.
      return streaming.TokenRow(entropy=None, missing=np.isnan(table).any(axis=1),
                                topk_logprobs=table)

    entropy = trajectory.entropy
    is_nan = np.isnan(entropy)
    self.num_nan.append(int(np.count_nonzero(is_nan & ~trajectory.missing)))
    # NaN entropies are invalid and counted above, so the scorer treats them as missing.
    missing = trajectory.missing | is_nan
    if self.detected_format != detect.EC_JAX_RUN:
      if length:
        if trajectory.topk_logprobs is None:
          self.lacking.add("confidence")
        else:
          self.topk_width = max(self.topk_width, trajectory.topk_logprobs.shape[1])
      return streaming.TokenRow(entropy=entropy, missing=missing,
                                topk_logprobs=trajectory.topk_logprobs)

    per_token = trajectory.per_token
    if length:
      self.lacking.update(name for name in ("confidence", *self._series)
                          if name not in per_token)
    return streaming.TokenRow(
        entropy=entropy, missing=missing, confidence=per_token.get("confidence"),
        series={name: per_token[name] for name in self._series if name in per_token})

  def _start_scorer(self, first: traces.Trajectory | None) -> None:
    """Create the scorer for the format, given the first trajectory with tokens, and feed it."""
    options = self.options
    fmt = self.detected_format
    has_topk = first is not None and first.topk_logprobs is not None
    chunk_options = streaming.ChunkOptions(
        **self._layout,
        entropy_from_topk=fmt == detect.VLLM_JSONL,
        confidence_from_topk=fmt in IMPORTED_FORMATS and has_topk,
        topk=first.topk_logprobs.shape[1] if has_topk else options.entropy_k,
        series=self._series)
    spec = pipeline.ScoringSpec(max_phases=options.max_phases, with_details=True,
                                phase_masses=(options.phase_mass,))
    self.scorer = streaming.ChunkedScorer(
        options.settings, spec, chunk_options, has_confidence=fmt == detect.EC_JAX_RUN,
        window=options.deepconf_window, tail=options.deepconf_tail, overlap=self._overlap,
        compact_phases=True)
    for row in self._waiting:
      self.scorer.add(row)
    self._waiting = []

  def finish(self) -> tuple[TrajectoryCounts, ScoredTraces]:
    """Wait for the last chunks and return the counts and scores of every trajectory."""
    if self.scorer is None:
      self._start_scorer(None)
    start = time.perf_counter()
    results = self.scorer.results()
    logging.info("Scored %d trajectories under %d settings in %d chunks (shapes compiled: %s); "
                 "%.2f s waiting after the last read.", len(self.infos),
                 len(self.options.settings), self.scorer.num_chunks, self.scorer.compiled_shapes,
                 time.perf_counter() - start)
    counts = TrajectoryCounts(
        lengths=np.asarray(self.lengths, np.int32), num_nan=np.asarray(self.num_nan, np.int32),
        num_missing=np.asarray(self.num_missing, np.int32), unavailable=self._unavailable(),
        entropy_source=self._entropy_source())
    return counts, _scored_traces(results, self.options, counts.unavailable)

  def _unavailable(self) -> dict[str, str]:
    unavailable = {}
    if self.detected_format == detect.VLLM_JSONL:
      unavailable.update(_unavailable_without_distribution())
      return unavailable
    if self.detected_format in IMPORTED_FORMATS:
      if "confidence" in self.lacking or not self.topk_width:
        unavailable["confidence"] = ("some trajectory has no top_k_probs, from which the "
                                     "DeepConf confidence is computed")
      unavailable.update(_unavailable_without_distribution())
      return unavailable
    for name in ("confidence", *self._series):
      if name in self.lacking:
        unavailable[name] = f"the run folder has no {name} arrays"
    return unavailable

  def _entropy_source(self) -> str:
    if self.detected_format == detect.VLLM_JSONL:
      return f"top-{self.topk_width} entropy computed from the file's log-probabilities"
    if self.detected_format in IMPORTED_FORMATS:
      return "the file's entropy values"
    return f"the run folder's entropy_{self.options.selection_entropy} arrays"


def _unavailable_without_distribution() -> dict[str, str]:
  """Reasons for the series that imported top-k traces cannot give."""
  unavailable = {"self_certainty": f"self-certainty is unavailable: {_NO_FULL_DISTRIBUTION}"}
  for kind in ("full", "sampling"):
    unavailable[f"entropy_{kind}"] = f"{kind} entropy is unavailable: {_NO_FULL_DISTRIBUTION}"
  return unavailable


def _scored_traces(results: Mapping[str, np.ndarray], options: ScoringOptions,
                   unavailable: Mapping[str, str]) -> ScoredTraces:
  """Arrange the scorer's per-row results as pipeline scores and per-trajectory scores."""
  mass = options.phase_mass
  centroids = {mass: {method: results[f"{method}/{mass}"]
                      for method in trace_records.PHASE_CENTROID_METHODS}}
  details = phases_lib.PhaseDetails(phases=results["phases"],
                                    overflow=results["phase_overflow"], phase_id=None)
  scores = pipeline.TrajectoryScores(
      num_valid=results["num_valid"], num_nan=results["num_nan"],
      high_threshold=results["high_threshold"], low_threshold=results["low_threshold"],
      num_phases=results["num_phases"], centroids=centroids, raw_entropy=results["raw_entropy"],
      center_numerator=results["center_numerator"],
      center_denominator=results["center_denominator"], details=details)
  per_trajectory = {"mean_entropy": results["mean_entropy"]}
  for name, source in _SCORE_SOURCES.items():
    if source not in unavailable and name in results:
      per_trajectory[name] = results[name]
  per_trajectory[f"mean_entropy_{options.selection_entropy}"] = per_trajectory["mean_entropy"]
  per_trajectory = {name: np.asarray(values, np.float64)
                    for name, values in per_trajectory.items()}
  return ScoredTraces(scores=scores, per_trajectory=per_trajectory)


def score_traces(trajectories: Iterable[traces.Trajectory], detected_format: str,
                 options: ScoringOptions, *, max_rows: int = CHUNK_ROWS,
                 min_time: int = MIN_TIME, overlap: bool = True, name: str = "the input"
                 ) -> tuple[list[TrajectoryInfo], TrajectoryCounts, ScoredTraces]:
  """Score trajectories as they are read, in chunks on a worker thread.

  Only each trajectory's metadata and counts are kept; its per-token arrays are dropped once
  its chunk is scored. Call under `jax.enable_x64` as configured.

  Args:
    trajectories: in file order, e.g. `traces.iter_traces(...)`.
    detected_format: the input's format (`detect.detect_format`).
    options: the scoring options.
    max_rows: rows per chunk for short trajectories (long ones use fewer).
    min_time: the smallest time bucket of a chunk.
    overlap: score on a worker thread while reading; False scores in the caller's thread.
    name: the input's name in error messages.

  Returns:
    The trajectories' metadata (labels as read), counts and scores, in input order.

  Raises:
    TraceScoringError: there are no trajectories, or one cannot be scored as configured.
  """
  stream = _TraceStream(detected_format, options, max_rows, min_time, overlap)
  try:
    for trajectory in trajectories:
      stream.add(trajectory)
    if not stream.infos:
      raise TraceScoringError(f"{name} contains no trajectories; nothing to score.")
    counts, scored = stream.finish()
  finally:
    if stream.scorer is not None:
      stream.scorer.close()
  return stream.infos, counts, scored


# ---------------------------------------------------------------------------------------------
# Selections and accuracies.

# Per-trajectory score names and the selection method that uses each.
SCORE_METHODS = {
    "mean_entropy": "lowest_mean_entropy",
    "self_certainty": "self_certainty",
    **{name: name for name in deepconf.DEEPCONF_METHODS},
}
# Reason keys of TrajectoryCounts.unavailable behind each per-trajectory score.
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


def select_and_evaluate(trajectories: Sequence[TrajectoryInfo], scored: ScoredTraces,
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


def run(config: Any, *, max_rows: int = CHUNK_ROWS, min_time: int = MIN_TIME,
        overlap: bool = True) -> RunResult:
  """Score the traces named by a score_traces config and write the results folder.

  The input is read once, one trajectory at a time, and scored in chunks while it is read
  (`score_traces`). Labels are attached by (problem_id, trajectory_index) afterwards.

  Args:
    config: a score_traces config.
    max_rows, min_time, overlap: the chunk layout and threading of `score_traces`; the results
      do not depend on them.

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

  source = open_traces(config, options)
  with jax.enable_x64(bool(config.x64)):
    trajectories = _ReadClock(source.trajectories)
    infos, counts, scored = score_traces(trajectories, source.detected_format, options,
                                         max_rows=max_rows, min_time=min_time, overlap=overlap,
                                         name=str(source.path))
  scored_at = time.perf_counter()
  loaded = _label(source, infos)
  chosen = select_and_evaluate(loaded.trajectories, scored, options, counts.unavailable)
  selected_at = time.perf_counter()

  timing = {
      "read_seconds": trajectories.seconds,
      "score_wait_seconds": scored_at - started - trajectories.seconds,
      "select_seconds": selected_at - scored_at,
      "total_seconds": selected_at - started,
  }
  summary = trace_records.summary_record(loaded, config, counts, scored, chosen, options, timing)
  files = {
      CENTROIDS_FILE: trace_records.centroid_records(loaded.trajectories, counts, scored, options),
      SELECTED_FILE: trace_records.selection_records(loaded.trajectories, chosen),
      SUMMARY_FILE: summary,
      CONFIG_FILE: requested,
  }
  folder = results_folder.write_results_folder(config.output_dir, files, requested)
  logging.info("Wrote %s to %s.", ", ".join(files), folder)
  _log_headline(summary)
  return RunResult(output_dir=folder, summary=summary)


class _ReadClock:
  """Iterates trajectories and adds up the seconds spent reading them (scoring excluded)."""

  def __init__(self, trajectories: Iterator[traces.Trajectory]):
    self._trajectories = trajectories
    self.seconds = 0.0

  def __iter__(self) -> Iterator[traces.Trajectory]:
    while True:
      start = time.perf_counter()
      try:
        trajectory = next(self._trajectories)
      except StopIteration:
        return
      finally:
        self.seconds += time.perf_counter() - start
      yield trajectory


def _label(source: TraceInput, infos: list[TrajectoryInfo]) -> traces.LoadedTraces:
  """Attach the label file's labels by key; return what the summary records of the input."""
  label_match = None
  if source.label_cache is not None:
    infos, label_match = labels_lib.attach_labels(infos, source.label_cache,
                                                  source=str(source.labels_path))
  logging.info("Read %d trajectories of %d problems from %s.", len(infos),
               len({info.problem_id for info in infos}), source.path)
  # NOTE: LoadedTraces is annotated with traces.Trajectory; the records read only the fields
  # that TrajectoryInfo has.
  return traces.LoadedTraces(infos, source.path, source.detected_format, source.labels_path,
                             label_match)


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
