"""The best-of-N sampler on a tiny random decoder: statistics, stops, keys and scoring."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from ec_jax.model import config as config_lib
from ec_jax.model import params as params_lib
from ec_jax.model import testing as model_testing
from ec_jax.sampling import generate as generate_lib
from ec_jax.scoring import pipeline
from ec_jax.scoring import settings as settings_lib
from ec_jax.scoring import token_stats

STOP_ID = 3
PROMPTS = np.array([[0, 0, 5, 6, 7], [1, 2, 3, 4, 5], [0, 9, 8, 7, 6]], np.int32)
PROMPT_LENGTHS = np.array([3, 5, 4], np.int32)
UIDS = np.array([101, 202, 303], np.int32)


@functools.lru_cache(maxsize=None)
def tiny_model():
  decoder = model_testing.random_decoder(config_lib.tiny_llama(), seed=1)
  return nnx.split(decoder)


def run(spec, prompts=PROMPTS, lengths=PROMPT_LENGTHS, uids=UIDS, temperature=1.0, top_p=1.0,
        top_k=0, max_new_tokens=None, seed=0):
  graphdef, state = tiny_model()
  sampling = generate_lib.SamplingParams(
      np.float32(temperature), np.float32(top_p), np.int32(top_k),
      np.int32(max_new_tokens or spec.max_new_tokens))
  scoring = generate_lib.ScoringParams(
      pipeline.settings_inputs([settings_lib.PhaseSetting(5, 50, 2)]), np.float32(0.1),
      np.int32(8), np.int32(8))
  out = generate_lib.generate_jit(state, prompts, lengths, uids, np.int32(seed),
                                  np.array([STOP_ID], np.int32), sampling, scoring,
                                  graphdef=graphdef, spec=spec)
  return jax.device_get(out)


SPEC = generate_lib.SamplerSpec(num_samples=4, max_new_tokens=20, candidate_k=32)


def teacher_forced_statistics(prompt, prompt_length, tokens, entropy_k):
  """Statistics of each generated position from one full forward pass over prompt + tokens."""
  graphdef, state = tiny_model()
  model = nnx.merge(graphdef, state)
  real_prompt = prompt[len(prompt) - prompt_length:]
  sequence = np.concatenate([real_prompt, tokens])[None, :]
  logits = model.forward(jnp.asarray(sequence))[0]
  predicting = logits[prompt_length - 1:prompt_length - 1 + len(tokens)]
  return token_stats.token_statistics(predicting, jnp.asarray(tokens), entropy_k)


def test_statistics_equal_forward_pass():
  out = run(SPEC)
  for row in range(PROMPTS.shape[0] * SPEC.num_samples):
    problem = row // SPEC.num_samples
    length = out.lengths[row]
    assert length >= 1
    tokens = out.tokens[row, :length]
    expected = teacher_forced_statistics(PROMPTS[problem], PROMPT_LENGTHS[problem], tokens,
                                         SPEC.entropy_k)
    for name in ("logprob", "entropy_topk", "entropy_full", "confidence", "self_certainty"):
      np.testing.assert_allclose(out.statistics[name][row, :length], getattr(expected, name),
                                 rtol=1e-5, atol=1e-5, err_msg=f"row {row} {name}")


def test_lengths_stop_tokens_and_padding():
  out = run(SPEC)
  for row, length in enumerate(out.lengths):
    tokens = out.tokens[row]
    stops = np.flatnonzero(tokens[:length] == STOP_ID)
    if out.stopped[row]:
      assert stops.tolist() == [length - 1], row
    else:
      assert length == SPEC.max_new_tokens and stops.size == 0, row
    assert (tokens[length:] == SPEC.pad_id).all(), row
    for name, values in out.statistics.items():
      assert (values[row, length:] == 0).all(), (row, name)


def test_traced_limit_stops_early():
  out = run(SPEC, max_new_tokens=5)
  assert out.steps <= 5
  assert out.lengths.max() <= 5


def test_greedy_is_argmax_of_forward_pass():
  out = run(SPEC, temperature=0.0)
  rows = out.tokens.reshape(3, SPEC.num_samples, -1)
  assert (rows == rows[:, :1]).all(), "greedy samples of one prompt must agree"
  graphdef, state = tiny_model()
  model = nnx.merge(graphdef, state)
  for problem in range(3):
    length = out.lengths[problem * SPEC.num_samples]
    tokens = out.tokens[problem * SPEC.num_samples, :length]
    prompt = PROMPTS[problem][PROMPTS.shape[1] - PROMPT_LENGTHS[problem]:]
    logits = model.forward(jnp.asarray(np.concatenate([prompt, tokens])[None]))[0]
    expected = np.argmax(np.asarray(logits[len(prompt) - 1:len(prompt) - 1 + length]), axis=-1)
    assert tokens.tolist() == expected.tolist()
  assert (out.statistics["entropy_sampling"] == 0).all()


def test_scores_match_offline_scoring():
  out = run(SPEC)
  with jax.enable_x64(False):
    offline = pipeline.score_trajectories_jit(
        out.statistics["entropy_topk"], np.arange(SPEC.max_new_tokens)[None] < out.lengths[:, None],
        out.lengths, pipeline.settings_inputs([settings_lib.PhaseSetting(5, 50, 2)]))
  np.testing.assert_array_equal(out.scores["num_phases"], offline.num_phases[:, 0])
  np.testing.assert_array_equal(out.scores["phases"], offline.details.phases)
  np.testing.assert_allclose(out.scores["centroid"],
                             offline.centroids["length"]["weighted_average_center"][:, 0])
  centroids = out.scores["centroid"].reshape(3, SPEC.num_samples)
  for problem, choice in enumerate(out.selections["lowest_centroid"]):
    row = centroids[problem]
    if np.isnan(row).all():
      assert choice == -1
    else:
      assert choice == int(np.nanargmin(row))


def test_keys_independent_of_batch_order_and_n():
  base = run(SPEC)
  order = np.array([2, 0, 1])
  reordered = run(SPEC, prompts=PROMPTS[order], lengths=PROMPT_LENGTHS[order], uids=UIDS[order])
  wide = run(dataclass_replace(SPEC, num_samples=8))
  per_problem = base.tokens.reshape(3, 4, -1)
  diverged = 0
  for new_position, problem in enumerate(order):
    other = reordered.tokens.reshape(3, 4, -1)[new_position]
    diverged += int((other != per_problem[problem]).any(axis=-1).sum())
  for problem in range(3):
    first_four = wide.tokens.reshape(3, 8, -1)[problem, :4]
    diverged += int((first_four != per_problem[problem]).any(axis=-1).sum())
  # Floating point may differ across batch shapes, which can rarely flip a draw (at most a few
  # of the 24 compared trajectories); the random draws themselves are the same.
  print(f"diverging trajectories: {diverged} of 24")
  assert diverged <= 3


def test_nucleus_overflow_is_counted():
  small = generate_lib.SamplerSpec(num_samples=2, max_new_tokens=6, candidate_k=10)
  out = run(small, top_p=1.0)
  # A random tiny model spreads its mass over 320 tokens, so 10 candidates never hold all of it.
  assert (out.nucleus_overflow == out.lengths).all()
  out = run(small, top_p=0.05)
  assert (out.nucleus_overflow == 0).all()


def dataclass_replace(spec, **changes):
  import dataclasses
  return dataclasses.replace(spec, **changes)


@pytest.mark.parametrize("name,value", [("num_samples", 0), ("candidate_k", 4)])
def test_spec_rejects_invalid_values(name, value):
  with pytest.raises(ValueError, match=name):
    dataclass_replace(SPEC, **{name: value})


def sample_on_mesh(data_size, num_samples, order=slice(None)):
  graphdef, state = tiny_model()
  mesh = jax.make_mesh((data_size, 1), ("data", "model"), devices=jax.devices()[:data_size],
                       axis_types=(jax.sharding.AxisType.Auto,) * 2)
  state = jax.device_put(state, jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec()))
  spec = dataclass_replace(SPEC, num_samples=num_samples, mesh=mesh)
  sampling = generate_lib.SamplingParams(np.float32(1.0), np.float32(0.95), np.int32(0),
                                         np.int32(spec.max_new_tokens))
  scoring = generate_lib.ScoringParams(
      pipeline.settings_inputs([settings_lib.PhaseSetting()]), np.float32(0.1), np.int32(8),
      np.int32(8))
  return generate_lib.sample(state, graphdef, spec, PROMPTS[order], PROMPT_LENGTHS[order],
                             UIDS[order], 7, np.array([STOP_ID]), sampling, scoring)


def test_one_and_eight_devices_agree():
  reference = sample_on_mesh(1, 4)
  assert reference.tokens.shape == (12, SPEC.max_new_tokens)
  compared = diverged = 0
  for data_size, num_samples, order in ((8, 4, slice(None)), (8, 8, slice(None)),
                                        (8, 4, slice(None, None, -1))):
    out = sample_on_mesh(data_size, num_samples, order)
    problems = np.arange(3)[order]
    for position, problem in enumerate(problems):
      for n in range(4):
        ours = out.tokens[position * num_samples + n]
        theirs = reference.tokens[problem * 4 + n]
        compared += 1
        if (ours != theirs).any():
          diverged += 1
          continue
        row_ours = position * num_samples + n
        row_theirs = problem * 4 + n
        length = reference.lengths[row_theirs]
        assert out.lengths[row_ours] == length
        for name in ("logprob", "entropy_topk", "entropy_full"):
          np.testing.assert_allclose(out.statistics[name][row_ours, :length],
                                     reference.statistics[name][row_theirs, :length],
                                     atol=2e-4, rtol=0, err_msg=name)
  # Different per-device shapes may round differently and rarely flip a sampled token.
  print(f"trajectories diverging from the 1-device run: {diverged} of {compared}")
  assert diverged <= compared // 4


def sharded_setup(data, model):
  """Return the tiny model split over a (data, model) mesh, its spec and traced inputs.

  Heads, key/value heads, the SwiGLU width and the vocabulary are split over `model`.
  """
  from ec_jax.parallel import mesh as mesh_lib
  config = config_lib.tiny_llama()
  mesh = mesh_lib.make_mesh(data=data, model=model, devices=jax.devices()[:data * model])
  decoder = params_lib.decoder_from_params(config, model_testing.random_params(config, seed=1),
                                           mesh_lib.param_shardings(config, mesh))
  graphdef, state = nnx.split(decoder)
  spec = dataclass_replace(SPEC, mesh=mesh)
  sampling = generate_lib.SamplingParams(np.float32(1.0), np.float32(0.95), np.int32(0),
                                         np.int32(spec.max_new_tokens))
  scoring = generate_lib.ScoringParams(
      pipeline.settings_inputs([settings_lib.PhaseSetting()]), np.float32(0.1), np.int32(8),
      np.int32(8))
  return graphdef, state, spec, sampling, scoring


def test_model_axis_sharding_agrees_with_one_device():
  graphdef, state, spec, sampling, scoring = sharded_setup(2, 4)
  sharded = generate_lib.sample(state, graphdef, spec, PROMPTS, PROMPT_LENGTHS, UIDS, 7,
                                np.array([STOP_ID]), sampling, scoring)
  reference = sample_on_mesh(1, 4)
  diverged = int((sharded.tokens != reference.tokens).any(axis=1).sum())
  print(f"trajectories diverging between a (2, 4) mesh and one device: {diverged} of 12")
  assert diverged <= 3
  same = ~(sharded.tokens != reference.tokens).any(axis=1)
  for row in np.flatnonzero(same):
    length = reference.lengths[row]
    np.testing.assert_allclose(sharded.statistics["logprob"][row, :length],
                               reference.statistics["logprob"][row, :length], atol=2e-4, rtol=0)
  np.testing.assert_array_equal(sharded.selections["lowest_centroid"][same.reshape(3, 4).all(1)],
                                reference.selections["lowest_centroid"][same.reshape(3, 4).all(1)])


def _vocabulary_sorts(compiled_text: str, lengths: tuple[int, ...]) -> list[str]:
  """Return the lines of compiled HLO that sort an axis of one of the given lengths."""
  sorts = [line.split(" sort(")[0] for line in compiled_text.splitlines() if " sort(" in line]
  return [line for line in sorts if any(f",{length}]" in line for length in lengths)]


@pytest.mark.parametrize("data,model", [(1, 1), (1, 2), (2, 4)])
def test_sampler_never_sorts_vocabulary(data, model):
  # Slicing the outputs of the candidate top-k made XLA's CPU backend sort the whole vocabulary
  # at every step instead (120 times slower with Qwen's 151,936 tokens).
  graphdef, state, spec, sampling, scoring = sharded_setup(data, model)
  vocab_size = config_lib.tiny_llama().vocab_size
  prompts = np.repeat(PROMPTS[:1], 2, axis=0)
  compiled = generate_lib.generate_jit.lower(
      state, prompts, np.repeat(PROMPT_LENGTHS[:1], 2), UIDS[:2], np.int32(0),
      np.array([STOP_ID], np.int32), sampling, scoring, graphdef=graphdef, spec=spec).compile()
  vocabulary_lengths = (vocab_size, vocab_size // model)
  assert _vocabulary_sorts(compiled.as_text(), vocabulary_lengths) == []
