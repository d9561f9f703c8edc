"""High Entropy Phase segmentation: a left-to-right state machine run with `lax.scan`.

Per trajectory and setting, the machine walks positions t = 0 .. L-1:

  outside ──(valid, H >= high)──► inside: start s = t, duration d = 1, low run r = 0
  inside, each valid token: d += 1; r = r + 1 if H <= low else 0
  inside ──(r == consecutive_low)──► outside, recording (s, d - consecutive_low)
  end of sequence while inside: the open phase is recorded with its full d

Invalid positions (missing or NaN entropy) leave the state unchanged. Every setting of a sweep
runs in the same scan, as a `[rows, settings]` carry, and the centroid sums are accumulated in
the carry, so they stay exact however many phases a trajectory has. Only setting 0 also emits
per-position events, from which `phase_details` builds the capped phase list and per-token ids.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

# Exact integer sums fit uint32 while sum(d * (2s + d)) <= T**2 < 2**32, i.e. T < 2**16; longer
# sequences need x64 for int64 sums.
MAX_TIME_UINT32 = 65535


class PhaseSums(NamedTuple):
  """Per-trajectory phase counts and centroid sums, each `[rows, settings]`.

  `length_*` sums use the phase length d as the mass (exact integers); `entropy_*` sums use the
  summed entropy e of the phase's d valid tokens, and are None unless requested.
  """

  num_phases: jax.Array  # exact number of phases
  length_mass: jax.Array  # sum of d
  length_center: jax.Array  # sum of d * (2s + d), i.e. twice sum of d * (s + d/2)
  length_start: jax.Array  # sum of d * s
  entropy_mass: jax.Array  # sum of e
  entropy_center: jax.Array  # sum of e * (s + d/2)
  entropy_start: jax.Array  # sum of e * s


class PhaseEvents(NamedTuple):
  """Per-position outputs of setting 0, each `[rows, time]`."""

  closed: jax.Array  # bool: a phase closed at this position
  start: jax.Array  # int32: start of the phase that closed here (valid where `closed`)
  duration: jax.Array  # int32: duration of the phase that closed here
  phase_number: jax.Array  # int32: number of the phase whose span contains t, else -1


class OpenPhase(NamedTuple):
  """Setting 0's phase still open at the end of each row, each `[rows]`."""

  inside: jax.Array
  start: jax.Array
  duration: jax.Array


class _State(NamedTuple):
  inside: jax.Array
  start: jax.Array
  duration: jax.Array
  low_run: jax.Array
  entropy_committed: jax.Array  # entropy of the phase's tokens up to the last non-low token
  entropy_low_run: jax.Array  # entropy of the current run of low tokens
  sums: PhaseSums


def exact_integer_dtypes(time: int) -> tuple[jnp.dtype, jnp.dtype]:
  """Return the (mass, moment) integer dtypes for sequences of `time` positions.

  32-bit sums are exact up to MAX_TIME_UINT32 positions and halve the scan's memory traffic.

  Raises:
    ValueError: without x64, when `time` exceeds what uint32 moment sums can hold.
  """
  if time <= MAX_TIME_UINT32:
    return jnp.dtype(jnp.int32), jnp.dtype(jnp.uint32)
  if jax.config.jax_enable_x64:
    return jnp.dtype(jnp.int64), jnp.dtype(jnp.int64)
  raise ValueError(
      f"Sequences of {time} positions need 64-bit integer sums; the limit without x64 is "
      f"{MAX_TIME_UINT32}. Enable x64 (jax.config.update('jax_enable_x64', True)).")


def _add_phase(sums: PhaseSums, where: jax.Array, start: jax.Array, duration: jax.Array,
               entropy: jax.Array) -> PhaseSums:
  """Add one phase (start, duration, summed entropy) to the sums where `where` is true."""
  mass_dtype, moment_dtype = sums.length_mass.dtype, sums.length_center.dtype
  d = duration.astype(moment_dtype)
  s = start.astype(moment_dtype)
  zero_int = jnp.zeros((), moment_dtype)
  sums = sums._replace(
      num_phases=sums.num_phases + where.astype(jnp.int32),
      length_mass=sums.length_mass + jnp.where(where, duration, 0).astype(mass_dtype),
      length_center=sums.length_center + jnp.where(where, d * (s + s + d), zero_int),
      length_start=sums.length_start + jnp.where(where, d * s, zero_int))
  if entropy is None:
    return sums
  real = entropy.dtype
  center = start.astype(real) + duration.astype(real) * jnp.asarray(0.5, real)
  zero = jnp.zeros((), real)
  return sums._replace(
      entropy_mass=sums.entropy_mass + jnp.where(where, entropy, zero),
      entropy_center=sums.entropy_center + jnp.where(where, entropy * center, zero),
      entropy_start=sums.entropy_start + jnp.where(where, entropy * start.astype(real), zero))


def scan_phases(entropies: jax.Array, valid: jax.Array, high: jax.Array, low: jax.Array,
                consecutive_low: jax.Array, *, emit_events: bool, entropy_mass: bool = True
                ) -> tuple[PhaseSums, PhaseEvents | None, OpenPhase | None]:
  """Run the phase state machine over every row and setting.

  Args:
    entropies: `[rows, time]` floats; values at invalid positions are ignored.
    valid: `[rows, time]` bools, already false at and beyond each row's length.
    high: `[rows, settings]` high thresholds (NaN: no phase can start).
    low: `[rows, settings]` low thresholds.
    consecutive_low: `[settings]` int32 run lengths that close a phase (>= 1).
    emit_events: static; also return per-position events of setting 0.
    entropy_mass: static; also accumulate the `entropy_*` sums (the entropy phase mass).

  Returns:
    The `[rows, settings]` sums, with open phases at the end included; with `emit_events`, also
    setting 0's events and its phase still open at the end (else None for both).
  """
  rows, time = entropies.shape
  settings = high.shape[-1]
  real = entropies.dtype
  mass_dtype, moment_dtype = exact_integer_dtypes(time)
  zeros_int = jnp.zeros((rows, settings), jnp.int32)
  zeros_real = jnp.zeros((rows, settings), real) if entropy_mass else None
  initial = _State(
      inside=jnp.zeros((rows, settings), bool),
      start=zeros_int, duration=zeros_int, low_run=zeros_int,
      entropy_committed=zeros_real, entropy_low_run=zeros_real,
      sums=PhaseSums(
          num_phases=zeros_int,
          length_mass=jnp.zeros((rows, settings), mass_dtype),
          length_center=jnp.zeros((rows, settings), moment_dtype),
          length_start=jnp.zeros((rows, settings), moment_dtype),
          entropy_mass=zeros_real, entropy_center=zeros_real, entropy_start=zeros_real))
  closing_run = consecutive_low.astype(jnp.int32)[None, :]

  def step(state: _State, inputs):
    t, h, ok = inputs  # scalar position, [rows] entropy, [rows] validity
    h = h[:, None]
    ok = ok[:, None]
    is_high = ok & (h >= high)
    is_low = ok & (h <= low)
    starts = ~state.inside & is_high
    extends = state.inside & ok
    duration = state.duration + extends.astype(jnp.int32)
    low_run = jnp.where(extends, jnp.where(is_low, state.low_run + 1, 0), state.low_run)
    closes = extends & (low_run >= closing_run)
    closed_duration = duration - closing_run
    reset = starts | closes
    committed = low_run_entropy = None
    if entropy_mass:
      committed = jnp.where(extends & ~is_low,
                            state.entropy_committed + state.entropy_low_run + h,
                            state.entropy_committed)
      low_run_entropy = jnp.where(extends, jnp.where(is_low, state.entropy_low_run + h, 0),
                                  state.entropy_low_run)
    sums = _add_phase(state.sums, closes, state.start, closed_duration, committed)
    if entropy_mass:
      committed = jnp.where(starts, jnp.broadcast_to(h, starts.shape),
                            jnp.where(closes, 0, committed))
      low_run_entropy = jnp.where(reset, 0, low_run_entropy)
    new_state = _State(
        inside=jnp.where(starts, True, jnp.where(closes, False, state.inside)),
        start=jnp.where(starts, t, state.start),
        duration=jnp.where(starts, 1, jnp.where(closes, 0, duration)),
        low_run=jnp.where(reset, 0, low_run),
        entropy_committed=committed, entropy_low_run=low_run_entropy, sums=sums)
    if not emit_events:
      return new_state, None
    in_span = state.inside[:, 0] | starts[:, 0]
    # Phases are numbered in order, so the open phase's number is the count closed before it.
    number = jnp.where(in_span, state.sums.num_phases[:, 0], -1)
    events = PhaseEvents(closed=closes[:, 0], start=state.start[:, 0],
                         duration=closed_duration[:, 0], phase_number=number)
    return new_state, events

  positions = jnp.arange(time, dtype=jnp.int32)
  final, events = lax.scan(step, initial, (positions, entropies.T, valid.T))
  # A phase still open at the end is recorded with its full duration.
  open_entropy = (final.entropy_committed + final.entropy_low_run) if entropy_mass else None
  sums = _add_phase(final.sums, final.inside, final.start, final.duration, open_entropy)
  if not emit_events:
    return sums, None, None
  events = jax.tree.map(lambda x: x.T, events)
  open_phase = OpenPhase(inside=final.inside[:, 0], start=final.start[:, 0],
                         duration=final.duration[:, 0])
  return sums, events, open_phase


class PhaseDetails(NamedTuple):
  """Setting 0's phases as fixed-size arrays."""

  phases: jax.Array  # [rows, max_phases, 2] int32 (start, duration); -1 beyond num_phases
  overflow: jax.Array  # [rows] int32: phases beyond max_phases, not listed
  phase_id: jax.Array  # [rows, time] int32: phase number of each position, else -1


def phase_details(events: PhaseEvents, open_phase: OpenPhase, valid: jax.Array,
                  consecutive_low: jax.Array, num_phases: jax.Array, max_phases: int
                  ) -> PhaseDetails:
  """Build the capped phase list and per-token phase ids from setting 0's events.

  A position belongs to a phase when it is one of the phase's d valid tokens, or an invalid
  position between the first and the last of them. The low tokens that close a phase, and
  invalid positions among or just before them, get -1.

  Args:
    events: from `scan_phases(..., emit_events=True)`, each `[rows, time]`.
    open_phase: setting 0's phase open at the end, each `[rows]`.
    valid: `[rows, time]` validity, false at and beyond each row's length.
    consecutive_low: scalar int32, setting 0's run length.
    num_phases: `[rows]` exact phase counts of setting 0.
    max_phases: static size of the phase list.
  """
  rows, time = valid.shape
  # Phase list: closed phases in order, then the open one. The k-th closing position is found by
  # binary search in the running count of closings (a scatter is much slower on CPU).
  closed_count_so_far = jnp.cumsum(events.closed.astype(jnp.int32), axis=1)
  ranks = jnp.arange(1, max_phases + 1, dtype=jnp.int32)
  find = jax.vmap(lambda counts: jnp.searchsorted(counts, ranks, side="left"))
  position = jnp.minimum(find(closed_count_so_far), time - 1)
  closed_count = closed_count_so_far[:, -1]
  listed = ranks[None, :] <= closed_count[:, None]
  pairs = jnp.stack([jnp.take_along_axis(events.start, position, axis=1),
                     jnp.take_along_axis(events.duration, position, axis=1)], axis=-1)
  phases = jnp.where(listed[..., None], pairs, -1)
  open_slot = ranks[None, :] - 1 == closed_count[:, None]
  open_pair = jnp.stack([open_phase.start, open_phase.duration], axis=-1)[:, None, :]
  phases = jnp.where((open_slot & open_phase.inside[:, None])[..., None], open_pair, phases)
  overflow = jnp.maximum(num_phases - max_phases, 0)

  # Per-token ids. `valid_count[t]` counts valid positions up to and including t. A phase's last
  # member has valid_count equal to the closing position's minus consecutive_low, or to the
  # row's total for the open phase.
  valid_count = jnp.cumsum(valid.astype(jnp.int32), axis=1)
  sentinel = jnp.iinfo(jnp.int32).max
  closing_mark = jnp.where(events.closed, valid_count - consecutive_low, sentinel)
  last_member = lax.cummin(closing_mark, axis=1, reverse=True)
  last_member = jnp.minimum(last_member, valid_count[:, -1:])
  member = jnp.where(valid, valid_count <= last_member, valid_count < last_member)
  phase_id = jnp.where((events.phase_number >= 0) & member, events.phase_number, -1)
  return PhaseDetails(phases=phases, overflow=overflow, phase_id=phase_id)
