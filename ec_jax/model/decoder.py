"""Llama-family decoder with a teacher-forced forward pass and cached decoding.

Entry points:
  forward(tokens, positions, input_mask) -> logits [batch, time, vocab]
  prefill(tokens, prompt_lengths, cache_len) -> (last_logits [batch, vocab], KVCache)
  decode_step(tokens, cache) -> (logits [batch, vocab], KVCache)

Prompts are left-padded: every row's last prompt token sits at the last column, so all rows
decode into the same cache slot at each step. Padded positions are never attended, and each
row's RoPE positions start at 0 at its first real token.

To pass weights into `jax.jit` as traced inputs, split the module and merge it inside:

  graphdef, state = nnx.split(model)

  @jax.jit
  def step(state, tokens, cache):
    return nnx.merge(graphdef, state).decode_step(tokens, cache)
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from ec_jax.model import kv_cache
from ec_jax.model.block import DecoderBlock
from ec_jax.model.config import ModelConfig
from ec_jax.model.layers import Embedder, RMSNorm, make_param, project_to_vocab


def positions_from_mask(input_mask: jax.Array) -> jax.Array:
  """Return RoPE positions [batch, time]: 0 at each row's first real token, 0 on left padding."""
  return jnp.maximum(jnp.cumsum(input_mask.astype(jnp.int32), axis=1) - 1, 0)


class Decoder(nnx.Module):
  """Token embedding, `num_layers` decoder blocks, final RMSNorm and the vocabulary projection."""

  def __init__(self, config: ModelConfig, *, rngs: nnx.Rngs):
    self.config = config
    self.embedder = Embedder(config, rngs=rngs)
    self.layers = nnx.List([DecoderBlock(config, rngs=rngs) for _ in range(config.num_layers)])
    self.final_norm = RMSNorm(config.hidden_size, config.rms_norm_eps,
                              param_dtype=config.param_jnp_dtype, rngs=rngs)
    if config.tie_embeddings:
      self.lm_head = None
    else:
      # Stored like the embedding, [vocab, embed], as both checkpoint formats do.
      self.lm_head = make_param(
          rngs, nnx.initializers.normal(config.hidden_size**-0.5),
          (config.vocab_size, config.hidden_size), ("vocab", "embed"), config.param_jnp_dtype)

  def _logits(self, x: jax.Array) -> jax.Array:
    """Return float32 logits [..., vocab] of final hidden states x [..., embed]."""
    table = self.embedder.embedding if self.lm_head is None else self.lm_head
    return project_to_vocab(self.final_norm(x), table[...])

  def forward(
      self,
      tokens: jax.Array,
      positions: jax.Array | None = None,
      input_mask: jax.Array | None = None,
  ) -> jax.Array:
    """Run a causal teacher-forced pass over whole sequences.

    Args:
      tokens: [batch, time] int token ids.
      positions: [batch, time] RoPE positions; default `positions_from_mask(input_mask)`.
      input_mask: [batch, time] bool, false on padding, which no position attends to; default
        all true.

    Returns:
      float32 logits [batch, time, vocab]; rows at padded positions are meaningless.
    """
    batch, time = tokens.shape
    if input_mask is None:
      input_mask = jnp.ones((batch, time), bool)
    if positions is None:
      positions = positions_from_mask(input_mask)
    causal = jnp.tril(jnp.ones((time, time), bool))
    mask = causal[None, :, :] & input_mask[:, None, :].astype(bool)

    x = self.embedder.encode(tokens)
    for layer in self.layers:
      x, _ = layer(x, positions, mask)
    return self._logits(x)

  def prefill(
      self,
      tokens: jax.Array,
      prompt_lengths: jax.Array,
      cache_len: int,
  ) -> tuple[jax.Array, kv_cache.KVCache]:
    """Encode left-padded prompts and return the next-token logits and a filled cache.

    Args:
      tokens: [batch, prompt_len] int; row b contains prompt_len - prompt_lengths[b] padding tokens
        (any id) followed by its prompt.
      prompt_lengths: [batch] int number of real tokens per row, in [1, prompt_len]. Values out
        of range are not checked under jit and give meaningless results.
      cache_len: static number of cache slots, at least prompt_len + the number of decode steps.

    Returns:
      float32 logits [batch, vocab] after each row's last prompt token, and the cache with
      slots [0, prompt_len) written.
    """
    batch, prompt_len = tokens.shape
    if cache_len > self.config.max_position:
      raise ValueError(
          f"cache_len {cache_len} exceeds the model's context length "
          f"{self.config.max_position}; use fewer prompt or new tokens.")
    prompt_lengths = jnp.asarray(prompt_lengths, jnp.int32)
    if prompt_lengths.shape != (batch,):
      raise ValueError(
          f"prompt_lengths has shape {prompt_lengths.shape}; expected ({batch},), one length "
          "per row of tokens.")
    start = prompt_len - prompt_lengths
    input_mask = jnp.arange(prompt_len)[None, :] >= start[:, None]
    positions = positions_from_mask(input_mask)
    causal = jnp.tril(jnp.ones((prompt_len, prompt_len), bool))
    mask = causal[None, :, :] & input_mask[:, None, :]

    x = self.embedder.encode(tokens)
    keys, values = [], []
    for layer in self.layers:
      x, (layer_keys, layer_values) = layer(x, positions, mask)
      keys.append(layer_keys)
      values.append(layer_values)
    last_logits = self._logits(x[:, -1, :])
    return last_logits, kv_cache.cache_from_prompt(keys, values, start, cache_len)

  def decode_step(
      self,
      tokens: jax.Array,
      cache: kv_cache.KVCache,
  ) -> tuple[jax.Array, kv_cache.KVCache]:
    """Feed one token per row at slot `cache.length` and return the next-token logits.

    Args:
      tokens: [batch] int, the token following each row's last cached token.
      cache: from `prefill` or an earlier `decode_step`. Its length must be below max_len,
        because a full cache overwrites its last slot; jit cannot check this.

    Returns:
      float32 logits [batch, vocab] and the cache with one more slot written.
    """
    # NOTE: attention reads all max_len slots and masks the unwritten ones, so a step costs
    # as much early in decoding as at the end; cache_len should not exceed what is needed.
    write_index = cache.length
    positions = (write_index - cache.start)[:, None]  # [batch, 1]
    mask = kv_cache.slot_mask(cache.start, write_index, cache.max_len)[:, None, :]

    x = self.embedder.encode(tokens[:, None])
    keys, values = [], []
    for layer, layer_keys, layer_values in zip(self.layers, cache.keys, cache.values):
      x, (layer_keys, layer_values) = layer(
          x, positions, mask, (layer_keys, layer_values), write_index)
      keys.append(layer_keys)
      values.append(layer_values)
    logits = self._logits(x[:, 0, :])
    new_cache = kv_cache.KVCache(
        keys=tuple(keys), values=tuple(values), start=cache.start, length=write_index + 1)
    return logits, new_cache
