"""The best-of-N sampler: one jitted function from prompts to scored, selected trajectories.

  prompts [B, P] ──prefill──► logits [B, V], cache ──repeat ×N──► [B·N] rows
  lax.while_loop over steps, until every row stopped or max_new_tokens:
      lax.top_k candidates ─► token statistics ─► sample ─► write column `step` ─► decode_step
  lengths (through the first stop token) ─► thresholds, phases, centroids (scoring pipeline)
  ─► per-trajectory scores of every in-graph method ─► selections over [B, N]

Row r = b * N + n is sample n of problem b. Per-token buffers are preallocated `[B·N, T]` with
T = `SamplerSpec.max_new_tokens`; the traced `max_new_tokens` may stop earlier. Positions at or
after a row's length hold `pad_id` and zeros.
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax import lax

from ec_jax.model import kv_cache
from ec_jax.sampling import filters
from ec_jax.sampling import keys as keys_lib
from ec_jax.scoring import deepconf
from ec_jax.scoring import pipeline
from ec_jax.scoring import selection
from ec_jax.scoring import settings as settings_lib
from ec_jax.scoring import token_stats

STATISTICS = ("logprob", "entropy_topk", "entropy_full", "entropy_sampling", "confidence",
              "self_certainty")
SELECTION_ENTROPIES = ("topk", "full", "sampling")


@dataclasses.dataclass(frozen=True)
class SamplerSpec:
  """Static sampler options: each distinct value compiles its own sampler.

  Attributes:
    num_samples: N trajectories per prompt.
    max_new_tokens: T, the size of the per-token buffers (the traced limit may be smaller).
    candidate_k: size of the static candidate set sampled from (>= entropy_k).
    entropy_k: k of the top-k entropy and DeepConf's confidence.
    selection_entropy: entropy used for phases and `lowest_mean_entropy`: topk, full or sampling.
    centroid_method: the centroid that `lowest_centroid` minimises.
    phase_mass: `length` or `entropy`.
    max_phases: phases listed per trajectory (counts and centroids stay exact beyond it).
    with_statistics: record the per-step statistics (off only to measure their cost).
    with_scoring: score and select after the loop (needs with_statistics).
    pad_id: token written after a row's end.
    mesh: optional mesh; rows are sharded over its `data` axis.
  """

  num_samples: int
  max_new_tokens: int
  candidate_k: int = 64
  entropy_k: int = 10
  selection_entropy: str = "topk"
  centroid_method: str = "weighted_average_center"
  phase_mass: str = "length"
  max_phases: int = settings_lib.DEFAULT_MAX_PHASES
  with_statistics: bool = True
  with_scoring: bool = True
  pad_id: int = 0
  mesh: jax.sharding.Mesh | None = None

  def __post_init__(self):
    for name in ("num_samples", "max_new_tokens", "candidate_k", "entropy_k"):
      value = getattr(self, name)
      if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}.")
    if self.candidate_k < self.entropy_k:
      raise ValueError(f"candidate_k ({self.candidate_k}) must be at least entropy_k "
                       f"({self.entropy_k}): the top-k statistics come from the candidate set.")
    if self.selection_entropy not in SELECTION_ENTROPIES:
      raise ValueError(f"selection_entropy must be one of {SELECTION_ENTROPIES}, got "
                       f"{self.selection_entropy!r}.")
    if self.centroid_method not in settings_lib.CENTROID_METHODS:
      raise ValueError(f"centroid_method must be one of {settings_lib.CENTROID_METHODS}, got "
                       f"{self.centroid_method!r}.")
    if self.phase_mass not in settings_lib.PHASE_MASSES:
      raise ValueError(f"phase_mass must be one of {settings_lib.PHASE_MASSES}, got "
                       f"{self.phase_mass!r}.")
    settings_lib.validate_max_phases(self.max_phases)
    if self.with_scoring and not self.with_statistics:
      raise ValueError("with_scoring needs with_statistics: the scores use the entropies.")


class SamplingParams(NamedTuple):
  """Traced sampling knobs (changing them never recompiles)."""

  temperature: jax.Array  # >= 0; 0 is greedy
  top_p: jax.Array  # in (0, 1]
  top_k: jax.Array  # int; 0 keeps the whole candidate set
  max_new_tokens: jax.Array  # int in [1, SamplerSpec.max_new_tokens]


class ScoringParams(NamedTuple):
  """Traced scoring inputs: threshold settings (setting 0 is the configured one) and knobs."""

  settings: pipeline.SettingsInputs
  delta: jax.Array
  deepconf_window: jax.Array
  deepconf_tail: jax.Array


class SampleOutput(NamedTuple):
  """Everything the sampler returns; `[rows]` = `[B·N]` unless noted."""

  tokens: jax.Array  # [rows, T] int32
  lengths: jax.Array  # [rows] int32, tokens through the first stop token
  stopped: jax.Array  # [rows] bool, ended on a stop token (else the length limit)
  nucleus_overflow: jax.Array  # [rows] int32, steps whose top-p nucleus overflowed candidates
  steps: jax.Array  # [] int32, decode steps run
  statistics: dict | None  # name -> [rows, T] float32 (STATISTICS)
  scores: dict | None  # per-trajectory scores, see `score_rows`
  selections: dict | None  # method -> [B] int32 trajectory index, -1 when unanswered


class _LoopState(NamedTuple):
  step: jax.Array
  logits: jax.Array
  cache: kv_cache.KVCache
  tokens: jax.Array
  statistics: dict
  done: jax.Array
  lengths: jax.Array
  overflow: jax.Array


def _constrain_rows(tree, spec: SamplerSpec):
  """Shard the leading (row) axis of every array over the mesh's `data` axis, if a mesh is set.

  Cache arrays `[rows, kv_heads, slots, head_dim]` also put their heads on `model`.
  """
  if spec.mesh is None:
    return tree
  heads_axis = "model" if spec.mesh.shape.get("model", 1) > 1 else None

  def constrain(x):
    if not hasattr(x, "ndim") or x.ndim == 0:
      return x
    rest = [None] * (x.ndim - 1)
    if x.ndim == 4:
      rest[0] = heads_axis
    partition = jax.sharding.PartitionSpec("data", *rest)
    return lax.with_sharding_constraint(x, jax.sharding.NamedSharding(spec.mesh, partition))

  return jax.tree.map(constrain, tree)


def _write_column(buffer: jax.Array, step: jax.Array, values: jax.Array,
                  active: jax.Array) -> jax.Array:
  values = jnp.where(active, values, jnp.zeros_like(values)).astype(buffer.dtype)
  return lax.dynamic_update_slice_in_dim(buffer, values[:, None], step, axis=1)


def decode_loop(model, logits: jax.Array, cache: kv_cache.KVCache, row_keys: jax.Array,
                stop_ids: jax.Array, sampling: SamplingParams, spec: SamplerSpec
                ) -> _LoopState:
  """Run the decode loop from the prompt's last logits `[rows, vocab]` and cache."""
  rows = logits.shape[0]
  time = spec.max_new_tokens
  statistics = {}
  if spec.with_statistics:
    statistics = {name: jnp.zeros((rows, time), jnp.float32) for name in STATISTICS}
  initial = _LoopState(
      step=jnp.zeros((), jnp.int32), logits=logits, cache=cache,
      tokens=jnp.full((rows, time), spec.pad_id, jnp.int32), statistics=statistics,
      done=jnp.zeros((rows,), bool), lengths=jnp.zeros((rows,), jnp.int32),
      overflow=jnp.zeros((rows,), jnp.int32))
  limit = jnp.minimum(jnp.asarray(sampling.max_new_tokens, jnp.int32), time)

  def condition(state: _LoopState) -> jax.Array:
    return (state.step < limit) & ~jnp.all(state.done)

  def body(state: _LoopState) -> _LoopState:
    candidate_logits, candidate_ids = lax.top_k(state.logits, spec.candidate_k)
    draw = filters.sample_from_candidates(
        keys_lib.step_keys(row_keys, state.step), candidate_logits, candidate_ids,
        state.logits, sampling.temperature, sampling.top_p, sampling.top_k)
    active = ~state.done
    token = jnp.where(active, draw.token, spec.pad_id)
    statistics = state.statistics
    if spec.with_statistics:
      stats = token_stats.token_statistics(state.logits, draw.token, spec.entropy_k,
                                           top_logits=candidate_logits)
      values = dict(stats._asdict(), entropy_sampling=draw.entropy)
      statistics = {name: _write_column(state.statistics[name], state.step, values[name], active)
                    for name in STATISTICS}
    tokens = lax.dynamic_update_slice_in_dim(state.tokens, token[:, None], state.step, axis=1)
    stopped = active & jnp.any(token[:, None] == stop_ids[None, :], axis=1)
    logits, cache = model.decode_step(token, state.cache)
    return _LoopState(
        step=state.step + 1, logits=_constrain_rows(logits, spec),
        cache=_constrain_rows(cache, spec), tokens=tokens, statistics=statistics,
        done=state.done | stopped,
        lengths=jnp.where(active, state.step + 1, state.lengths),
        overflow=state.overflow + (active & draw.nucleus_overflow).astype(jnp.int32))

  return lax.while_loop(condition, body, initial)


def score_rows(statistics: dict, lengths: jax.Array, scoring: ScoringParams,
               spec: SamplerSpec) -> dict:
  """Score every row: thresholds, phases, centroids and the per-trajectory baseline scores.

  Returns `[rows]` arrays keyed `centroid` (the configured method), each centroid method by name,
  `num_phases`, `high_threshold`, `low_threshold`, `center_numerator`, `center_denominator`,
  `mean_entropy`, `self_certainty`, the DeepConf scores, and the sweep's `[rows, settings]`
  arrays `sweep_<name>`; plus `phases [rows, max_phases, 2]`, `phase_overflow` and `phase_id
  [rows, T]` of the configured setting.
  """
  entropies = statistics["entropy_" + spec.selection_entropy]
  time = entropies.shape[1]
  valid = jnp.arange(time)[None, :] < lengths[:, None]
  scoring_spec = pipeline.ScoringSpec(max_phases=spec.max_phases, with_details=True,
                                      phase_masses=(spec.phase_mass,))
  result = pipeline.score_trajectories(entropies, valid, lengths, scoring.settings, scoring_spec)
  centroids = dict(result.centroids[spec.phase_mass])
  centroids["raw_entropy"] = jnp.broadcast_to(result.raw_entropy[:, None],
                                              result.num_phases.shape)
  out = {name: values[:, 0] for name, values in centroids.items()}
  out["centroid"] = out[spec.centroid_method]
  out.update(num_phases=result.num_phases[:, 0], high_threshold=result.high_threshold[:, 0],
             low_threshold=result.low_threshold[:, 0],
             center_numerator=result.center_numerator[:, 0],
             center_denominator=result.center_denominator[:, 0],
             phases=result.details.phases, phase_overflow=result.details.overflow,
             phase_id=result.details.phase_id)
  out["sweep_centroid"] = centroids[spec.centroid_method]
  out["sweep_num_phases"] = result.num_phases
  out["sweep_high_threshold"] = result.high_threshold
  out["sweep_low_threshold"] = result.low_threshold
  out["mean_entropy"] = deepconf.mean_entropy(entropies, lengths, valid)
  out["self_certainty"] = deepconf.mean_self_certainty(statistics["self_certainty"], lengths,
                                                       valid)
  out.update(deepconf.deepconf_scores(statistics["confidence"], lengths, valid,
                                      window=scoring.deepconf_window, tail=scoring.deepconf_tail))
  return out


def select_in_graph(scores: dict, problems: int, spec: SamplerSpec,
                    delta: jax.Array) -> dict:
  """Return the in-graph selections over `[problems, N]`: trajectory index per problem or -1."""
  def table(name):
    return scores[name].reshape(problems, spec.num_samples)

  present = jnp.ones((problems, spec.num_samples), bool)
  exact_key = None
  if spec.centroid_method == "weighted_average_center" and spec.phase_mass == "length":
    exact_key = (table("center_numerator"), table("center_denominator"))
  out = {
      "lowest_centroid": selection.select_lowest(table("centroid"), present, exact_key=exact_key),
      "lowest_centroid_delta": selection.select_lowest_centroid_delta(
          table("centroid"), present, delta, exact_key=exact_key),
      "lowest_mean_entropy": selection.select_lowest(table("mean_entropy"), present),
  }
  for name, direction in selection.SCORE_METHOD_DIRECTIONS.items():
    if name == "lowest_mean_entropy":
      continue
    source = "self_certainty" if name == "self_certainty" else name
    rule = selection.select_highest if direction == "highest" else selection.select_lowest
    out[name] = rule(table(source), present)
  return out


def generate(state: nnx.State, prompts: jax.Array, prompt_lengths: jax.Array,
             problem_uids: jax.Array, seed: jax.Array, stop_ids: jax.Array,
             sampling: SamplingParams, scoring: ScoringParams | None, *,
             graphdef: nnx.GraphDef, spec: SamplerSpec) -> SampleOutput:
  """Sample N trajectories per prompt, then score and select them, in one jit.

  Args:
    state: model weights from `nnx.split` (traced, so new weights never recompile).
    prompts: `[B, P]` int32 left-padded prompts (P is one of a few bucket sizes).
    prompt_lengths: `[B]` real prompt tokens per row, in [1, P].
    problem_uids: `[B]` int32 problem uids (for the per-trajectory keys).
    seed: int scalar.
    stop_ids: `[S]` int32 ids that end a trajectory (included in its length).
    sampling: traced sampling knobs.
    scoring: traced scoring inputs; ignored unless spec.with_scoring.
    graphdef: static model structure from `nnx.split`.
    spec: static options.
  """
  model = nnx.merge(graphdef, state)
  problems, prompt_len = prompts.shape
  samples = spec.num_samples
  last_logits, cache = model.prefill(prompts, prompt_lengths, prompt_len + spec.max_new_tokens)
  cache = _constrain_rows(kv_cache.repeat_cache(cache, samples), spec)
  logits = _constrain_rows(jnp.repeat(last_logits, samples, axis=0), spec)
  row_keys = keys_lib.trajectory_keys(
      seed, jnp.repeat(problem_uids, samples),
      jnp.tile(jnp.arange(samples, dtype=jnp.int32), problems))
  final = decode_loop(model, logits, cache, row_keys, jnp.asarray(stop_ids, jnp.int32),
                      sampling, spec)
  stopped = final.done
  scores = selections = None
  if spec.with_scoring:
    scores = score_rows(final.statistics, final.lengths, scoring, spec)
    selections = select_in_graph(scores, problems, spec, scoring.delta)
  return SampleOutput(tokens=final.tokens, lengths=final.lengths, stopped=stopped,
                      nucleus_overflow=final.overflow, steps=final.step,
                      statistics=final.statistics if spec.with_statistics else None,
                      scores=scores, selections=selections)


generate_jit = jax.jit(generate, static_argnames=("graphdef", "spec"))


def padded_problem_count(problems: int, num_samples: int, data_size: int) -> int:
  """Return the smallest count >= problems whose B * N rows divide evenly over `data_size`."""
  count = problems
  while (count * num_samples) % data_size:
    count += 1
  return count


def sample(state: nnx.State, graphdef: nnx.GraphDef, spec: SamplerSpec, prompts: np.ndarray,
           prompt_lengths: np.ndarray, problem_uids: np.ndarray, seed: int,
           stop_ids: np.ndarray, sampling: SamplingParams,
           scoring: ScoringParams | None) -> SampleOutput:
  """Run `generate_jit` on host arrays, padding problems so rows divide the mesh's data axis.

  Padding problems repeat the first prompt; their rows are computed and dropped, and never
  influence other rows (every row is sampled and scored on its own). Returns numpy arrays for
  the `prompts.shape[0]` real problems only.
  """
  problems = prompts.shape[0]
  data_size = spec.mesh.shape["data"] if spec.mesh is not None else 1
  padded = padded_problem_count(problems, spec.num_samples, data_size)
  extra = padded - problems
  if extra:
    prompts = np.concatenate([prompts, np.repeat(prompts[:1], extra, axis=0)])
    prompt_lengths = np.concatenate([prompt_lengths, np.repeat(prompt_lengths[:1], extra)])
    problem_uids = np.concatenate([problem_uids, np.repeat(problem_uids[:1], extra)])
  if spec.mesh is not None:
    replicated = jax.sharding.NamedSharding(spec.mesh, jax.sharding.PartitionSpec())
    prompts, prompt_lengths, problem_uids = jax.device_put(
        (prompts, prompt_lengths, problem_uids), replicated)
  out = generate_jit(state, prompts, prompt_lengths, problem_uids, np.int32(seed),
                     np.asarray(stop_ids, np.int32), sampling, scoring, graphdef=graphdef,
                     spec=spec)
  out = jax.device_get(out)
  rows = problems * spec.num_samples

  def trim(x, size):
    return x[:size] if isinstance(x, np.ndarray) and x.ndim >= 1 else x

  per_row = {name: getattr(out, name) for name in ("tokens", "lengths", "stopped",
                                                   "nucleus_overflow")}
  return SampleOutput(
      **{name: trim(value, rows) for name, value in per_row.items()}, steps=out.steps,
      statistics=None if out.statistics is None else
      {k: trim(v, rows) for k, v in out.statistics.items()},
      scores=None if out.scores is None else {k: trim(v, rows) for k, v in out.scores.items()},
      selections=None if out.selections is None else
      {k: trim(v, problems) for k, v in out.selections.items()})
