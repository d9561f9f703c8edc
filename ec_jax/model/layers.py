"""Building blocks of the decoder: parameters with logical axes, RMSNorm, embeddings, SwiGLU.

Every parameter carries logical axis names in its `out_sharding` metadata, so that a
logical-axis table can later map them onto mesh axes (for example `heads` and `kv_heads` onto
`model`) through `nnx.get_partition_spec` under `nnx.logical_axis_rules`. The names are:

  vocab     token embedding rows
  embed     residual stream width (hidden_size)
  heads     query heads
  kv_heads  key/value heads
  head_dim  width of one head
  mlp       SwiGLU hidden width (intermediate_size)

Eager sharding is off for these parameters, so a model can be built without a mesh.
"""

from __future__ import annotations

from typing import Callable, Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from ec_jax.model.config import ModelConfig

Initializer = Callable[[jax.Array, Sequence[int], jnp.dtype], jax.Array]


def make_param(
    rngs: nnx.Rngs,
    initializer: Initializer,
    shape: Sequence[int],
    axes: tuple[str, ...],
    dtype: jnp.dtype,
) -> nnx.Param:
  """Create a parameter annotated with one logical axis name per dimension."""
  if len(axes) != len(shape):
    raise ValueError(f"Logical axes {axes} do not match the parameter shape {tuple(shape)}.")
  value = initializer(rngs.params(), tuple(shape), dtype)
  return nnx.Param(value, out_sharding=axes, eager_sharding=False)


def fan_in_normal(fan_in_axes: int) -> Initializer:
  """Normal initializer with variance 1 / fan_in, where fan_in multiplies the leading axes."""

  def init(key: jax.Array, shape: Sequence[int], dtype: jnp.dtype) -> jax.Array:
    fan_in = 1
    for size in shape[:fan_in_axes]:
      fan_in *= size
    return (jax.random.normal(key, shape, jnp.float32) * fan_in**-0.5).astype(dtype)

  return init


class RMSNorm(nnx.Module):
  """Root-mean-square normalisation with a learned scale; statistics in float32."""

  def __init__(self, width: int, eps: float, *, param_dtype: jnp.dtype, rngs: nnx.Rngs):
    self.eps = eps
    self.scale = make_param(rngs, nnx.initializers.ones, (width,), ("embed",), param_dtype)

  def __call__(self, x: jax.Array) -> jax.Array:
    """Normalise x [..., width] over its last axis; the result has x's dtype."""
    x32 = x.astype(jnp.float32)
    mean_square = jnp.mean(jnp.square(x32), axis=-1, keepdims=True)
    normed = x32 * jax.lax.rsqrt(mean_square + self.eps)
    return (normed * self.scale[...].astype(jnp.float32)).astype(x.dtype)


class Embedder(nnx.Module):
  """Token embedding matrix [vocab, embed]; also the output projection when embeddings are tied."""

  def __init__(self, config: ModelConfig, *, rngs: nnx.Rngs):
    self.compute_dtype = config.compute_jnp_dtype
    self.embedding = make_param(
        rngs, nnx.initializers.normal(config.hidden_size**-0.5),
        (config.vocab_size, config.hidden_size), ("vocab", "embed"), config.param_jnp_dtype)

  def encode(self, tokens: jax.Array) -> jax.Array:
    """Look up tokens [...] and return embeddings [..., embed] in the compute dtype."""
    return jnp.take(self.embedding[...], tokens, axis=0).astype(self.compute_dtype)


def project_to_vocab(x: jax.Array, table: jax.Array) -> jax.Array:
  """Return float32 logits [..., vocab] of x [..., embed] against table [vocab, embed]."""
  return jnp.einsum("...d,vd->...v", x, table.astype(x.dtype),
                    preferred_element_type=jnp.float32)


class SwiGLU(nnx.Module):
  """Gated feed-forward layer: down(silu(x @ gate) * (x @ up))."""

  def __init__(self, config: ModelConfig, *, rngs: nnx.Rngs):
    embed, mlp = config.hidden_size, config.intermediate_size
    dtype = config.param_jnp_dtype
    self.gate_proj = make_param(rngs, fan_in_normal(1), (embed, mlp), ("embed", "mlp"), dtype)
    self.up_proj = make_param(rngs, fan_in_normal(1), (embed, mlp), ("embed", "mlp"), dtype)
    self.down_proj = make_param(rngs, fan_in_normal(1), (mlp, embed), ("mlp", "embed"), dtype)

  def __call__(self, x: jax.Array) -> jax.Array:
    """Map x [batch, time, embed] to [batch, time, embed] in x's dtype."""
    gate = jnp.einsum("btd,df->btf", x, self.gate_proj[...].astype(x.dtype))
    up = jnp.einsum("btd,df->btf", x, self.up_proj[...].astype(x.dtype))
    hidden = jax.nn.silu(gate) * up
    return jnp.einsum("btf,fd->btd", hidden, self.down_proj[...].astype(x.dtype))
