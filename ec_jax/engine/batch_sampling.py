"""One call of the best-of-N sampler per problem batch, with the config's traced knobs.

The sampler (`ec_jax.sampling.generate`) compiles once per static shape: prompt bucket, batch
slots and the `SamplerSpec`. Sampling knobs and threshold settings are traced, so changing them
never recompiles. Each new shape is logged before its first call.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from absl import logging
import jax
import numpy as np

from ec_jax import parallel
from ec_jax.engine import model_loading
from ec_jax.sampling import generate as generate_lib
from ec_jax.scoring import pipeline
from ec_jax.scoring import settings as settings_lib


@dataclasses.dataclass(frozen=True)
class SamplerSetup:
  """The static specs and traced inputs shared by every batch of a run.

  Attributes:
    spec: the sampler spec of the N sampled trajectories per problem.
    greedy_spec: the spec of the one temperature-0 trajectory per problem, or None.
    sampling: traced knobs of the N trajectories.
    greedy_sampling: the same knobs with temperature 0.
    scoring: traced threshold settings (setting 0 is the configured one), delta, DeepConf sizes.
    settings: the threshold settings, in the order of `scoring`.
    stop_ids: `[S]` int32 ids that end a trajectory.
    seed: the run's seed (the per-trajectory keys fold in the problem uid and index).
  """

  spec: generate_lib.SamplerSpec
  greedy_spec: generate_lib.SamplerSpec | None
  sampling: generate_lib.SamplingParams
  greedy_sampling: generate_lib.SamplingParams
  scoring: generate_lib.ScoringParams
  settings: tuple[settings_lib.PhaseSetting, ...]
  stop_ids: np.ndarray
  seed: int


def phase_settings(config: Any) -> tuple[settings_lib.PhaseSetting, ...]:
  """Return the configured threshold setting, then the sweep grid when `sweep` is on."""
  setting = settings_lib.PhaseSetting(float(config.phases.top_percent),
                                      float(config.phases.bottom_percent),
                                      int(config.phases.consecutive_low))
  if not config.sweep:
    return (setting,)
  grid = settings_lib.sweep_grid(tuple(config.sweep_grid.top_percent),
                                 tuple(config.sweep_grid.bottom_percent),
                                 tuple(config.sweep_grid.consecutive_low))
  return (setting, *grid)


def sampler_setup(config: Any, mesh: jax.sharding.Mesh,
                  model: model_loading.LoadedModel) -> SamplerSetup:
  """Build the specs and traced inputs of a validated best_of_n config."""
  spec = generate_lib.SamplerSpec(
      num_samples=int(config.num_samples), max_new_tokens=int(config.max_new_tokens),
      candidate_k=int(config.candidate_k), entropy_k=int(config.entropy_k),
      selection_entropy=str(config.selection_entropy),
      centroid_method=str(config.centroid_method), phase_mass=str(config.phase_mass),
      max_phases=int(config.phases.max_phases), mesh=mesh)
  greedy_spec = dataclasses.replace(spec, num_samples=1) if config.greedy else None
  max_new_tokens = np.int32(config.max_new_tokens)
  sampling = generate_lib.SamplingParams(
      temperature=np.float32(config.temperature), top_p=np.float32(config.top_p),
      top_k=np.int32(config.top_k), max_new_tokens=max_new_tokens)
  greedy_sampling = sampling._replace(temperature=np.float32(0.0))
  settings = phase_settings(config)
  scoring = generate_lib.ScoringParams(
      settings=pipeline.settings_inputs(settings), delta=np.float32(config.delta),
      deepconf_window=np.int32(config.deepconf.window),
      deepconf_tail=np.int32(config.deepconf.tail))
  return SamplerSetup(spec=spec, greedy_spec=greedy_spec, sampling=sampling,
                      greedy_sampling=greedy_sampling, scoring=scoring, settings=settings,
                      stop_ids=np.asarray(model.tokenizer.stop_ids, np.int32),
                      seed=int(config.seed))


def _pad_problems(spec: generate_lib.SamplerSpec, *arrays: np.ndarray) -> tuple[np.ndarray, ...]:
  """Repeat the first problem until the B x N rows divide evenly over the mesh's data axis.

  The padding rows are sampled and dropped; every row is sampled and scored on its own, so they
  do not change the other rows.
  """
  problems = arrays[0].shape[0]
  data_size = spec.mesh.shape[parallel.DATA_AXIS]
  extra = generate_lib.padded_problem_count(problems, spec.num_samples, data_size) - problems
  if not extra:
    return arrays
  return tuple(np.concatenate([x, np.repeat(x[:1], extra, axis=0)]) for x in arrays)


def _trim(output: generate_lib.SampleOutput, problems: int,
          num_samples: int) -> generate_lib.SampleOutput:
  """Keep the rows (and selections) of the first `problems` problems."""
  rows = problems * num_samples

  def trim(x, size):
    return x[:size] if isinstance(x, np.ndarray) and x.ndim >= 1 else x

  return output._replace(
      tokens=trim(output.tokens, rows), lengths=trim(output.lengths, rows),
      stopped=trim(output.stopped, rows), nucleus_overflow=trim(output.nucleus_overflow, rows),
      statistics=jax.tree.map(lambda x: trim(x, rows), output.statistics),
      scores=jax.tree.map(lambda x: trim(x, rows), output.scores),
      selections=jax.tree.map(lambda x: trim(x, problems), output.selections))


class BatchSampler:
  """Runs the sampler on problem batches and returns host copies of its outputs."""

  def __init__(self, model: model_loading.LoadedModel, setup: SamplerSetup):
    self._model = model
    self._setup = setup
    self._compiled_shapes: set[tuple[Any, ...]] = set()

  def sample(self, prompts: np.ndarray, prompt_lengths: np.ndarray, problem_uids: np.ndarray,
             greedy: bool = False) -> generate_lib.SampleOutput:
    """Sample a batch: N trajectories per prompt, or one greedy trajectory when `greedy`.

    Args:
      prompts: `[B, P]` int32 left-padded prompts, P a prompt bucket.
      prompt_lengths: `[B]` int32 real prompt tokens per row.
      problem_uids: `[B]` int32 problem uids.
      greedy: sample one temperature-0 trajectory per prompt with `greedy_spec`.

    Returns:
      The sampler's output as numpy arrays (rows `[B * N]`), on every process.
    """
    setup = self._setup
    spec = setup.greedy_spec if greedy else setup.spec
    if spec is None:
      raise ValueError("greedy sampling was requested but the config has greedy = False.")
    sampling = setup.greedy_sampling if greedy else setup.sampling
    data_size = spec.mesh.shape[parallel.DATA_AXIS]
    padded = generate_lib.padded_problem_count(prompts.shape[0], spec.num_samples, data_size)
    shape = ((padded, prompts.shape[1]), spec)
    if shape not in self._compiled_shapes:
      self._compiled_shapes.add(shape)
      rows = padded * spec.num_samples
      logging.info("Compiling the sampler for %d prompts of %d tokens x %d samples "
                   "(%d rows, %d new tokens)%s.", padded, prompts.shape[1],
                   spec.num_samples, rows, spec.max_new_tokens, " (greedy)" if greedy else "")
    problems = prompts.shape[0]
    prompts, prompt_lengths, problem_uids = _pad_problems(
        spec, np.asarray(prompts, np.int32), np.asarray(prompt_lengths, np.int32),
        np.asarray(problem_uids, np.int32))
    replicated = jax.sharding.NamedSharding(spec.mesh, jax.sharding.PartitionSpec())
    prompts, prompt_lengths, problem_uids = (
        parallel.global_array_from_local(x, replicated, x.shape)
        for x in (prompts, prompt_lengths, problem_uids))
    output = generate_lib.generate_jit(
        self._model.state, prompts, prompt_lengths, problem_uids, np.int32(setup.seed),
        setup.stop_ids, sampling, setup.scoring, graphdef=self._model.graphdef, spec=spec)
    output = jax.tree.map(np.asarray, parallel.gather_to_host(output))
    return _trim(output, problems, spec.num_samples)

  @property
  def num_compiled_shapes(self) -> int:
    """The number of distinct shapes sampled so far (each compiled once)."""
    return len(self._compiled_shapes)
