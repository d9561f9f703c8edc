"""Llama-family decoder (Llama, SmolLM2, Qwen2) in Flax NNX, its config and its KV cache."""

from ec_jax.model.config import ModelConfig, PRESETS, tiny_llama, tiny_qwen2
from ec_jax.model.decoder import Decoder, positions_from_mask
from ec_jax.model.kv_cache import CACHE_LOGICAL_AXES, KVCache, repeat_cache
from ec_jax.model.params import (
    ParamPath,
    abstract_decoder,
    decoder_from_params,
    flatten_params,
    logical_axes,
    param_shapes,
)

__all__ = [
    "CACHE_LOGICAL_AXES",
    "Decoder",
    "KVCache",
    "ModelConfig",
    "PRESETS",
    "ParamPath",
    "abstract_decoder",
    "decoder_from_params",
    "flatten_params",
    "logical_axes",
    "param_shapes",
    "positions_from_mask",
    "repeat_cache",
    "tiny_llama",
    "tiny_qwen2",
]
