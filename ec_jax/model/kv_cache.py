"""Preallocated key/value cache for left-padded batches.

Every row shares one slot counter: prefill writes the padded prompt into slots [0, prompt_len),
and each decode step writes one slot at `length`. Rows are left-padded, so row b's real tokens
start at slot `start[b]` and its RoPE position at slot j is j - start[b]:

    slot        0   1   2   3   4 | 5   6   7
    row 0       _   _   a   b   c | d   e   .     start = 2, prompt of 3 tokens
    row 1       a   b   c   d   e | f   g   .     start = 0, prompt of 5 tokens
                 prompt (prefill)  | decode steps   length = 7, max_len = 8

A query attends to slots in [start[b], its own slot]; padded and unwritten slots are masked.
"""

from __future__ import annotations

from typing import Sequence

import flax.struct
import jax
import jax.numpy as jnp

# Logical axis names of each per-layer cache array, for a logical-axis sharding table.
CACHE_LOGICAL_AXES = ("batch", "kv_heads", "cache_length", "head_dim")


@flax.struct.dataclass
class KVCache:
  """Keys and values of all layers and the slot counters, as a pytree.

  Attributes:
    keys: per layer [batch, kv_heads, max_len, head_dim], RoPE already applied.
    values: per layer [batch, kv_heads, max_len, head_dim].
    start: [batch] int32, slot of each row's first real token (its number of left pads).
    length: [] int32, number of slots written so far (the next decode step writes this slot).
  """

  keys: tuple[jax.Array, ...]
  values: tuple[jax.Array, ...]
  start: jax.Array
  length: jax.Array

  @property
  def max_len(self) -> int:
    return self.keys[0].shape[2]

  @property
  def batch_size(self) -> int:
    return self.keys[0].shape[0]


def cache_from_prompt(
    keys: Sequence[jax.Array],
    values: Sequence[jax.Array],
    start: jax.Array,
    max_len: int,
) -> KVCache:
  """Place prompt keys and values [batch, kv_heads, prompt_len, head_dim] in the first slots.

  Args:
    keys: per layer, keys of the padded prompt.
    values: per layer, values of the padded prompt.
    start: [batch] number of left pads of each row.
    max_len: static number of slots; at least prompt_len.
  """
  prompt_len = keys[0].shape[2]
  if max_len < prompt_len:
    raise ValueError(
        f"Cache length {max_len} is shorter than the prompt length {prompt_len}; allocate at "
        "least prompt length + new tokens.")
  padding = ((0, 0), (0, 0), (0, max_len - prompt_len), (0, 0))
  return KVCache(
      keys=tuple(jnp.pad(k, padding) for k in keys),
      values=tuple(jnp.pad(v, padding) for v in values),
      start=start.astype(jnp.int32),
      length=jnp.asarray(prompt_len, jnp.int32),
  )


def slot_mask(start: jax.Array, end: jax.Array, max_len: int) -> jax.Array:
  """Return [batch, max_len] bool, true for slots in [start[b], end]."""
  slots = jnp.arange(max_len, dtype=jnp.int32)[None, :]
  return (slots >= start[:, None]) & (slots <= end)


def repeat_cache(cache: KVCache, repeats: int) -> KVCache:
  """Repeat every row `repeats` times along batch; row b becomes rows b * repeats + [0, repeats).

  Used for best-of-N: prefill each prompt once, then decode N samples from copies of its cache.
  """
  if not isinstance(repeats, int) or repeats < 1:
    raise ValueError(f"repeats must be a positive integer, got {repeats!r}.")
  return KVCache(
      keys=tuple(jnp.repeat(k, repeats, axis=0) for k in cache.keys),
      values=tuple(jnp.repeat(v, repeats, axis=0) for v in cache.values),
      start=jnp.repeat(cache.start, repeats, axis=0),
      length=cache.length,
  )
