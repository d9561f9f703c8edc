"""One pre-norm decoder block: attention and SwiGLU, each added to the residual stream."""

from __future__ import annotations

import jax
from flax import nnx

from ec_jax.model.attention import Attention
from ec_jax.model.config import ModelConfig
from ec_jax.model.layers import RMSNorm, SwiGLU


class DecoderBlock(nnx.Module):
  """x + attn(norm(x)), then + mlp(norm(x)), as in Llama and Qwen2."""

  def __init__(self, config: ModelConfig, *, rngs: nnx.Rngs):
    dtype = config.param_jnp_dtype
    self.attn_norm = RMSNorm(config.hidden_size, config.rms_norm_eps, param_dtype=dtype,
                             rngs=rngs)
    self.attn = Attention(config, rngs=rngs)
    self.mlp_norm = RMSNorm(config.hidden_size, config.rms_norm_eps, param_dtype=dtype,
                            rngs=rngs)
    self.mlp = SwiGLU(config, rngs=rngs)

  def __call__(
      self,
      x: jax.Array,
      positions: jax.Array,
      mask: jax.Array,
      cache: tuple[jax.Array, jax.Array] | None = None,
      write_index: jax.Array | None = None,
  ) -> tuple[jax.Array, tuple[jax.Array, jax.Array]]:
    """Apply the block to x [batch, time, embed]; arguments and results as in `Attention`."""
    attended, keys_values = self.attn(self.attn_norm(x), positions, mask, cache, write_index)
    x = x + attended
    x = x + self.mlp(self.mlp_norm(x))
    return x, keys_values
