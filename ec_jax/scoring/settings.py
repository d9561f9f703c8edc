"""Phase-detection settings, the sweep grid, and the names of per-setting output keys.

A setting is a (top_percent, bottom_percent, consecutive_low) triple. Settings travel into
compiled code as traced arrays, so changing them never recompiles; only their number is static.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Sequence

import numpy as np

# The headline defaults of the method.
DEFAULT_TOP_PERCENT = 1.0
DEFAULT_BOTTOM_PERCENT = 80.0
DEFAULT_CONSECUTIVE_LOW = 2
DEFAULT_MAX_PHASES = 256

# The reference implementation's sweep grid: 3 x 3 x 3 settings.
DEFAULT_SWEEP_TOP_PERCENT = (1.0, 3.0, 5.0)
DEFAULT_SWEEP_BOTTOM_PERCENT = (30.0, 50.0, 80.0)
DEFAULT_SWEEP_CONSECUTIVE_LOW = (2, 3, 5)

CENTROID_METHODS = ("weighted_average_center", "weighted_average", "moment", "raw_entropy")
PHASE_MASSES = ("length", "entropy")


@dataclasses.dataclass(frozen=True)
class PhaseSetting:
  """One threshold setting: percentages in [0, 100] and a run length of at least 1."""

  top_percent: float = DEFAULT_TOP_PERCENT
  bottom_percent: float = DEFAULT_BOTTOM_PERCENT
  consecutive_low: int = DEFAULT_CONSECUTIVE_LOW

  def __post_init__(self):
    validate_setting(self.top_percent, self.bottom_percent, self.consecutive_low)

  @property
  def suffix(self) -> str:
    """The key suffix `@<top>/<bottom>/<consecutive_low>`, numbers in Python's `%g`."""
    return "@%g/%g/%g" % (self.top_percent, self.bottom_percent, self.consecutive_low)


def validate_setting(top_percent, bottom_percent, consecutive_low) -> None:
  """Raise ValueError naming the first invalid field of a setting, its value and the fix."""
  for name, value in (("top_percent", top_percent), ("bottom_percent", bottom_percent)):
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
      raise ValueError(f"phases.{name} must be a number in [0, 100], got {value!r}.")
    if not 0.0 <= float(value) <= 100.0:
      raise ValueError(
          f"phases.{name} must lie in [0, 100] (a percentage), got {value!r}. "
          f"Pass a value such as {DEFAULT_TOP_PERCENT if name == 'top_percent' else DEFAULT_BOTTOM_PERCENT:g}.")
  if isinstance(consecutive_low, bool) or not isinstance(consecutive_low, (int, np.integer)):
    raise ValueError(f"phases.consecutive_low must be an integer >= 1, got {consecutive_low!r}.")
  if consecutive_low < 1:
    raise ValueError(
        f"phases.consecutive_low must be >= 1 (the number of low tokens that close a phase), "
        f"got {consecutive_low}.")


def validate_max_phases(max_phases) -> None:
  """Raise ValueError unless max_phases is an integer >= 1."""
  if isinstance(max_phases, bool) or not isinstance(max_phases, (int, np.integer)) or max_phases < 1:
    raise ValueError(
        f"phases.max_phases must be an integer >= 1 (phases kept per trajectory; counts stay "
        f"exact beyond it), got {max_phases!r}.")


def sweep_grid(
    top_percent: Sequence[float] = DEFAULT_SWEEP_TOP_PERCENT,
    bottom_percent: Sequence[float] = DEFAULT_SWEEP_BOTTOM_PERCENT,
    consecutive_low: Sequence[int] = DEFAULT_SWEEP_CONSECUTIVE_LOW,
) -> tuple[PhaseSetting, ...]:
  """Return the Cartesian product of the three lists, top_percent varying slowest."""
  for name, values in (("top_percent", top_percent), ("bottom_percent", bottom_percent),
                       ("consecutive_low", consecutive_low)):
    if len(values) == 0:
      raise ValueError(f"sweep_grid.{name} is empty; give at least one value.")
  return tuple(
      PhaseSetting(float(t), float(b), int(c))
      for t, b, c in itertools.product(top_percent, bottom_percent, consecutive_low))


def settings_arrays(settings: Sequence[PhaseSetting]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Return `top_percent [S]` and `bottom_percent [S]` as float64 and `consecutive_low [S]` int32."""
  top = np.asarray([s.top_percent for s in settings], dtype=np.float64)
  bottom = np.asarray([s.bottom_percent for s in settings], dtype=np.float64)
  low = np.asarray([s.consecutive_low for s in settings], dtype=np.int32)
  return top, bottom, low
