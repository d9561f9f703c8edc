"""Model configuration of a Llama-family decoder, with tiny presets for tests."""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import jax.numpy as jnp

# Dtype names accepted for parameters and activations.
DTYPES = {
    "float32": jnp.float32,
    "bfloat16": jnp.bfloat16,
    "float16": jnp.float16,
}


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """Shape and numerics of a Llama-family decoder (Llama, SmolLM2, Qwen2).

  Attributes:
    vocab_size: number of token embeddings (rows of the embedding matrix).
    hidden_size: width of the residual stream (`embed`).
    intermediate_size: width of the SwiGLU hidden layer (`mlp`).
    num_layers: number of decoder blocks.
    num_heads: number of query heads.
    num_kv_heads: number of key/value heads; `num_heads` must be a multiple of it (grouped-query
      attention; equal values give multi-head attention).
    head_dim: width of one attention head. It need not equal hidden_size // num_heads.
    rope_theta: base of the rotary position embedding frequencies.
    rms_norm_eps: epsilon added to the mean square in RMSNorm.
    tie_embeddings: whether the output projection reuses the token embedding matrix.
    attention_bias: whether the query, key and value projections have biases (Qwen2 does).
    max_position: context length the model was trained for; caches longer than it are rejected.
    param_dtype: dtype name of the stored parameters.
    compute_dtype: dtype name of activations and matrix products. Softmax, RMSNorm statistics and
      logits are always float32.
  """

  vocab_size: int
  hidden_size: int
  intermediate_size: int
  num_layers: int
  num_heads: int
  num_kv_heads: int
  head_dim: int
  rope_theta: float = 10000.0
  rms_norm_eps: float = 1e-6
  tie_embeddings: bool = True
  attention_bias: bool = False
  max_position: int = 2048
  param_dtype: str = "float32"
  compute_dtype: str = "float32"

  def __post_init__(self):
    for name in ("vocab_size", "hidden_size", "intermediate_size", "num_layers", "num_heads",
                 "num_kv_heads", "head_dim", "max_position"):
      value = getattr(self, name)
      if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"ModelConfig.{name} must be a positive integer, got {value!r}.")
    if self.num_heads % self.num_kv_heads:
      raise ValueError(
          f"ModelConfig.num_heads ({self.num_heads}) must be a multiple of num_kv_heads "
          f"({self.num_kv_heads}); set num_kv_heads to a divisor of num_heads.")
    if self.head_dim % 2:
      raise ValueError(
          f"ModelConfig.head_dim must be even for rotary embeddings, got {self.head_dim}.")
    for name in ("rope_theta", "rms_norm_eps"):
      value = getattr(self, name)
      if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ValueError(f"ModelConfig.{name} must be a positive number, got {value!r}.")
    for name in ("tie_embeddings", "attention_bias"):
      value = getattr(self, name)
      if not isinstance(value, bool):
        raise ValueError(f"ModelConfig.{name} must be a bool, got {value!r}.")
    for name in ("param_dtype", "compute_dtype"):
      value = getattr(self, name)
      if value not in DTYPES:
        raise ValueError(
            f"ModelConfig.{name} must be one of {sorted(DTYPES)}, got {value!r}.")

  @property
  def num_groups(self) -> int:
    """Query heads per key/value head."""
    return self.num_heads // self.num_kv_heads

  @property
  def param_jnp_dtype(self) -> jnp.dtype:
    return jnp.dtype(DTYPES[self.param_dtype])

  @property
  def compute_jnp_dtype(self) -> jnp.dtype:
    return jnp.dtype(DTYPES[self.compute_dtype])

  def with_dtypes(self, param_dtype: str, compute_dtype: str | None = None) -> ModelConfig:
    """Return a copy with new dtypes; compute_dtype defaults to param_dtype."""
    return dataclasses.replace(
        self, param_dtype=param_dtype,
        compute_dtype=param_dtype if compute_dtype is None else compute_dtype)

  def to_dict(self) -> dict[str, Any]:
    return dataclasses.asdict(self)

  @classmethod
  def from_dict(cls, values: Mapping[str, Any]) -> ModelConfig:
    """Build a config from `to_dict` output; unknown keys are an error."""
    known = {field.name for field in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
      raise ValueError(
          f"Unknown ModelConfig keys {unknown}; the known keys are {sorted(known)}.")
    return cls(**values)


def tiny_llama(**overrides: Any) -> ModelConfig:
  """Return a 2-layer Llama-style test config: 8 query and 4 key/value heads, tied embeddings."""
  values = dict(
      vocab_size=320,
      hidden_size=64,
      intermediate_size=128,
      num_layers=2,
      num_heads=8,
      num_kv_heads=4,
      head_dim=8,
      rope_theta=10000.0,
      rms_norm_eps=1e-5,
      tie_embeddings=True,
      attention_bias=False,
      max_position=256,
  )
  values.update(overrides)
  return ModelConfig(**values)


def tiny_qwen2(**overrides: Any) -> ModelConfig:
  """Return a 2-layer Qwen2-style test config: q/k/v biases, 4 query heads per key/value head,
  separate output matrix."""
  values = dict(
      vocab_size=384,
      hidden_size=64,
      intermediate_size=96,
      num_layers=2,
      num_heads=8,
      num_kv_heads=2,
      head_dim=8,
      rope_theta=1000000.0,
      rms_norm_eps=1e-6,
      tie_embeddings=False,
      attention_bias=True,
      max_position=256,
  )
  values.update(overrides)
  return ModelConfig(**values)


PRESETS = {
    "tiny_llama": tiny_llama,
    "tiny_qwen2": tiny_qwen2,
}
