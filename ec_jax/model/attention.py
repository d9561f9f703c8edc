"""Grouped-query self-attention with rotary embeddings and optional q/k/v biases."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from ec_jax.model import rope
from ec_jax.model.config import ModelConfig
from ec_jax.model.layers import fan_in_normal, make_param


def masked_attention(
    queries: jax.Array, keys: jax.Array, values: jax.Array, mask: jax.Array) -> jax.Array:
  """Attend from queries to keys and values with grouped-query attention.

  Query head h reads key/value head h // (heads // kv_heads), the grouping of Hugging Face's
  Llama and Qwen2. Scores and softmax are float32.

  Args:
    queries: [batch, time, heads, head_dim].
    keys: [batch, kv_heads, slots, head_dim].
    values: [batch, kv_heads, slots, head_dim].
    mask: [batch, time, slots] bool, true where the query may attend to the slot. A query with
      no allowed slot gets a uniform average instead of NaN; callers ignore such rows.

  Returns:
    [batch, time, heads, head_dim] in the dtype of values.
  """
  batch, time, heads, head_dim = queries.shape
  kv_heads = keys.shape[1]
  grouped = queries.reshape(batch, time, kv_heads, heads // kv_heads, head_dim)
  scores = jnp.einsum("btkgd,bksd->bkgts", grouped, keys, preferred_element_type=jnp.float32)
  scores = scores * (head_dim**-0.5)
  # A finite floor keeps fully masked rows (left padding) free of NaN.
  scores = jnp.where(mask[:, None, None, :, :], scores, jnp.finfo(jnp.float32).min)
  probs = jax.nn.softmax(scores, axis=-1).astype(values.dtype)
  out = jnp.einsum("bkgts,bksd->btkgd", probs, values)
  return out.reshape(batch, time, heads, head_dim)


class Attention(nnx.Module):
  """Self-attention block: projections, RoPE, cache write and grouped-query attention."""

  def __init__(self, config: ModelConfig, *, rngs: nnx.Rngs):
    embed, heads, kv_heads, head_dim = (
        config.hidden_size, config.num_heads, config.num_kv_heads, config.head_dim)
    dtype = config.param_jnp_dtype
    self.rope_theta = config.rope_theta
    self.q_proj = make_param(
        rngs, fan_in_normal(1), (embed, heads, head_dim), ("embed", "heads", "head_dim"), dtype)
    self.k_proj = make_param(
        rngs, fan_in_normal(1), (embed, kv_heads, head_dim), ("embed", "kv_heads", "head_dim"),
        dtype)
    self.v_proj = make_param(
        rngs, fan_in_normal(1), (embed, kv_heads, head_dim), ("embed", "kv_heads", "head_dim"),
        dtype)
    self.o_proj = make_param(
        rngs, fan_in_normal(2), (heads, head_dim, embed), ("heads", "head_dim", "embed"), dtype)
    if config.attention_bias:
      zeros = nnx.initializers.zeros
      self.q_bias = make_param(rngs, zeros, (heads, head_dim), ("heads", "head_dim"), dtype)
      self.k_bias = make_param(rngs, zeros, (kv_heads, head_dim), ("kv_heads", "head_dim"), dtype)
      self.v_bias = make_param(rngs, zeros, (kv_heads, head_dim), ("kv_heads", "head_dim"), dtype)
    else:
      self.q_bias = self.k_bias = self.v_bias = None

  def _project(self, x: jax.Array, kernel: nnx.Param, bias: nnx.Param | None) -> jax.Array:
    out = jnp.einsum("btd,dhk->bthk", x, kernel[...].astype(x.dtype))
    if bias is not None:
      out = out + bias[...].astype(x.dtype)
    return out

  def __call__(
      self,
      x: jax.Array,
      positions: jax.Array,
      mask: jax.Array,
      cache: tuple[jax.Array, jax.Array] | None = None,
      write_index: jax.Array | None = None,
  ) -> tuple[jax.Array, tuple[jax.Array, jax.Array]]:
    """Attend within x, or from x to a cache that x's keys and values are first written into.

    Args:
      x: [batch, time, embed] inputs.
      positions: [batch, time] RoPE positions.
      mask: [batch, time, slots] bool. Slots are the time steps of x when cache is None, else
        the cache slots.
      cache: optional (keys, values), each [batch, kv_heads, max_len, head_dim].
      write_index: [] int32 slot where x's first time step is written; needed with cache.

    Returns:
      The output [batch, time, embed] and (keys, values): those of x [batch, kv_heads, time,
      head_dim] without a cache, else the updated cache arrays.
    """
    queries = rope.apply_rope(self._project(x, self.q_proj, self.q_bias), positions,
                              self.rope_theta)
    keys = rope.apply_rope(self._project(x, self.k_proj, self.k_bias), positions,
                           self.rope_theta)
    # Keys and values go slot-major per head, the cache layout, so that attention over the
    # cache contracts without transposing it.
    keys = keys.transpose(0, 2, 1, 3)
    values = self._project(x, self.v_proj, self.v_bias).transpose(0, 2, 1, 3)

    if cache is not None:
      if write_index is None:
        raise ValueError("Attention with a cache needs write_index, the slot of x's first step.")
      cache_keys, cache_values = cache
      index = (0, 0, write_index, 0)
      # Inside a jitted loop XLA updates the cache buffer in place, without copying it.
      keys = jax.lax.dynamic_update_slice(cache_keys, keys.astype(cache_keys.dtype), index)
      values = jax.lax.dynamic_update_slice(
          cache_values, values.astype(cache_values.dtype), index)

    attended = masked_attention(queries, keys.astype(x.dtype), values.astype(x.dtype), mask)
    out = jnp.einsum("bthk,hkd->btd", attended, self.o_proj[...].astype(x.dtype))
    return out, (keys, values)
