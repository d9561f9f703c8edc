"""Expected accuracy of a selection method when only n of a problem's trajectories are available.

For a problem with M present trajectories, the n available ones are a uniformly random subset of
them, and the curve reports the expectation of the method's accuracy over all C(M, n) subsets.
A problem with fewer than n present trajectories uses all of them.

Methods that take the lowest (or highest) of a per-trajectory score, ties to the lowest index,
have a closed form. Rank the m trajectories that have a score by (score, index), r = 0 .. m-1.
The method picks the subset's member of smallest rank, so rank r is chosen exactly when it is in
the subset and ranks 0 .. r-1 are not. The other n-1 members then come from the M-r-1
trajectories of higher rank or without a score:

    P(rank r chosen) = C(M - r - 1, n - 1) / C(M, n)          r = 0 .. m-1
    P(unanswered)    = C(M - m, n) / C(M, n)                  (no member has a score)

These sum to 1 by the hockey-stick identity. The sums are taken over Python integers, so each
problem's expectation is exact up to one final rounding to float64.

The votes and the delta filter depend on the whole subset in other ways. They are evaluated on
every subset when C(M, n) <= `max_subsets`, else on `samples` seeded random subsets. The output
marks such points as estimates and gives the number of subsets drawn per problem.

`pass@1` does not depend on n. `pass@n` is the unbiased pass@k estimator with k = n, the chance
that at least one of the n available trajectories is correct.
"""

from __future__ import annotations

import dataclasses
import fractions
import functools
import itertools
import math
from collections.abc import Hashable, Sequence

import numpy as np

from ec_jax.scoring import host_selection as selection

PASS_METHODS = ("pass@1", "pass@n")
# Methods that choose the lowest or highest of a per-trajectory score: the closed form applies.
RANK_METHODS = ("lowest_centroid", *selection.SCORE_METHOD_DIRECTIONS)
# Methods whose choice depends on the whole subset: enumeration or Monte Carlo.
SUBSET_METHODS = ("lowest_centroid_delta", "majority_vote", "centroid_vote")
CURVE_METHODS = PASS_METHODS + RANK_METHODS + SUBSET_METHODS

DEFAULT_MAX_SUBSETS = 5_000
DEFAULT_SAMPLES = 2_000
DEFAULT_SEED = 0


@dataclasses.dataclass(frozen=True)
class ExpectedScores:
  """Per-problem expected scores of one method at one n.

  Attributes:
    scores: `[problems]` float64 expected correctness, NaN for unlabelled problems.
    unanswered: `[problems]` float64 probability that the method leaves the problem unanswered.
    estimated: `[problems]` bools, true where the expectation is a Monte Carlo estimate.
    samples: random subsets drawn per estimated problem, or None when every value is exact.
    labelled: `[problems]` bools, the problems that count in the accuracy.
  """

  scores: np.ndarray
  unanswered: np.ndarray
  estimated: np.ndarray
  samples: int | None
  labelled: np.ndarray


@dataclasses.dataclass(frozen=True)
class _Inputs:
  """The checked tables of one method, shared by every n."""

  method: str
  present: np.ndarray  # [problems, N] bools
  labels: np.ndarray  # [problems, N] bools
  labelled: np.ndarray  # [problems] bools
  candidates: np.ndarray | None  # [problems, N] bools: has a score or centroid
  ranks: np.ndarray | None  # [problems, N] int64 ranks, N for non-candidates
  values: np.ndarray | None  # [problems, N] float64 centroids (delta filter only)
  codes: np.ndarray | None  # [problems, N] int64 answer codes, -1 for no answer
  delta: float
  fraction: fractions.Fraction


# ---------------------------------------------------------------------------------------------
# Input checks.


def labels_table(correct, present) -> tuple[np.ndarray, np.ndarray]:
  """Split a correctness table into labels and a per-problem "fully labelled" flag.

  Args:
    correct: `[problems, N]` correctness: a bool array, a numeric array of 1, 0 and NaN (no
      label), or nested sequences of True, False, None or NaN.
    present: `[problems, N]` bools; labels of absent trajectories are ignored.

  Returns:
    `labels [problems, N]` bools and `labelled [problems]` bools, as
    `selection.correctness_labels` returns them.
  """
  if isinstance(correct, np.ndarray) and correct.dtype == bool:
    return selection.correctness_labels(correct, present)
  rows = []
  for problem, row in enumerate(correct):
    entries = []
    for j, value in enumerate(row):
      entries.append(_label_entry(value, problem, j))
    rows.append(entries)
  return selection.correctness_labels(rows, present)


def _label_entry(value, problem: int, j: int) -> bool | None:
  """Return one label as True, False or None (no label)."""
  if value is None:
    return None
  if isinstance(value, (bool, np.bool_)):
    return bool(value)
  if isinstance(value, (int, float, np.integer, np.floating)):
    if math.isnan(value):
      return None
    if value in (0, 1):
      return bool(value)
  raise ValueError(
      f"correct[{problem}][{j}] must be True, False, 1, 0, None or NaN (no label), got "
      f"{value!r}.")


def _table_shape(correct) -> tuple[int, int]:
  """Return the `[problems, N]` shape of the correctness table."""
  if isinstance(correct, np.ndarray):
    shape = correct.shape
  else:
    try:
      shape = np.asarray(correct, dtype=object).shape
    except ValueError as error:
      raise ValueError(
          f"correct must be a [problems, N] table with N labels in every row: {error}") from None
  if len(shape) != 2:
    raise ValueError(
        f"correct must be a [problems, N] table (one row of N labels per problem), got shape "
        f"{shape}.")
  return shape


def _check_n_values(n_values: Sequence[int], num_samples: int) -> tuple[int, ...]:
  """Return the distinct n in the given order, checking that each lies in [1, N]."""
  checked = []
  for n in n_values:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or not 1 <= n <= num_samples:
      raise ValueError(
          f"Each n must be an integer in [1, N] with N = {num_samples} trajectory columns, got "
          f"{n!r}.")
    if int(n) not in checked:
      checked.append(int(n))
  if not checked:
    raise ValueError(f"n_values is empty; give at least one n in [1, {num_samples}].")
  return tuple(checked)


def _check_sampling(max_subsets: int, samples: int, seed: int) -> None:
  for name, value, minimum in (("max_subsets", max_subsets, 1), ("samples", samples, 1),
                               ("seed", seed, 0)):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
      raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}.")


def _answer_codes(answers: Sequence[Sequence[Hashable | None]], shape: tuple[int, int]
                  ) -> np.ndarray:
  """Return `[problems, N]` int64 codes numbering each problem's answers, -1 for None."""
  if len(answers) != shape[0]:
    raise ValueError(
        f"answers must have one row per problem ({shape[0]}), got {len(answers)} rows.")
  codes = np.full(shape, -1, dtype=np.int64)
  for problem, row in enumerate(answers):
    if len(row) != shape[1]:
      raise ValueError(
          f"answers row {problem} must have N = {shape[1]} entries (None where there is no "
          f"answer), got {len(row)}.")
    numbers: dict[Hashable, int] = {}
    for j, answer in enumerate(row):
      if answer is not None:
        codes[problem, j] = numbers.setdefault(answer, len(numbers))
  return codes


def _check_fraction(fraction) -> fractions.Fraction:
  """Return the centroid-vote fraction as the decimal it prints as (see selection.centroid_vote)."""
  if isinstance(fraction, bool) or not isinstance(fraction, (int, float, np.floating)) or not (
      0 < fraction <= 1):
    raise ValueError(
        f"centroid_vote_fraction must lie in (0, 1], got {fraction!r}; the default is "
        f"{selection.DEFAULT_CENTROID_VOTE_FRACTION}.")
  return fractions.Fraction(repr(float(fraction)))


def _require(table, name: str, method: str, argument: str):
  if table is None:
    raise ValueError(
        f"Method {method!r} needs the {name}, but none were given; pass {argument}=<[problems, "
        f"N] table>.")
  return table


def _float_table(name: str, table, shape: tuple[int, int]) -> np.ndarray:
  """Return a `[problems, N]` table as float64, checking its shape."""
  table = np.asarray(table, dtype=np.float64)
  if table.shape != shape:
    raise ValueError(
        f"{name} must have the shape of correct {shape} ([problems, N]), got {table.shape}.")
  return table


def _exact_key_table(exact_key, shape: tuple[int, int]) -> selection.HostExactKey:
  """Return the exact ordering key as two int64 tables, checking shapes and dtypes."""
  if len(exact_key) != 2:
    raise ValueError(
        f"exact_key must be a (numerator, denominator) pair, got {len(exact_key)} items.")
  arrays = []
  for name, array in zip(("numerator", "denominator"), exact_key):
    array = np.asarray(array)
    if array.shape != shape or not np.issubdtype(array.dtype, np.integer):
      raise ValueError(
          f"exact_key {name} must be integers of shape {shape}, got dtype {array.dtype} and "
          f"shape {array.shape}.")
    arrays.append(array.astype(np.int64))
  return arrays[0], arrays[1]


def _prepare(method: str, correct, *, present, centroids, scores, answers, exact_key,
             delta: float, centroid_vote_fraction: float) -> _Inputs:
  """Check the tables a method needs and precompute its ranks and answer codes."""
  if method not in CURVE_METHODS:
    raise ValueError(
        f"Unknown or unsupported method {method!r} for an accuracy curve; expected one of "
        f"{list(CURVE_METHODS)}. The delta methods tuned on labels (cv, oracle), random and "
        f"greedy have no curve here.")
  shape = _table_shape(correct)
  present = np.ones(shape, dtype=bool) if present is None else np.asarray(present, dtype=bool)
  if present.shape != shape:
    raise ValueError(
        f"present must have the shape of correct {shape}, got {present.shape}.")
  if shape[1] == 0:
    raise ValueError("correct has N = 0 trajectory columns; a curve needs N >= 1.")
  labels, labelled = labels_table(correct, present)
  fraction = _check_fraction(centroid_vote_fraction)
  if isinstance(delta, bool) or not isinstance(delta, (int, float, np.integer, np.floating)) or (
      not delta >= 0):
    raise ValueError(
        f"delta must be a number >= 0 (centroid units, e.g. {selection.DEFAULT_DELTA}), got "
        f"{delta!r}.")
  candidates = ranks = values = codes = None

  if method in ("lowest_centroid", "lowest_centroid_delta", "centroid_vote"):
    values = _float_table("centroids", _require(centroids, "centroids", method, "centroids"),
                          shape)
    candidates = present & np.isfinite(values)
    if exact_key is not None:
      exact_key = _exact_key_table(exact_key, shape)
      candidates &= exact_key[1] > 0
    ranks = selection.ascending_ranks(values, candidates, exact_key)
  elif method in selection.SCORE_METHOD_DIRECTIONS:
    values = _float_table(
        "scores", _require(scores, f"per-trajectory {method} scores", method, "scores"), shape)
    candidates = present & np.isfinite(values)
    direction = selection.SCORE_METHOD_DIRECTIONS[method]
    ranks = selection.ascending_ranks(values if direction == "lowest" else -values, candidates)
  if method in ("majority_vote", "centroid_vote"):
    codes = _answer_codes(_require(answers, "answers", method, "answers"), shape)
  return _Inputs(method, present, labels, labelled, candidates, ranks, values, codes,
                 float(delta), fraction)


# ---------------------------------------------------------------------------------------------
# Closed forms.


@functools.lru_cache(maxsize=4096)
def _rank_weights(members: int, size: int) -> tuple[tuple[int, ...], int]:
  """Return (C(M - r - 1, n - 1) for r = 0 .. M-1, C(M, n)) for M members and subset size n."""
  weights = tuple(math.comb(members - r - 1, size - 1) for r in range(members))
  return weights, math.comb(members, size)


def _rank_expectation(inputs: _Inputs, problem: int, size: int) -> tuple[float, float]:
  """Return (expected correctness, probability unanswered) of a rank method, exactly."""
  members = int(np.sum(inputs.present[problem]))
  scored = int(np.sum(inputs.candidates[problem]))
  weights, total = _rank_weights(members, size)
  order = np.argsort(inputs.ranks[problem], kind="stable")[:scored]
  hits = sum(weights[r] for r, j in enumerate(order) if inputs.labels[problem, j])
  return hits / total, math.comb(members - scored, size) / total


def _pass_expectation(inputs: _Inputs, problem: int, size: int) -> tuple[float, float]:
  members = int(np.sum(inputs.present[problem]))
  correct = int(np.sum(inputs.labels[problem] & inputs.present[problem]))
  if inputs.method == "pass@1":
    return correct / members, 0.0
  return selection.pass_at_k(members, correct, size), 0.0


# ---------------------------------------------------------------------------------------------
# Subset rules, vectorised over subsets. Each takes `mask [subsets, M]` over the problem's
# present trajectories in index order and returns `[subsets]` member positions, -1 unanswered.
# They apply the rules of selection.majority_vote, selection.centroid_vote and
# selection.select_lowest_centroid_delta_host to each subset; tests compare them on every subset.


def _plurality(voters: np.ndarray, codes: np.ndarray) -> np.ndarray:
  """Return per row the first voter of the most frequent answer, or -1 when no voter remains.

  Args:
    voters: `[subsets, K]` bools in voting order.
    codes: `[K]` answer codes (>= 0 wherever a voter can be).

  Ties go to the answer whose first voter comes first in column order.
  """
  subsets, width = voters.shape
  num_codes = int(codes.max()) + 1 if width and codes.max() >= 0 else 0
  if num_codes == 0:
    return np.full(subsets, -1, dtype=np.int64)
  counts = np.zeros((subsets, num_codes), dtype=np.int64)
  first = np.full((subsets, num_codes), width, dtype=np.int64)
  # Walking the columns backwards leaves each answer's smallest voter column in `first`.
  for column in reversed(range(width)):
    code = codes[column]
    if code < 0:
      continue
    votes = voters[:, column]
    counts[:, code] += votes
    first[:, code] = np.where(votes, column, first[:, code])
  # More votes win; among equal counts the smaller first column wins. A key of 0 means no vote.
  keys = counts * (width + 1) + (width - first)
  winner = np.argmax(keys, axis=1)
  rows = np.arange(subsets)
  return np.where(keys[rows, winner] > 0, first[rows, winner], -1)


def _majority_choice(mask: np.ndarray, codes: np.ndarray) -> np.ndarray:
  return _plurality(mask & (codes >= 0)[None, :], codes)


def _centroid_vote_choice(mask: np.ndarray, codes: np.ndarray, ranked: np.ndarray,
                          fraction: fractions.Fraction) -> np.ndarray:
  """Apply centroid_vote; `ranked` lists the members with a centroid in rank order."""
  if ranked.size == 0:
    return np.full(mask.shape[0], -1, dtype=np.int64)
  in_order = mask[:, ranked]
  count = np.sum(in_order, axis=1)
  seats = np.maximum(1, (count * fraction.numerator) // fraction.denominator)
  seated = in_order & (np.cumsum(in_order, axis=1) <= seats[:, None])
  ranked_codes = codes[ranked]
  position = _plurality(seated & (ranked_codes >= 0)[None, :], ranked_codes)
  return np.where(position >= 0, ranked[np.maximum(position, 0)], -1)


def _delta_choice(mask: np.ndarray, values: np.ndarray, candidates: np.ndarray,
                  ranks: np.ndarray, delta: float) -> np.ndarray:
  """Apply the delta filter and take the lowest kept rank."""
  subset_candidates = mask & candidates[None, :]
  # Summed in index order, as the host rule does, so the comparison with delta matches it bit
  # for bit.
  total = np.zeros(mask.shape[0], dtype=np.float64)
  for column in range(mask.shape[1]):
    total = total + np.where(subset_candidates[:, column], values[column], 0.0)
  count = np.sum(subset_candidates, axis=1)
  mean = total / np.maximum(count, 1).astype(np.float64)
  with np.errstate(invalid="ignore"):
    kept = subset_candidates & ((mean[:, None] - values[None, :]) <= np.float64(delta))
  kept = np.where((count == 1)[:, None], subset_candidates, kept)
  masked = np.where(kept, ranks[None, :], np.iinfo(np.int64).max)
  return np.where(np.any(kept, axis=1), np.argmin(masked, axis=1), -1)


def _subset_masks(members: int, size: int, max_subsets: int, samples: int,
                  rng_seed: Sequence[int]) -> tuple[np.ndarray, bool]:
  """Return `[subsets, M]` masks of every n-subset, or of `samples` random ones, and a flag.

  The flag is true when the subsets are random.
  """
  count = math.comb(members, size)
  if count <= max_subsets:
    flat = np.fromiter(itertools.chain.from_iterable(itertools.combinations(range(members), size)),
                       dtype=np.int64, count=count * size)
    chosen = flat.reshape(count, size)
    estimated = False
  else:
    rng = np.random.default_rng(list(rng_seed))
    chosen = np.argsort(rng.random((samples, members)), axis=1)[:, :size]
    estimated = True
  masks = np.zeros((chosen.shape[0], members), dtype=bool)
  np.put_along_axis(masks, chosen, True, axis=1)
  return masks, estimated


def _subset_expectation(inputs: _Inputs, problem: int, size: int, n: int, max_subsets: int,
                        samples: int, seed: int) -> tuple[float, float, bool]:
  """Return (expected correctness, probability unanswered, estimated) of a subset method."""
  members = np.flatnonzero(inputs.present[problem])
  masks, estimated = _subset_masks(members.size, size, max_subsets, samples,
                                   (seed, problem, n))
  if inputs.method == "majority_vote":
    chosen = _majority_choice(masks, inputs.codes[problem, members])
  else:
    candidates = inputs.candidates[problem, members]
    ranks = inputs.ranks[problem, members]
    if inputs.method == "centroid_vote":
      ranked = np.flatnonzero(candidates)
      ranked = ranked[np.argsort(ranks[ranked], kind="stable")]
      chosen = _centroid_vote_choice(masks, inputs.codes[problem, members], ranked,
                                     inputs.fraction)
    else:
      chosen = _delta_choice(masks, inputs.values[problem, members], candidates, ranks,
                             inputs.delta)
  labels = inputs.labels[problem, members]
  hits = (chosen >= 0) & labels[np.maximum(chosen, 0)]
  return float(np.mean(hits)), float(np.mean(chosen < 0)), estimated


# ---------------------------------------------------------------------------------------------
# Public entry points.


def _expected_scores(inputs: _Inputs, n: int, max_subsets: int, samples: int,
                     seed: int) -> ExpectedScores:
  problems = inputs.present.shape[0]
  scores = np.full(problems, np.nan)
  unanswered = np.zeros(problems)
  estimated = np.zeros(problems, dtype=bool)
  for problem in range(problems):
    members = int(np.sum(inputs.present[problem]))
    if members == 0:
      scores[problem], unanswered[problem] = 0.0, 1.0
      continue
    size = min(n, members)
    if inputs.method in PASS_METHODS:
      scores[problem], unanswered[problem] = _pass_expectation(inputs, problem, size)
    elif inputs.method in RANK_METHODS:
      scores[problem], unanswered[problem] = _rank_expectation(inputs, problem, size)
    else:
      scores[problem], unanswered[problem], estimated[problem] = _subset_expectation(
          inputs, problem, size, n, max_subsets, samples, seed)
  scores = np.where(inputs.labelled, scores, np.nan)
  return ExpectedScores(scores, unanswered, estimated,
                        samples if np.any(estimated) else None, inputs.labelled.copy())


def expected_scores_by_n(
    method: str,
    correct,
    n_values: Sequence[int],
    *,
    present=None,
    centroids=None,
    scores=None,
    answers: Sequence[Sequence[Hashable | None]] | None = None,
    exact_key: selection.HostExactKey | None = None,
    delta: float = selection.DEFAULT_DELTA,
    centroid_vote_fraction: float = selection.DEFAULT_CENTROID_VOTE_FRACTION,
    max_subsets: int = DEFAULT_MAX_SUBSETS,
    samples: int = DEFAULT_SAMPLES,
    seed: int = DEFAULT_SEED,
) -> dict[int, ExpectedScores]:
  """Compute each problem's expected score of `method` over random n-subsets, for each n.

  Arguments are those of `accuracy_curve`. The per-problem scores feed bootstrap intervals.

  Returns:
    n -> ExpectedScores, in the order of `n_values` (duplicates dropped).
  """
  _check_sampling(max_subsets, samples, seed)
  inputs = _prepare(method, correct, present=present, centroids=centroids, scores=scores,
                    answers=answers, exact_key=exact_key, delta=delta,
                    centroid_vote_fraction=centroid_vote_fraction)
  return {n: _expected_scores(inputs, n, max_subsets, samples, seed)
          for n in _check_n_values(n_values, inputs.present.shape[1])}


def curve_point(expected: ExpectedScores) -> dict:
  """Summarise expected per-problem scores over the labelled problems.

  Returns:
    {accuracy (None when no problem is labelled), correct (expected count), total, unanswered
    (expected count among labelled problems), unlabelled, estimate (bool), samples (random
    subsets per estimated problem, or None), estimated_problems}.
  """
  labelled = expected.labelled
  total = int(np.sum(labelled))
  correct = float(np.sum(expected.scores[labelled]))
  estimate = bool(np.any(expected.estimated[labelled]))
  return {
      "accuracy": correct / total if total else None,
      "correct": correct,
      "total": total,
      "unanswered": float(np.sum(expected.unanswered[labelled])),
      "unlabelled": int(np.sum(~labelled)),
      "estimate": estimate,
      "samples": expected.samples if estimate else None,
      "estimated_problems": int(np.sum(expected.estimated[labelled])),
  }


def accuracy_curve(
    method: str,
    correct,
    n_values: Sequence[int],
    *,
    present=None,
    centroids=None,
    scores=None,
    answers: Sequence[Sequence[Hashable | None]] | None = None,
    exact_key: selection.HostExactKey | None = None,
    delta: float = selection.DEFAULT_DELTA,
    centroid_vote_fraction: float = selection.DEFAULT_CENTROID_VOTE_FRACTION,
    max_subsets: int = DEFAULT_MAX_SUBSETS,
    samples: int = DEFAULT_SAMPLES,
    seed: int = DEFAULT_SEED,
) -> dict[int, dict]:
  """Compute the expected accuracy of `method` when only n trajectories per problem are available.

  A problem with any unlabelled present trajectory is left out of every point, as in
  `selection.evaluate_methods`, and an unanswered problem counts as wrong. At n = N the point
  equals the method's accuracy on all trajectories.

  Args:
    method: one of CURVE_METHODS.
    correct: `[problems, N]` correctness; see `labels_table`.
    n_values: the n to evaluate, each in [1, N].
    present: `[problems, N]` bools; default all present.
    centroids: `[problems, N]` floats, NaN for no centroid: the table of `lowest_centroid`,
      `lowest_centroid_delta` and `centroid_vote`.
    scores: `[problems, N]` floats of a score method (SCORE_METHOD_DIRECTIONS), NaN for none.
    answers: per problem, N normalised answers or None, for the votes.
    exact_key: optional exact ordering key of the centroids (see `selection`).
    delta: the fixed delta of `lowest_centroid_delta`.
    centroid_vote_fraction: share of centroided trajectories that vote in `centroid_vote`.
    max_subsets: largest C(M, n) whose subsets a subset method enumerates.
    samples: random subsets drawn per problem above that limit.
    seed: seed of those draws; a problem's draws depend on (seed, problem index, n) only.

  Returns:
    n -> the `curve_point` dict, in the order of `n_values` (duplicates dropped).
  """
  by_n = expected_scores_by_n(
      method, correct, n_values, present=present, centroids=centroids, scores=scores,
      answers=answers, exact_key=exact_key, delta=delta,
      centroid_vote_fraction=centroid_vote_fraction, max_subsets=max_subsets, samples=samples,
      seed=seed)
  return {n: curve_point(expected) for n, expected in by_n.items()}
