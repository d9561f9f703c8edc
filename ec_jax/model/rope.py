"""Rotary position embedding (RoPE) in the rotate-half convention.

The rotate-half convention (used by Hugging Face Llama and Qwen2 checkpoints) pairs feature i of
a head with feature i + head_dim / 2, and rotates the pair by the angle position * theta^(-2i /
head_dim). llama.cpp stores `llama`-architecture GGUF files for the interleaved convention
(pairs 2i, 2i + 1) instead, so the GGUF reader reorders the query and key rows back.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def rope_inverse_frequencies(head_dim: int, theta: float) -> jax.Array:
  """Return the float32 rotation rate of each feature pair, [head_dim // 2]."""
  exponents = jnp.arange(0, head_dim, 2, dtype=jnp.float32) / head_dim
  return 1.0 / (theta**exponents)


def apply_rope(x: jax.Array, positions: jax.Array, theta: float) -> jax.Array:
  """Rotate x [batch, time, heads, head_dim] by positions [batch, time].

  Angles are computed in float32; the result has x's dtype.
  """
  head_dim = x.shape[-1]
  angles = positions.astype(jnp.float32)[..., None] * rope_inverse_frequencies(head_dim, theta)
  cos = jnp.cos(angles)[:, :, None, :]  # [batch, time, 1, head_dim // 2]
  sin = jnp.sin(angles)[:, :, None, :]
  x32 = x.astype(jnp.float32)
  first, second = jnp.split(x32, 2, axis=-1)
  rotated = jnp.concatenate([first * cos - second * sin, second * cos + first * sin], axis=-1)
  return rotated.astype(x.dtype)
