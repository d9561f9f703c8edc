"""Tiny decoders with random weights, for tests of the model and of code built on it."""

from __future__ import annotations

import numpy as np

from ec_jax.model.config import ModelConfig
from ec_jax.model.decoder import Decoder
from ec_jax.model.params import ParamPath, decoder_from_params, param_shapes


def _fan_in(path: ParamPath, shape: tuple[int, ...]) -> int:
  if path[-1] == "o_proj":
    return shape[0] * shape[1]
  if path[-1] in ("embedding", "lm_head"):
    return shape[1]
  return shape[0]


def random_params(config: ModelConfig, seed: int = 0) -> dict[ParamPath, np.ndarray]:
  """Return float32 {path: array} in model layout with every parameter random.

  Default initialisation sets norm scales to one and biases to zero, so a test could pass with
  those parameters misplaced. Here scales are 1 + 0.2 N(0, 1), biases 0.2 N(0, 1) and matrices
  N(0, 1 / fan_in). NumPy draws them, because compiling JAX's random number generator for
  every parameter shape takes seconds on CPU.
  """
  rng = np.random.default_rng(seed)
  params = {}
  for path, shape in sorted(param_shapes(config).items(), key=str):
    noise = rng.standard_normal(shape, dtype=np.float32)
    if path[-1] == "scale":
      params[path] = 1.0 + 0.2 * noise
    elif path[-1] in ("q_bias", "k_bias", "v_bias"):
      params[path] = 0.2 * noise
    else:
      params[path] = noise * np.float32(_fan_in(path, shape)**-0.5)
  return params


def random_decoder(config: ModelConfig, seed: int = 0) -> Decoder:
  """Build a decoder with `random_params(config, seed)`, cast to config.param_dtype."""
  return decoder_from_params(config, random_params(config, seed))
