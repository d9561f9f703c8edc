"""Tests of the decoder: cached decoding equals the full forward pass, padding, jit, dtypes."""

import dataclasses
import functools
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from ec_jax.model import config as config_lib
from ec_jax.model import kv_cache
from ec_jax.model import params as params_lib
from ec_jax.model import rope
from ec_jax.model.decoder import Decoder
from ec_jax.model.testing import random_decoder, random_params

CONFIGS = {
    "llama": config_lib.tiny_llama(),
    "qwen2": config_lib.tiny_qwen2(),
}

# Three prompts of different lengths, left-padded to 7 columns, then 4 continuation tokens.
PROMPTS = [[11, 12, 13, 14, 15], [21, 22], [31, 32, 33, 34, 35, 36, 37]]
CONTINUATIONS = [[41, 42, 43, 44], [51, 52, 53, 54], [61, 62, 63, 64]]
PAD_ID = 0


@nnx.jit
def forward(model: Decoder, tokens, input_mask=None):
  return model.forward(tokens, input_mask=input_mask)


@functools.partial(nnx.jit, static_argnames="cache_len")
def prefill(model: Decoder, tokens, lengths, cache_len: int):
  return model.prefill(tokens, lengths, cache_len)


@nnx.jit
def decode_step(model: Decoder, tokens, cache):
  return model.decode_step(tokens, cache)


def left_pad(rows: list[list[int]], width: int) -> tuple[np.ndarray, np.ndarray]:
  """Return tokens [batch, width] with rows left-padded by PAD_ID, and the row lengths."""
  tokens = np.full((len(rows), width), PAD_ID, np.int32)
  for b, row in enumerate(rows):
    tokens[b, width - len(row):] = row
  return tokens, np.array([len(row) for row in rows], np.int32)


def padded_batch():
  """Return prompt tokens [3, 7], prompt lengths [3] and continuation tokens [3, 4]."""
  prompt_len = max(len(p) for p in PROMPTS)
  tokens, lengths = left_pad(PROMPTS, prompt_len)
  return tokens, lengths, np.array(CONTINUATIONS, np.int32)


def teacher_forced_logits(model: Decoder, tokens, lengths, continuation) -> np.ndarray:
  """Return forward-pass logits [batch, 1 + steps, vocab] at the last prompt and each step."""
  full = np.concatenate([tokens, continuation], axis=1)
  prompt_len = tokens.shape[1]
  input_mask = np.arange(full.shape[1])[None, :] >= (prompt_len - lengths)[:, None]
  logits = forward(model, jnp.asarray(full), jnp.asarray(input_mask))
  return np.asarray(logits[:, prompt_len - 1:])


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_cached_decoding_matches_forward(name):
  model = random_decoder(CONFIGS[name], seed=1)
  tokens, lengths, continuation = padded_batch()
  steps = continuation.shape[1]
  expected = teacher_forced_logits(model, tokens, lengths, continuation)

  logits, cache = prefill(model, jnp.asarray(tokens), jnp.asarray(lengths),
                                cache_len=tokens.shape[1] + steps)
  np.testing.assert_allclose(logits, expected[:, 0], atol=1e-5, rtol=0)
  for step in range(steps):
    logits, cache = decode_step(model, jnp.asarray(continuation[:, step]), cache)
    np.testing.assert_allclose(logits, expected[:, step + 1], atol=1e-5, rtol=0)
  assert int(cache.length) == tokens.shape[1] + steps
  config = CONFIGS[name]
  layout = (len(PROMPTS), config.num_kv_heads, tokens.shape[1] + steps, config.head_dim)
  assert cache.keys[0].shape == layout
  assert len(cache.values) == config.num_layers


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_left_padding_matches_unpadded_rows(name):
  model = random_decoder(CONFIGS[name], seed=2)
  tokens, lengths, continuation = padded_batch()
  padded = teacher_forced_logits(model, tokens, lengths, continuation)
  for b, (prompt, extra) in enumerate(zip(PROMPTS, CONTINUATIONS)):
    alone = np.asarray(forward(model, jnp.asarray([prompt + extra], jnp.int32)))[0]
    np.testing.assert_allclose(padded[b], alone[len(prompt) - 1:], atol=1e-5, rtol=0)


def test_padding_token_id_does_not_matter():
  model = random_decoder(CONFIGS["qwen2"], seed=3)
  tokens, lengths, _ = padded_batch()
  other = tokens.copy()
  other[tokens == PAD_ID] = 7
  first, _ = prefill(model, jnp.asarray(tokens), jnp.asarray(lengths), cache_len=8)
  second, _ = prefill(model, jnp.asarray(other), jnp.asarray(lengths), cache_len=8)
  np.testing.assert_array_equal(first, second)


def test_jit_decode_loop_with_traced_weights():
  model = random_decoder(CONFIGS["llama"], seed=4)
  tokens, lengths, continuation = padded_batch()
  steps = continuation.shape[1]
  expected = teacher_forced_logits(model, tokens, lengths, continuation)
  graphdef, state = nnx.split(model)
  traces = []

  @jax.jit
  def run(state, tokens, lengths, continuation):
    traces.append(1)
    decoder = nnx.merge(graphdef, state)
    first, cache = decoder.prefill(tokens, lengths, cache_len=tokens.shape[1] + steps)
    buffer = jnp.zeros((tokens.shape[0], steps, first.shape[-1]), jnp.float32)

    def body(carry):
      step, cache, buffer = carry
      logits, cache = decoder.decode_step(continuation[:, step], cache)
      return step + 1, cache, buffer.at[:, step].set(logits)

    _, _, buffer = jax.lax.while_loop(lambda carry: carry[0] < steps, body,
                                      (jnp.int32(0), cache, buffer))
    return first, buffer

  first, rest = run(state, tokens, lengths, continuation)
  np.testing.assert_allclose(first, expected[:, 0], atol=1e-5, rtol=0)
  np.testing.assert_allclose(rest, expected[:, 1:], atol=1e-5, rtol=0)

  # Other weights with the same shapes reuse the compiled function and change the result.
  other_state = jax.tree.map(lambda x: x * 1.5, state)
  other_first, _ = run(other_state, tokens, lengths, continuation)
  assert len(traces) == 1
  assert not np.allclose(other_first, first)


def test_repeat_cache_copies_rows():
  model = random_decoder(CONFIGS["qwen2"], seed=5)
  tokens, lengths, continuation = padded_batch()
  _, cache = prefill(model, jnp.asarray(tokens), jnp.asarray(lengths), cache_len=10)
  repeated = kv_cache.repeat_cache(cache, 3)
  assert repeated.batch_size == 9
  np.testing.assert_array_equal(repeated.start, np.repeat(cache.start, 3))

  step_tokens = np.repeat(continuation[:, 0], 3)
  logits, _ = decode_step(model, jnp.asarray(step_tokens), repeated)
  reference, _ = decode_step(model, jnp.asarray(continuation[:, 0]), cache)
  np.testing.assert_allclose(logits, np.repeat(reference, 3, axis=0), atol=1e-5, rtol=0)


def test_repeat_cache_rejects_zero():
  model = random_decoder(CONFIGS["llama"], seed=0)
  _, cache = prefill(model, jnp.asarray([[1, 2]]), jnp.asarray([2]), cache_len=4)
  with pytest.raises(ValueError, match="repeats must be a positive integer, got 0"):
    kv_cache.repeat_cache(cache, 0)


def test_bfloat16_decoder_close_to_float32():
  config = CONFIGS["qwen2"]
  model32 = random_decoder(config, seed=6)
  model16 = random_decoder(config.with_dtypes("bfloat16"), seed=6)
  assert model16.layers[0].attn.q_proj[...].dtype == jnp.bfloat16
  tokens, lengths, _ = padded_batch()
  logits32, _ = prefill(model32, jnp.asarray(tokens), jnp.asarray(lengths), cache_len=8)
  logits16, cache16 = prefill(model16, jnp.asarray(tokens), jnp.asarray(lengths), cache_len=8)
  assert logits16.dtype == jnp.float32
  assert cache16.keys[0].dtype == jnp.bfloat16
  # bfloat16 keeps 8 bits of mantissa; the logits agree to a few hundredths of their spread.
  spread = float(np.std(logits32))
  assert float(np.max(np.abs(logits16 - logits32))) < 0.1 * spread
  np.testing.assert_array_equal(np.argmax(logits16, -1), np.argmax(logits32, -1))


def test_prefill_rejects_cache_beyond_context():
  model = random_decoder(CONFIGS["llama"], seed=0)
  with pytest.raises(ValueError, match="cache_len 300 exceeds the model's context length 256"):
    prefill(model, jnp.asarray([[1, 2]]), jnp.asarray([2]), cache_len=300)


def test_prefill_rejects_cache_shorter_than_prompt():
  model = random_decoder(CONFIGS["llama"], seed=0)
  with pytest.raises(ValueError, match="Cache length 2 is shorter than the prompt length 3"):
    prefill(model, jnp.asarray([[1, 2, 3]]), jnp.asarray([3]), cache_len=2)


def test_prefill_rejects_wrong_lengths_shape():
  model = random_decoder(CONFIGS["llama"], seed=0)
  with pytest.raises(ValueError, match=r"prompt_lengths has shape \(2,\); expected \(1,\)"):
    prefill(model, jnp.asarray([[1, 2, 3]]), jnp.asarray([3, 3]), cache_len=4)


def test_rope_position_zero_is_identity():
  x = jnp.asarray(np.random.default_rng(0).standard_normal((2, 3, 4, 8), np.float32))
  rotated = rope.apply_rope(x, jnp.zeros((2, 3), jnp.int32), theta=10000.0)
  np.testing.assert_array_equal(rotated, x)


def test_rope_scores_depend_on_offset_only():
  rng = np.random.default_rng(1)
  q = jnp.asarray(rng.standard_normal((1, 1, 1, 16), np.float32))
  k = jnp.asarray(rng.standard_normal((1, 1, 1, 16), np.float32))

  def score(query_position, key_position):
    rotated_q = rope.apply_rope(q, jnp.full((1, 1), query_position), theta=500.0)
    rotated_k = rope.apply_rope(k, jnp.full((1, 1), key_position), theta=500.0)
    return float(jnp.sum(rotated_q * rotated_k))

  assert score(7, 3) == pytest.approx(score(104, 100), abs=1e-4)
  assert score(7, 3) != pytest.approx(score(7, 4), abs=1e-3)


def test_rope_pairs_feature_with_half_offset():
  # Rotate-half: feature i pairs with feature i + head_dim / 2, so a vector with only
  # feature 0 set moves into feature head_dim / 2 and nowhere else.
  x = jnp.zeros((1, 1, 1, 8)).at[..., 0].set(1.0)
  rotated = np.asarray(rope.apply_rope(x, jnp.ones((1, 1)), theta=10000.0))[0, 0, 0]
  assert rotated[0] == pytest.approx(np.cos(1.0), abs=1e-6)
  assert rotated[4] == pytest.approx(np.sin(1.0), abs=1e-6)
  assert np.all(rotated[[1, 2, 3, 5, 6, 7]] == 0)


def test_parameters_carry_logical_axes():
  model = random_decoder(CONFIGS["qwen2"], seed=0)
  _, state = nnx.split(model)
  rules = [("heads", "model"), ("kv_heads", "model"), ("vocab", None), ("embed", None),
           ("head_dim", None), ("mlp", None)]
  with nnx.logical_axis_rules(rules):
    specs = nnx.to_pure_dict(nnx.get_partition_spec(state))
  attention = specs["layers"][0]["attn"]
  assert attention["q_proj"] == jax.sharding.PartitionSpec(None, "model", None)
  assert attention["k_proj"] == jax.sharding.PartitionSpec(None, "model", None)
  assert attention["o_proj"] == jax.sharding.PartitionSpec("model", None, None)
  assert attention["q_bias"] == jax.sharding.PartitionSpec("model", None)
  assert specs["embedder"]["embedding"] == jax.sharding.PartitionSpec(None, None)


def test_sharded_weights_match_unsharded():
  config = CONFIGS["llama"]
  model = random_decoder(config, seed=0)
  mesh = jax.make_mesh((2, 4), ("data", "model"),
                       axis_types=(jax.sharding.AxisType.Auto,) * 2)
  graphdef, state = nnx.split(model)
  rules = [("heads", "model"), ("kv_heads", "model"), ("vocab", None), ("embed", None),
           ("head_dim", None), ("mlp", None)]
  with nnx.logical_axis_rules(rules):
    specs = nnx.get_partition_spec(state)
  shardings = jax.tree.map(lambda spec: jax.sharding.NamedSharding(mesh, spec), specs)
  sharded_state = jax.device_put(state, shardings)
  tokens = jnp.asarray([[1, 2, 3, 4]] * 2)

  @jax.jit
  def run(state, tokens):
    return nnx.merge(graphdef, state).forward(tokens)

  np.testing.assert_allclose(run(sharded_state, tokens), forward(model, tokens), atol=1e-5,
                             rtol=0)


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(num_kv_heads=3), "num_heads (8) must be a multiple of num_kv_heads (3)"),
        (dict(head_dim=7), "head_dim must be even for rotary embeddings, got 7"),
        (dict(vocab_size=0), "vocab_size must be a positive integer, got 0"),
        (dict(num_layers=2.0), "num_layers must be a positive integer, got 2.0"),
        (dict(rope_theta=-1.0), "rope_theta must be a positive number, got -1.0"),
        (dict(param_dtype="fp8"), "param_dtype must be one of ['bfloat16', 'float16', 'float32'], got 'fp8'"),
        (dict(tie_embeddings=1), "tie_embeddings must be a bool, got 1"),
    ],
)
def test_config_rejects_invalid_values(overrides, message):
  with pytest.raises(ValueError, match=re.escape(message)):
    config_lib.tiny_llama(**overrides)


def test_config_dict_round_trip():
  config = config_lib.tiny_qwen2()
  assert config_lib.ModelConfig.from_dict(config.to_dict()) == config
  with pytest.raises(ValueError, match=r"Unknown ModelConfig keys \['heads'\]"):
    config_lib.ModelConfig.from_dict({**config.to_dict(), "heads": 2})


def test_config_presets_use_grouped_query_attention():
  for make in config_lib.PRESETS.values():
    config = make()
    assert config.num_kv_heads < config.num_heads
    assert dataclasses.replace(config) == config


def test_checkpoint_layout_round_trip():
  config = CONFIGS["qwen2"]
  for path, value in random_params(config, seed=7).items():
    stored = params_lib.to_checkpoint_layout(path, value, config)
    assert stored.shape == params_lib.checkpoint_shape(path, config), path
    np.testing.assert_array_equal(params_lib.from_checkpoint_layout(path, stored, config), value)


def test_checkpoint_layout_splits_heads_in_row_order():
  # Rows of a PyTorch q_proj matrix are head-major: row h * head_dim + d is head h, feature d.
  config = CONFIGS["llama"]
  rows = config.num_heads * config.head_dim
  matrix = np.arange(rows * config.hidden_size, dtype=np.float32).reshape(rows, -1)
  kernel = params_lib.from_checkpoint_layout(("layers", 0, "attn", "q_proj"), matrix, config)
  assert kernel.shape == (config.hidden_size, config.num_heads, config.head_dim)
  np.testing.assert_array_equal(kernel[:, 2, 3], matrix[2 * config.head_dim + 3])


def test_decoder_from_params_reports_bad_weights():
  config = CONFIGS["llama"]
  params = random_params(config)
  params[("layers", 0, "mlp", "up_proj")] = np.zeros((3, 3), np.float32)
  with pytest.raises(ValueError, match=r"Parameter \('layers', 0, 'mlp', 'up_proj'\) has shape "
                                       r"\(3, 3\); the decoder expects \(64, 128\)"):
    params_lib.decoder_from_params(config, params)
  del params[("final_norm", "scale")]
  with pytest.raises(ValueError, match=r"missing \[\('final_norm', 'scale'\)\]"):
    params_lib.decoder_from_params(config, params)
