"""Selection rules on the host (numpy and Python), and the accuracy of every method.

Tables are `[problems, N]` with a `present [problems, N]` mask, because a problem may have fewer
than N trajectories. A selection is a trajectory index per problem, or -1 when the method leaves
the problem unanswered (which counts as wrong). This module holds the host versions of the
score rules (`_host` suffix), the answer votes, the seeded random pick, pass@k, the choice of
delta by cross-validation or on the labels, and `evaluate_methods`, which scores every method of
a run on the same problems. It imports no JAX, so reports can use it; `selection.py` holds the
jit-friendly rules and re-exports everything here. The exact tie key is described there.
"""

from __future__ import annotations

import collections
import dataclasses
import fractions
import hashlib
import math
from collections.abc import Hashable, Mapping, Sequence

from absl import logging
import numpy as np

DEFAULT_DELTA = 0.10
DEFAULT_CV_FOLDS = 5
DEFAULT_CV_SEED = 0
DEFAULT_CENTROID_VOTE_FRACTION = 0.3
# {0.01, 0.02, ..., 0.30}: each value is k / 100 rounded once, so it equals the float literal,
# unlike a running sum of 0.01 steps.
DELTA_GRID = tuple(k / 100 for k in range(1, 31))

# Per-trajectory score methods and whether the lowest or the highest score wins.
SCORE_METHOD_DIRECTIONS = {
    "lowest_mean_entropy": "lowest",
    "self_certainty": "highest",
    "deepconf_tail": "highest",
    "deepconf_mean": "highest",
    "deepconf_lowest_window": "highest",
    "deepconf_bottom10": "highest",
}
CENTROID_SELECTION_METHODS = ("lowest_centroid", "lowest_centroid_delta",
                              "lowest_centroid_delta_cv", "lowest_centroid_delta_oracle")
VOTE_METHODS = ("majority_vote", "centroid_vote")

HostExactKey = tuple[np.ndarray, np.ndarray]


def method_names(pass_k: Sequence[int], num_samples: int, greedy: bool) -> tuple[str, ...]:
  """Return the summary keys of a run in report order; pass@k with k >= N is left out."""
  names = ["pass@1"]
  names += [f"pass@{k}" for k in _pass_k_below(pass_k, num_samples) if k != 1]
  names += ["pass@n", "random", *CENTROID_SELECTION_METHODS, *VOTE_METHODS,
            *SCORE_METHOD_DIRECTIONS]
  if greedy:
    names.append("greedy")
  return tuple(names)


# ---------------------------------------------------------------------------------------------
# Host rules. These mirror the JAX rules on numpy arrays, in float64.


def _check_delta(delta) -> None:
  """Raise ValueError for a concrete delta that is negative or NaN; traced values pass."""
  if isinstance(delta, (int, float, np.integer, np.floating)) and not delta >= 0:
    raise ValueError(
        f"delta must be a number >= 0 (centroid units, e.g. {DEFAULT_DELTA}), got {delta!r}.")


def _host_table(name: str, table, present) -> tuple[np.ndarray, np.ndarray]:
  """Return the table as float64 and present as bool, checking that both are `[problems, N]`."""
  table = np.asarray(table, dtype=np.float64)
  present = np.asarray(present, dtype=bool)
  if table.ndim != 2 or table.shape != present.shape:
    raise ValueError(
        f"{name} and present must both have shape [problems, N], got {table.shape} and "
        f"{present.shape}.")
  if table.shape[1] == 0:
    raise ValueError(f"{name} has N = 0 trajectory columns; selection needs N >= 1.")
  return table, present


def _host_exact_key(exact_key: HostExactKey, shape: tuple[int, ...]) -> tuple[np.ndarray,
                                                                             np.ndarray]:
  """Return numerator and denominator as int64 arrays of the table's shape."""
  if len(exact_key) != 2:
    raise ValueError(
        f"exact_key must be a (numerator, denominator) pair, got {len(exact_key)} items.")
  arrays = []
  for name, array in zip(("numerator", "denominator"), exact_key):
    array = np.asarray(array)
    if array.shape != shape:
      raise ValueError(f"exact_key {name} must have the table's shape {shape}, got {array.shape}.")
    if not np.issubdtype(array.dtype, np.integer):
      raise ValueError(f"exact_key {name} must be integers, got dtype {array.dtype}.")
    arrays.append(array.astype(np.int64))
  return arrays[0], arrays[1]


def ascending_ranks(values: np.ndarray, candidates: np.ndarray,
                    exact_key: HostExactKey | None = None) -> np.ndarray:
  """Rank each problem's candidates by value, then index.

  Args:
    values: `[problems, N]` float64.
    candidates: `[problems, N]` bools; only these are ranked.
    exact_key: optional exact ordering key replacing `values` in the order.

  Returns:
    `[problems, N]` int64 ranks 0, 1, ... per problem, and N for non-candidates.
  """
  problems, width = values.shape
  ranks = np.full((problems, width), width, dtype=np.int64)
  if exact_key is None:
    # A stable sort keeps equal values in index order.
    order = np.argsort(np.where(candidates, values, np.inf), axis=-1, kind="stable")
    positions = np.broadcast_to(np.arange(width), (problems, width))
    np.put_along_axis(ranks, order, positions, axis=-1)
    return np.where(candidates, ranks, width)
  numerator, denominator = exact_key
  for problem in range(problems):
    members = [j for j in range(width) if candidates[problem, j]]
    members.sort(key=lambda j: (fractions.Fraction(int(numerator[problem, j]),
                                                   int(denominator[problem, j])), j))
    for rank, j in enumerate(members):
      ranks[problem, j] = rank
  return ranks


def _first_by_rank(ranks: np.ndarray, allowed: np.ndarray) -> np.ndarray:
  """Return per problem the allowed entry of smallest rank, or -1 when none is allowed."""
  width = ranks.shape[1]
  masked = np.where(allowed, ranks, width + 1)
  index = np.argmin(masked, axis=-1)
  return np.where(np.any(allowed, axis=-1), index, -1).astype(np.int64)


def _centroid_candidates(centroids: np.ndarray, present: np.ndarray,
                         exact_key: HostExactKey | None) -> tuple[np.ndarray, np.ndarray]:
  """Return which trajectories have a centroid and the float64 values used for the mean."""
  candidates = present & np.isfinite(centroids)
  if exact_key is not None:
    candidates = candidates & (exact_key[1] > 0)
  return candidates, centroids


def select_lowest_host(scores, present, exact_key: HostExactKey | None = None) -> np.ndarray:
  """Host version of `select_lowest`; returns `[problems]` int64."""
  scores, present = _host_table("scores", scores, present)
  candidates = present & np.isfinite(scores)
  if exact_key is not None:
    exact_key = _host_exact_key(exact_key, scores.shape)
    candidates = candidates & (exact_key[1] > 0)
  return _first_by_rank(ascending_ranks(scores, candidates, exact_key), candidates)


def select_highest_host(scores, present) -> np.ndarray:
  """Host version of `select_highest`; returns `[problems]` int64."""
  scores, present = _host_table("scores", scores, present)
  candidates = present & np.isfinite(scores)
  return _first_by_rank(ascending_ranks(-scores, candidates), candidates)


def _kept_within_delta(candidates: np.ndarray, values: np.ndarray, delta: float) -> np.ndarray:
  """Return the `[problems, N]` mask of the delta rule, summing in trajectory order."""
  total = np.zeros(values.shape[0], dtype=np.float64)
  for j in range(values.shape[1]):
    total = total + np.where(candidates[:, j], values[:, j], 0.0)
  count = np.sum(candidates, axis=-1)
  mean = total / np.maximum(count, 1).astype(np.float64)
  kept = candidates & ((mean[:, None] - values) <= np.float64(delta))
  return np.where((count == 1)[:, None], candidates, kept)


def select_lowest_centroid_delta_host(centroids, present, delta: float,
                                      exact_key: HostExactKey | None = None) -> np.ndarray:
  """Host version of `select_lowest_centroid_delta`; returns `[problems]` int64."""
  _check_delta(delta)
  centroids, present = _host_table("centroids", centroids, present)
  if exact_key is not None:
    exact_key = _host_exact_key(exact_key, centroids.shape)
  candidates, values = _centroid_candidates(centroids, present, exact_key)
  ranks = ascending_ranks(values, candidates, exact_key)
  return _first_by_rank(ranks, _kept_within_delta(candidates, values, delta))


# ---------------------------------------------------------------------------------------------
# Answer votes and the random pick.


def _check_answers(answers: Sequence[Sequence[Hashable | None]], shape: tuple[int, int]) -> None:
  """Raise ValueError unless answers has one row of N entries per problem."""
  if len(answers) != shape[0]:
    raise ValueError(
        f"answers must have one row per problem ({shape[0]}), got {len(answers)} rows.")
  for problem, row in enumerate(answers):
    if len(row) != shape[1]:
      raise ValueError(
          f"answers row {problem} must have N = {shape[1]} entries (None where there is no "
          f"answer), got {len(row)}.")


def _vote(members: Sequence[int], answers_row: Sequence[Hashable | None]) -> int:
  """Return the member whose answer wins a plurality vote, or -1 when no member has an answer.

  Members vote in the given order. Ties go to the answer whose first voter comes first, and that
  first voter is returned.
  """
  counts: collections.Counter = collections.Counter()
  first_voter: dict[Hashable, int] = {}
  for j in members:
    answer = answers_row[j]
    if answer is None:
      continue
    counts[answer] += 1
    first_voter.setdefault(answer, j)
  if not counts:
    return -1
  position = {j: i for i, j in enumerate(members)}
  winner = min(counts, key=lambda a: (-counts[a], position[first_voter[a]]))
  return first_voter[winner]


def majority_vote(answers: Sequence[Sequence[Hashable | None]], present) -> np.ndarray:
  """Select per problem the first trajectory carrying the most frequent answer.

  Args:
    answers: per problem, N normalised final answers (the grader's normal form), None where a
      trajectory has no answer. Trajectories without an answer do not vote.
    present: `[problems, N]` bools; absent trajectories do not vote.

  Returns:
    `[problems]` int64: ties go to the answer seen first in trajectory order; -1 when no
    trajectory has an answer.
  """
  present = np.asarray(present, dtype=bool)
  if present.ndim != 2:
    raise ValueError(f"present must have shape [problems, N], got {present.shape}.")
  _check_answers(answers, present.shape)
  selections = np.full(present.shape[0], -1, dtype=np.int64)
  for problem, row in enumerate(answers):
    members = [j for j in range(present.shape[1]) if present[problem, j]]
    selections[problem] = _vote(members, row)
  return selections


def _vote_size(count: int, fraction: float) -> int:
  """Return max(1, floor(count * fraction)), reading the fraction as the decimal it prints as.

  In floats 90 * 0.7 is 62.99999999999999, which floors one too low; reading 0.7 as 7/10
  gives 63.
  """
  exact = fractions.Fraction(repr(float(fraction)))
  return max(1, math.floor(count * exact))


def centroid_vote(answers: Sequence[Sequence[Hashable | None]], centroids, present,
                  fraction: float = DEFAULT_CENTROID_VOTE_FRACTION,
                  exact_key: HostExactKey | None = None) -> np.ndarray:
  """Vote on answers among the trajectories with the lowest centroids.

  Of the n present trajectories with a centroid, the max(1, floor(n * fraction)) lowest by
  centroid, then index, are voters. Voters without an answer do not vote. The most frequent
  answer wins, and ties go to the answer that owns the smallest centroid. The selection is the
  winning answer's lowest-centroid trajectory.

  Args:
    answers: per problem, N normalised final answers or None.
    centroids: `[problems, N]` floats, NaN for no centroid.
    present: `[problems, N]` bools.
    fraction: share of the centroided trajectories that vote, in (0, 1].
    exact_key: optional exact ordering key of the centroids (see module docstring).

  Returns:
    `[problems]` int64; -1 when no trajectory has a centroid or no voter has an answer.
  """
  if not isinstance(fraction, (int, float, np.floating)) or not 0 < fraction <= 1:
    raise ValueError(
        f"centroid_vote_fraction must lie in (0, 1], got {fraction!r}; the default is "
        f"{DEFAULT_CENTROID_VOTE_FRACTION}.")
  centroids, present = _host_table("centroids", centroids, present)
  _check_answers(answers, present.shape)
  if exact_key is not None:
    exact_key = _host_exact_key(exact_key, centroids.shape)
  candidates, values = _centroid_candidates(centroids, present, exact_key)
  ranks = ascending_ranks(values, candidates, exact_key)
  selections = np.full(present.shape[0], -1, dtype=np.int64)
  for problem, row in enumerate(answers):
    count = int(np.sum(candidates[problem]))
    if count == 0:
      continue
    ordered = np.argsort(ranks[problem], kind="stable")[:count]
    voters = [int(j) for j in ordered[:_vote_size(count, fraction)]]
    selections[problem] = _vote(voters, row)
  return selections


def random_pick(problem_uids: Sequence[int], present, seed: int) -> np.ndarray:
  """Pick one present trajectory per problem uniformly, seeded by (seed, problem_uid).

  Each pick depends only on the seed, the problem's uid and its present trajectories, never on
  batch layout or on the other problems. The draw is SHA-256 of "seed:uid" reduced modulo the
  number of present trajectories (bias below 2**-240), stable across numpy versions.

  Args:
    problem_uids: `[problems]` integer uids.
    present: `[problems, N]` bools, or an int N meaning that all N trajectories are present.
    seed: the run's seed.

  Returns:
    `[problems]` int64; -1 for a problem with no present trajectory.
  """
  uids = [int(u) for u in problem_uids]
  if isinstance(present, (int, np.integer)) and not isinstance(present, bool):
    if present < 1:
      raise ValueError(f"random_pick needs N >= 1 trajectories, got {present}.")
    present = np.ones((len(uids), int(present)), dtype=bool)
  present = np.asarray(present, dtype=bool)
  if present.ndim != 2 or present.shape[0] != len(uids):
    raise ValueError(
        f"present must have shape [problems, N] with one row per uid ({len(uids)}), got "
        f"{present.shape}.")
  selections = np.full(len(uids), -1, dtype=np.int64)
  for problem, uid in enumerate(uids):
    members = np.flatnonzero(present[problem])
    if members.size == 0:
      continue
    digest = hashlib.sha256(f"{int(seed)}:{uid}".encode("ascii")).digest()
    selections[problem] = members[int.from_bytes(digest, "big") % members.size]
  return selections


# ---------------------------------------------------------------------------------------------
# pass@k.


def pass_at_k(n: int, c: int, k: int) -> float:
  """Return the unbiased pass@k estimate 1 - C(n - c, k) / C(n, k) (Chen et al., 2021).

  Args:
    n: trajectories sampled (>= k).
    c: correct trajectories among them, 0 <= c <= n.
    k: trajectories drawn without replacement, >= 1.
  """
  for name, value in (("n", n), ("c", c), ("k", k)):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
      raise ValueError(f"pass_at_k {name} must be an integer, got {value!r}.")
  if k < 1 or n < k:
    raise ValueError(f"pass_at_k needs 1 <= k <= n, got n = {n}, k = {k}.")
  if not 0 <= c <= n:
    raise ValueError(f"pass_at_k needs 0 <= c <= n, got c = {c}, n = {n}.")
  if n - c < k:
    return 1.0
  return float(1 - fractions.Fraction(math.comb(n - c, k), math.comb(n, k)))


def _pass_k_below(pass_k: Sequence[int], num_samples: int) -> tuple[int, ...]:
  """Return the distinct k of `pass_k` below N in order, checking that each is an integer >= 1."""
  usable = []
  for k in pass_k:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
      raise ValueError(f"pass_k entries must be integers >= 1, got {k!r}.")
    if k < num_samples and int(k) not in usable:
      usable.append(int(k))
  return tuple(usable)


def usable_pass_k(pass_k: Sequence[int], num_samples: int) -> tuple[int, ...]:
  """Return the distinct k of `pass_k` below N in order, logging each k >= N that is skipped."""
  for k in sorted({int(k) for k in pass_k if isinstance(k, (int, np.integer))}):
    if k >= num_samples:
      logging.info("Skipping pass@%d: k must be below N = %d (pass@n covers all N).", k,
                   num_samples)
  return _pass_k_below(pass_k, num_samples)


# ---------------------------------------------------------------------------------------------
# Choice of delta.


@dataclasses.dataclass(frozen=True)
class DeltaChoice:
  """A delta chosen on labels, with the selections it gives.

  Attributes:
    selections: `[problems]` int64, -1 unanswered.
    deltas: the chosen delta of each fold (one entry for the oracle).
    folds: `[problems]` int64 fold of each labelled problem, -1 for unlabelled ones (all 0 for
      the oracle).
    unavailable: the reason when no delta could be chosen; the other fields are then empty.
  """

  selections: np.ndarray
  deltas: tuple[float, ...]
  folds: np.ndarray
  unavailable: str | None = None


def _check_grid(grid: Sequence[float]) -> tuple[float, ...]:
  """Return the grid sorted ascending, checking that it is non-empty and non-negative."""
  grid = tuple(float(d) for d in grid)
  if not grid:
    raise ValueError("The delta grid is empty; give at least one delta >= 0.")
  for delta in grid:
    _check_delta(delta)
  return tuple(sorted(set(grid)))


def _grid_hits(centroids, present, labels: np.ndarray, labelled: np.ndarray,
               grid: Sequence[float], exact_key: HostExactKey | None
               ) -> tuple[np.ndarray, np.ndarray]:
  """Return the selections `[grid, problems]` and the correct picks `[grid, problems]` bools."""
  centroids, present = _host_table("centroids", centroids, present)
  if exact_key is not None:
    exact_key = _host_exact_key(exact_key, centroids.shape)
  candidates, values = _centroid_candidates(centroids, present, exact_key)
  ranks = ascending_ranks(values, candidates, exact_key)
  selections = np.stack([
      _first_by_rank(ranks, _kept_within_delta(candidates, values, delta)) for delta in grid])
  picked = np.take_along_axis(labels[None, :, :], np.maximum(selections, 0)[:, :, None],
                              axis=-1)[:, :, 0]
  hits = picked & (selections >= 0) & labelled[None, :]
  return selections, hits


def fold_assignment(num_problems: int, folds: int, seed: int) -> np.ndarray:
  """Assign problems 0..num_problems-1 to folds from a fixed seed.

  Problems are ordered by SHA-256 of "seed:index" and dealt round-robin, so fold sizes differ by
  at most one and the assignment is stable across numpy versions.

  Returns:
    `[num_problems]` int64 fold indices in [0, folds).
  """
  if folds < 1:
    raise ValueError(f"cv_folds must be >= 1, got {folds}.")
  keys = [hashlib.sha256(f"{int(seed)}:{i}".encode("ascii")).digest() for i in range(num_problems)]
  order = sorted(range(num_problems), key=lambda i: keys[i])
  assignment = np.empty(num_problems, dtype=np.int64)
  for position, problem in enumerate(order):
    assignment[problem] = position % folds
  return assignment


def _best_delta(correct_counts: np.ndarray) -> int:
  """Return the grid position with the most correct picks, the smallest delta on ties."""
  # The grid is ascending and argmax returns the first maximum.
  return int(np.argmax(correct_counts))


def cross_validated_delta(centroids, present, labels, labelled, *,
                          folds: int = DEFAULT_CV_FOLDS, seed: int = DEFAULT_CV_SEED,
                          grid: Sequence[float] = DELTA_GRID,
                          exact_key: HostExactKey | None = None) -> DeltaChoice:
  """Choose delta by K-fold cross-validation over the labelled problems.

  For each fold, the delta with the most correct picks on the other folds (smallest delta on
  ties) selects the fold's problems. With fewer labelled problems than folds, each problem is
  its own fold (leave-one-out). Unlabelled problems get the delta chosen on all labelled ones.

  Args:
    centroids: `[problems, N]` floats, NaN for no centroid.
    present: `[problems, N]` bools.
    labels: `[problems, N]` bools, the correctness of each trajectory.
    labelled: `[problems]` bools, the problems that count in the accuracy.
    folds: K.
    seed: the fold seed.
    grid: the candidate deltas.
    exact_key: optional exact ordering key of the centroids (see module docstring).

  Returns:
    A DeltaChoice; unavailable with fewer than two labelled problems.
  """
  grid = _check_grid(grid)
  labels = np.asarray(labels, dtype=bool)
  labelled = np.asarray(labelled, dtype=bool)
  members = np.flatnonzero(labelled)
  problems = labels.shape[0]
  if members.size < 2:
    return DeltaChoice(np.full(problems, -1, np.int64), (), np.full(problems, -1, np.int64),
                       unavailable=f"cross-validation needs at least 2 labelled problems, got "
                       f"{members.size}")
  selections_by_delta, hits = _grid_hits(centroids, present, labels, labelled, grid, exact_key)
  num_folds = min(folds, members.size)
  assignment = np.full(problems, -1, dtype=np.int64)
  assignment[members] = fold_assignment(members.size, num_folds, seed)

  selections = selections_by_delta[_best_delta(hits.sum(axis=1))].copy()
  deltas = []
  for fold in range(num_folds):
    held_out = assignment == fold
    training = labelled & ~held_out
    best = _best_delta(hits[:, training].sum(axis=1))
    deltas.append(grid[best])
    selections[held_out] = selections_by_delta[best, held_out]
  return DeltaChoice(selections, tuple(deltas), assignment)


def oracle_delta(centroids, present, labels, labelled, *, grid: Sequence[float] = DELTA_GRID,
                 exact_key: HostExactKey | None = None) -> DeltaChoice:
  """Choose delta by accuracy on the evaluation labels themselves (smallest delta on ties).

  This leaks the labels into the choice; report it only as the label-tuned oracle.
  """
  grid = _check_grid(grid)
  labels = np.asarray(labels, dtype=bool)
  labelled = np.asarray(labelled, dtype=bool)
  selections_by_delta, hits = _grid_hits(centroids, present, labels, labelled, grid, exact_key)
  best = _best_delta(hits.sum(axis=1))
  return DeltaChoice(selections_by_delta[best], (grid[best],),
                     np.where(labelled, 0, -1).astype(np.int64))


# ---------------------------------------------------------------------------------------------
# Accuracy of every method on the same problems.


@dataclasses.dataclass(frozen=True)
class Evaluation:
  """Selections and accuracies of every method of a run.

  Attributes:
    summaries: method name -> {accuracy, correct, total, unanswered, unlabelled}, in report
      order, or {"unavailable": reason}. accuracy is None when no problem is labelled. The delta
      methods add `delta` (fixed and oracle) or `deltas` (one per fold).
    selections: selection method -> `[problems]` int64 trajectory index, -1 unanswered. The
      pass@ methods and greedy select nothing and have no entry.
    problem_scores: available method -> `[problems]` float64: 1 or 0 for a selection, the
      estimate for pass@k, NaN for unlabelled problems. The bootstrap resamples these.
    labelled: `[problems]` bools, the problems that count in every accuracy.
  """

  summaries: dict[str, dict]
  selections: dict[str, np.ndarray]
  problem_scores: dict[str, np.ndarray]
  labelled: np.ndarray


def correctness_labels(correct, present) -> tuple[np.ndarray, np.ndarray]:
  """Split per-trajectory labels into values and a per-problem "fully labelled" flag.

  Args:
    correct: `[problems, N]` bools, or nested sequences of True, False or None (no label).
    present: `[problems, N]` bools; labels of absent trajectories are ignored.

  Returns:
    `labels [problems, N]` bools (False where absent or unlabelled) and `labelled [problems]`
    bools, true when every present trajectory has a label.
  """
  present = np.asarray(present, dtype=bool)
  if present.ndim != 2:
    raise ValueError(f"present must have shape [problems, N], got {present.shape}.")
  if isinstance(correct, np.ndarray) and correct.dtype == bool:
    if correct.shape != present.shape:
      raise ValueError(
          f"correct must have the shape of present {present.shape}, got {correct.shape}.")
    return correct & present, np.ones(present.shape[0], dtype=bool)
  if len(correct) != present.shape[0]:
    raise ValueError(
        f"correct must have one row per problem ({present.shape[0]}), got {len(correct)} rows.")
  labels = np.zeros(present.shape, dtype=bool)
  known = np.zeros(present.shape, dtype=bool)
  for problem, row in enumerate(correct):
    if len(row) != present.shape[1]:
      raise ValueError(
          f"correct row {problem} must have N = {present.shape[1]} entries (None for no label), "
          f"got {len(row)}.")
    for j, value in enumerate(row):
      if value is None:
        continue
      if not isinstance(value, (bool, np.bool_)):
        raise ValueError(
            f"correct[{problem}][{j}] must be True, False or None, got {value!r}.")
      known[problem, j] = True
      labels[problem, j] = bool(value)
  labels &= present
  labelled = np.all(known | ~present, axis=-1)
  return labels, labelled


def _accuracy_summary(scores: np.ndarray, answered: np.ndarray,
                      labelled: np.ndarray) -> dict:
  """Summarise per-problem scores over the labelled problems."""
  total = int(np.sum(labelled))
  correct_sum = float(np.sum(scores[labelled]))
  correct = int(round(correct_sum)) if float(correct_sum).is_integer() else correct_sum
  return {
      "accuracy": correct_sum / total if total else None,
      "correct": correct,
      "total": total,
      "unanswered": int(np.sum(labelled & ~answered)),
      "unlabelled": int(np.sum(~labelled)),
  }


def _score_selection(selections: np.ndarray, labels: np.ndarray,
                     labelled: np.ndarray) -> tuple[dict, np.ndarray]:
  """Return the summary and the per-problem scores (NaN unlabelled) of a selection."""
  picked = np.take_along_axis(labels, np.maximum(selections, 0)[:, None], axis=-1)[:, 0]
  hits = (picked & (selections >= 0)).astype(np.float64)
  scores = np.where(labelled, hits, np.nan)
  return _accuracy_summary(np.nan_to_num(scores), selections >= 0, labelled), scores


def _pass_scores(present: np.ndarray, labels: np.ndarray, labelled: np.ndarray,
                 k: int | None) -> np.ndarray | str:
  """Return per-problem pass@k scores (k None: pass@n), or why they cannot be computed."""
  counts = np.sum(present, axis=-1)
  correct = np.sum(labels & present, axis=-1)
  scores = np.full(present.shape[0], np.nan)
  for problem in np.flatnonzero(labelled):
    n, c = int(counts[problem]), int(correct[problem])
    if n == 0:
      scores[problem] = 0.0
    elif k is None:
      scores[problem] = float(c > 0)
    elif n < k:
      return (f"problem {problem} has {n} trajectories, fewer than k = {k}; lower pass_k or "
              f"supply all N trajectories")
    else:
      scores[problem] = pass_at_k(n, c, k)
  return scores


def evaluate_methods(
    present,
    correct,
    *,
    problem_uids: Sequence[int],
    centroids=None,
    exact_key: HostExactKey | None = None,
    answers: Sequence[Sequence[Hashable | None]] | None = None,
    scores: Mapping[str, np.ndarray | str] | None = None,
    pass_k: Sequence[int] = (),
    delta: float = DEFAULT_DELTA,
    cv_folds: int = DEFAULT_CV_FOLDS,
    cv_seed: int = DEFAULT_CV_SEED,
    centroid_vote_fraction: float = DEFAULT_CENTROID_VOTE_FRACTION,
    seed: int = 0,
    greedy_correct: Sequence[bool | None] | None = None,
) -> Evaluation:
  """Select a trajectory per problem with every method and score them on the same problems.

  A problem with any unlabelled present trajectory (or an unlabelled greedy sample) is left out
  of every accuracy and counted as `unlabelled`. An unanswered problem counts as wrong.

  Args:
    present: `[problems, N]` bools.
    correct: `[problems, N]` correctness, True, False or None (no label); see
      `correctness_labels`.
    problem_uids: `[problems]` uids, seeding the `random` pick.
    centroids: `[problems, N]` floats of the configured centroid, NaN for none; None makes the
      centroid methods unavailable.
    exact_key: optional exact ordering key of the centroids (see module docstring).
    answers: per problem, N normalised answers or None; None makes the votes unavailable.
    scores: score method name (see SCORE_METHOD_DIRECTIONS) -> `[problems, N]` floats (NaN for
      no score), or a string giving the reason the method is unavailable. A missing name is
      unavailable too.
    pass_k: the k of pass@k; k >= N is skipped with a log line.
    delta: the fixed delta of `lowest_centroid_delta`.
    cv_folds: K of `lowest_centroid_delta_cv`.
    cv_seed: the fold seed.
    centroid_vote_fraction: share of centroided trajectories that vote in `centroid_vote`.
    seed: the run's seed, for `random`.
    greedy_correct: per problem, the correctness of the greedy sample (None: no label); None
      leaves `greedy` out.

  Returns:
    An Evaluation.
  """
  present = np.asarray(present, dtype=bool)
  labels, labelled = correctness_labels(correct, present)
  problems, num_samples = present.shape
  if num_samples == 0:
    raise ValueError("present has N = 0 trajectory columns; evaluation needs N >= 1.")
  if len(problem_uids) != problems:
    raise ValueError(
        f"problem_uids must have one uid per problem ({problems}), got {len(problem_uids)}.")
  if greedy_correct is not None:
    if len(greedy_correct) != problems:
      raise ValueError(
          f"greedy_correct must have one entry per problem ({problems}), got "
          f"{len(greedy_correct)}.")
    labelled = labelled & np.array([value is not None for value in greedy_correct], dtype=bool)
  scores = dict(scores or {})
  unknown = sorted(set(scores) - set(SCORE_METHOD_DIRECTIONS))
  if unknown:
    raise ValueError(
        f"Unknown score methods {unknown}; expected names among {sorted(SCORE_METHOD_DIRECTIONS)}.")

  summaries: dict[str, dict] = {}
  selections: dict[str, np.ndarray] = {}
  problem_scores: dict[str, np.ndarray] = {}

  def record_selection(name: str, chosen: np.ndarray, **extra) -> None:
    summary, per_problem = _score_selection(chosen, labels, labelled)
    summaries[name] = {**summary, **extra}
    selections[name] = chosen
    problem_scores[name] = per_problem

  def record_scores(name: str, per_problem: np.ndarray | str) -> None:
    if isinstance(per_problem, str):
      summaries[name] = {"unavailable": per_problem}
      return
    answered = present.any(axis=-1)
    summaries[name] = _accuracy_summary(np.nan_to_num(per_problem), answered, labelled)
    problem_scores[name] = per_problem

  record_scores("pass@1", _pass_scores(present, labels, labelled, 1))
  for k in usable_pass_k(pass_k, num_samples):
    if k != 1:
      record_scores(f"pass@{k}", _pass_scores(present, labels, labelled, k))
  record_scores("pass@n", _pass_scores(present, labels, labelled, None))
  record_selection("random", random_pick(problem_uids, present, seed))

  if centroids is None:
    for name in CENTROID_SELECTION_METHODS + ("centroid_vote",):
      summaries[name] = {"unavailable": "no centroids given"}
  else:
    record_selection("lowest_centroid", select_lowest_host(centroids, present, exact_key))
    record_selection("lowest_centroid_delta",
                     select_lowest_centroid_delta_host(centroids, present, delta, exact_key),
                     delta=float(delta))
    cv = cross_validated_delta(centroids, present, labels, labelled, folds=cv_folds,
                               seed=cv_seed, exact_key=exact_key)
    if cv.unavailable is not None:
      summaries["lowest_centroid_delta_cv"] = {"unavailable": cv.unavailable}
    else:
      record_selection("lowest_centroid_delta_cv", cv.selections, deltas=list(cv.deltas))
    oracle = oracle_delta(centroids, present, labels, labelled, exact_key=exact_key)
    record_selection("lowest_centroid_delta_oracle", oracle.selections, delta=oracle.deltas[0])

  if answers is None:
    summaries["majority_vote"] = {"unavailable": "no answers given"}
    summaries["centroid_vote"] = {"unavailable": "no answers given"}
  else:
    record_selection("majority_vote", majority_vote(answers, present))
    if centroids is not None:
      record_selection("centroid_vote",
                       centroid_vote(answers, centroids, present, centroid_vote_fraction,
                                     exact_key))

  for name, direction in SCORE_METHOD_DIRECTIONS.items():
    table = scores.get(name, "no per-trajectory scores given")
    if isinstance(table, str):
      summaries[name] = {"unavailable": table}
    elif direction == "lowest":
      record_selection(name, select_lowest_host(table, present))
    else:
      record_selection(name, select_highest_host(table, present))

  if greedy_correct is not None:
    greedy = np.array([bool(value) for value in greedy_correct], dtype=np.float64)
    per_problem = np.where(labelled, greedy, np.nan)
    summaries["greedy"] = _accuracy_summary(np.nan_to_num(per_problem),
                                            np.ones(problems, dtype=bool), labelled)
    problem_scores["greedy"] = per_problem

  order = method_names(pass_k, num_samples, greedy_correct is not None)
  return Evaluation({name: summaries[name] for name in order}, selections, problem_scores,
                    labelled)
