"""PNG figures of a run: centroid distributions, accuracy vs N, per-token entropy, heat-maps.

Figures are drawn with matplotlib's Agg canvas on their own Figure objects, so importing this
module neither selects a global backend nor touches pyplot state. Each figure is drawn under
matplotlib's default style plus the settings in `_STYLE`, regardless of the user's
matplotlibrc. The PNG carries no metadata: matplotlib writes no time into PNGs, and its version
is dropped here. So the same inputs give byte-identical files with the same matplotlib and
FreeType. Files are written atomically. Sizes are fixed in inches at `DPI` dots per inch.
"""

from __future__ import annotations

import dataclasses
import io
import math
import os
import pathlib
from collections.abc import Mapping, Sequence

import matplotlib
from matplotlib import style as style_lib
from matplotlib import ticker
from matplotlib.backends import backend_agg
from matplotlib import figure as figure_lib
import numpy as np

from ec_jax.report import ablation
from ec_jax.report import accuracy_vs_n
from ec_jax.traces import records

DPI = 100
CENTROID_FIGURE_SIZE = (7.0, 4.5)
ACCURACY_FIGURE_SIZE = (8.0, 4.5)
ENTROPY_PANEL_SIZE = (10.0, 2.5)
REFERENCE_METHODS = ("pass@1", "pass@n")

_STYLE = {
    "font.size": 9.0,
    "axes.titlesize": 9.0,
    "axes.labelsize": 9.0,
    "legend.fontsize": 8.0,
    "xtick.labelsize": 8.0,
    "ytick.labelsize": 8.0,
    "axes.grid": True,
    "grid.alpha": 0.3,
}
_CORRECT_COLOR = "tab:green"
_INCORRECT_COLOR = "tab:red"
_REFERENCE_STYLES = {"pass@1": dict(color="0.35", linestyle="--"),
                     "pass@n": dict(color="0.35", linestyle=":", marker=".")}


def _new_figure(size: tuple[float, float]) -> figure_lib.Figure:
  figure = figure_lib.Figure(figsize=size, dpi=DPI, layout="constrained")
  backend_agg.FigureCanvasAgg(figure)
  return figure


def _save(figure: figure_lib.Figure, path: str | os.PathLike[str]) -> pathlib.Path:
  """Render the figure to PNG without metadata and write it atomically."""
  buffer = io.BytesIO()
  figure.savefig(buffer, format="png", dpi=DPI, metadata={"Software": None})
  data = buffer.getvalue()
  records.write_bytes_atomic(path, lambda file: file.write(data))
  return pathlib.Path(path)


def _styled():
  """Return a context with the default style plus `_STYLE`, ignoring the user's matplotlibrc."""
  return style_lib.context(["default", _STYLE])


# ---------------------------------------------------------------------------------------------
# Centroid distributions.


def _count_text(count: int, noun: str) -> str:
  return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def _group_text(name: str, values: np.ndarray, without: int) -> str:
  if values.size:
    text = f"{name}: {values.size} with a centroid (median {np.median(values):.3f})"
  else:
    text = f"{name}: none with a centroid"
  return f"{text}, {without} without"


def plot_centroid_distributions(centroids, correct, path: str | os.PathLike[str], *,
                                present=None, bins: int = 30, title: str | None = None,
                                centroid_name: str = "entropy centroid") -> pathlib.Path:
  """Draw histograms of the centroids of correct and of incorrect trajectories.

  Only labelled problems count (as in the accuracies). The legend gives each group's size, its
  median and how many of its trajectories have no centroid. Each histogram is normalised to
  unit area so groups of different sizes compare; dashed lines mark the medians.

  Args:
    centroids: `[problems, N]` floats, NaN for no centroid.
    correct: `[problems, N]` correctness, see `accuracy_vs_n.labels_table`.
    path: the PNG file to write.
    present: `[problems, N]` bools; default all present.
    bins: number of bins over the range of all centroids.
    title: the figure title; a default names the counts.
    centroid_name: x-axis label, e.g. the centroid method.

  Returns:
    The path written.
  """
  centroids = np.asarray(centroids, dtype=np.float64)
  present = np.ones(centroids.shape, bool) if present is None else np.asarray(present, bool)
  if centroids.ndim != 2 or centroids.shape != present.shape:
    raise ValueError(
        f"centroids and present must both be [problems, N], got {centroids.shape} and "
        f"{present.shape}.")
  if isinstance(bins, bool) or not isinstance(bins, int) or bins < 1:
    raise ValueError(f"bins must be an integer >= 1, got {bins!r}.")
  labels, labelled = accuracy_vs_n.labels_table(correct, present)
  counted = present & labelled[:, None]
  has_centroid = np.isfinite(centroids)
  groups = []
  for name, color, members in (("correct", _CORRECT_COLOR, counted & labels),
                               ("incorrect", _INCORRECT_COLOR, counted & ~labels)):
    values = centroids[members & has_centroid]
    groups.append((name, color, values, int(np.sum(members & ~has_centroid))))
  finite = np.concatenate([values for _, _, values, _ in groups])

  with _styled():
    figure = _new_figure(CENTROID_FIGURE_SIZE)
    axes = figure.add_subplot()
    if finite.size:
      edges = np.histogram_bin_edges(finite, bins=bins)
      for name, color, values, without in groups:
        label = _group_text(name, values, without)
        if values.size:
          axes.hist(values, bins=edges, density=True, histtype="stepfilled", alpha=0.3,
                    color=color)
          axes.hist(values, bins=edges, density=True, histtype="step", color=color,
                    linewidth=1.2, label=label)
          axes.axvline(float(np.median(values)), color=color, linestyle="--", linewidth=1.0)
        else:
          axes.plot([], [], color=color, label=label)
      figure.legend(loc="outside lower center", ncols=1)
    else:
      axes.text(0.5, 0.5, "no labelled trajectory has a centroid", transform=axes.transAxes,
                ha="center", va="center")
    axes.set_xlabel(centroid_name)
    axes.set_ylabel("density")
    unlabelled = int(np.sum(~labelled))
    if title is None:
      title = ("Centroids of correct and incorrect trajectories "
               f"({_count_text(int(np.sum(labelled)), 'problem')}")
      title += f", {unlabelled} unlabelled left out)" if unlabelled else ")"
    axes.set_title(title)
    return _save(figure, path)


# ---------------------------------------------------------------------------------------------
# Accuracy vs N.


def _curve_points(curve: Mapping[int, Mapping | float | None]
                  ) -> tuple[np.ndarray, np.ndarray, int | None]:
  """Return the n, the accuracies in percent (NaN for None) and the samples of any estimate."""
  ns = np.array(sorted(curve), dtype=np.int64)
  accuracy = np.full(ns.size, np.nan)
  samples = None
  for i, n in enumerate(ns):
    point = curve[int(n)]
    if isinstance(point, Mapping):
      if point.get("estimate"):
        samples = point.get("samples")
      point = point.get("accuracy")
    if point is not None:
      accuracy[i] = 100 * float(point)
  return ns, accuracy, samples


def _n_ticks(values: Sequence[int]) -> list[int]:
  """Return tick positions: every n when there are few, else the powers of two and the last."""
  values = sorted(set(values))
  if len(values) <= 12:
    return values
  ticks = [n for n in values if n & (n - 1) == 0]
  if values[-1] not in ticks:
    ticks.append(values[-1])
  return ticks


def plot_accuracy_vs_n(curves: Mapping[str, Mapping[int, Mapping | float | None]],
                       path: str | os.PathLike[str], *,
                       title: str = "Accuracy with n of the N trajectories") -> pathlib.Path:
  """Draw the accuracy of several methods against n, with pass@1 and pass@n as references.

  Args:
    curves: method -> {n: point}, where a point is an `accuracy_vs_n.curve_point` dict or an
      accuracy in [0, 1] (None for no labelled problem). `pass@1` and `pass@n`, when present,
      are drawn as grey reference lines. A curve with estimated points is labelled as an
      estimate in the legend.
    path: the PNG file to write.
    title: the figure title.

  Returns:
    The path written.
  """
  if not curves:
    raise ValueError("No curves to draw; give at least one method -> {n: accuracy}.")
  every_n = sorted({int(n) for curve in curves.values() for n in curve})
  if not every_n or every_n[0] < 1:
    raise ValueError(f"Curves need n >= 1, got n values {every_n}.")
  with _styled():
    figure = _new_figure(ACCURACY_FIGURE_SIZE)
    axes = figure.add_subplot()
    colors = iter(matplotlib.rcParams["axes.prop_cycle"].by_key()["color"] * 4)
    for method, curve in curves.items():
      ns, accuracy, samples = _curve_points(curve)
      label = method if samples is None else f"{method} (estimate, {samples} subsets)"
      if method in REFERENCE_METHODS:
        style = _REFERENCE_STYLES[method]
        if method == "pass@1" and np.isfinite(accuracy).any():
          # pass@1 does not depend on n, so it spans the whole axis.
          axes.axhline(float(np.nanmean(accuracy)), label=label, linewidth=1.2,
                       color=style["color"], linestyle=style["linestyle"])
        else:
          axes.plot(ns, accuracy, label=label, linewidth=1.2, **style)
      elif method == "lowest_centroid":
        # A wide line under the others, so it stays visible where another method's curve
        # coincides with it.
        axes.plot(ns, accuracy, label=label, color=next(colors), marker="o", markersize=5,
                  linewidth=4, alpha=0.6, zorder=1.5)
      else:
        axes.plot(ns, accuracy, label=label, color=next(colors), marker="o", markersize=3.5,
                  linewidth=1.5)
    if every_n[-1] / every_n[0] >= 8:
      axes.set_xscale("log", base=2)
    axes.xaxis.set_major_locator(ticker.FixedLocator(_n_ticks(every_n)))
    axes.xaxis.set_major_formatter(ticker.FuncFormatter(lambda x, _: f"{x:g}"))
    axes.xaxis.set_minor_locator(ticker.NullLocator())
    axes.set_xlabel("n (trajectories available per problem)")
    axes.set_ylabel("accuracy (%)")
    axes.set_title(title)
    axes.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0)
    return _save(figure, path)


# ---------------------------------------------------------------------------------------------
# Per-token entropy.


@dataclasses.dataclass(frozen=True)
class TokenTrace:
  """One trajectory's per-token entropy and phases, as drawn by `plot_token_entropy`.

  Attributes:
    problem_id: the problem id.
    trajectory_index: the trajectory's index within its problem.
    entropy: `[length]` entropies in nats; NaN where invalid.
    phases: (start, duration) pairs; duration counts valid tokens (the scoring convention).
    high_threshold: the trajectory's high threshold, or None.
    low_threshold: the trajectory's low threshold, or None.
    correct: True, False or None (unlabelled).
    centroid: the trajectory's centroid, or None.
    valid: `[length]` bools; default: finite entropy.
    num_phases: the exact phase count when `phases` is capped; default len(phases).
  """

  problem_id: str
  trajectory_index: int
  entropy: np.ndarray
  phases: Sequence[Sequence[int]]
  high_threshold: float | None
  low_threshold: float | None
  correct: bool | None
  centroid: float | None
  valid: np.ndarray | None = None
  num_phases: int | None = None


def phase_spans(phases: Sequence[Sequence[int]], valid: np.ndarray) -> list[tuple[int, int]]:
  """Return each phase as a half-open position interval [first, last + 1).

  A phase's duration counts valid tokens only. Its last position is therefore that of its d-th
  valid token from the start, and invalid tokens inside the phase widen the span.

  Args:
    phases: (start, duration) pairs.
    valid: `[length]` bools.
  """
  positions = np.flatnonzero(np.asarray(valid, dtype=bool))
  spans = []
  for start, duration in phases:
    first = int(np.searchsorted(positions, start))
    if first >= positions.size or positions[first] != start or duration < 1:
      raise ValueError(
          f"Phase ({start}, {duration}) does not start on a valid token with duration >= 1.")
    last = min(first + int(duration), positions.size) - 1
    spans.append((int(start), int(positions[last]) + 1))
  return spans


def _trace_title(trace: TokenTrace) -> str:
  outcome = {True: "correct", False: "incorrect", None: "unlabelled"}[trace.correct]
  centroid = ("no centroid" if trace.centroid is None or not math.isfinite(trace.centroid)
              else f"centroid {trace.centroid:.4f}")
  title = (f"problem {trace.problem_id}, trajectory {trace.trajectory_index}: {outcome}, "
           f"{centroid}")
  if trace.num_phases is not None and trace.num_phases > len(trace.phases):
    title += f" (first {len(trace.phases)} of {trace.num_phases} phases shaded)"
  return title


def _draw_trace(axes, trace: TokenTrace) -> None:
  entropy = np.asarray(trace.entropy, dtype=np.float64)
  valid = np.isfinite(entropy) if trace.valid is None else np.asarray(trace.valid, bool)
  if entropy.ndim != 1 or valid.shape != entropy.shape:
    raise ValueError(
        f"Trajectory {trace.problem_id}/{trace.trajectory_index}: entropy and valid must both "
        f"be [length], got {entropy.shape} and {valid.shape}.")
  shown = np.where(valid, entropy, np.nan)
  for number, (first, stop) in enumerate(phase_spans(trace.phases, valid)):
    axes.axvspan(first - 0.5, stop - 0.5, color="tab:orange", alpha=0.25, linewidth=0,
                 label=f"phases ({len(trace.phases)})" if number == 0 else None)
  axes.plot(np.arange(entropy.size), shown, color="tab:blue", linewidth=0.7)
  for value, name, style in ((trace.high_threshold, "high threshold", "--"),
                             (trace.low_threshold, "low threshold", ":")):
    if value is not None and math.isfinite(value):
      axes.axhline(value, color="0.2", linestyle=style, linewidth=1.0,
                   label=f"{name} {value:.3g}")
  axes.set_xlim(-0.5, max(entropy.size, 1) - 0.5)
  axes.set_ylabel("entropy (nats)")
  axes.set_title(_trace_title(trace), loc="left")
  if entropy.size == 0:
    axes.text(0.5, 0.5, "no generated tokens", transform=axes.transAxes, ha="center",
              va="center")
    axes.set_yticks([])
    axes.set_xticks([])
  if axes.get_legend_handles_labels()[0]:
    # Right of the panel, so that it hides neither the curve nor the title.
    axes.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)


def plot_token_entropy(traces: Sequence[TokenTrace], path: str | os.PathLike[str]
                       ) -> pathlib.Path:
  """Draw each trajectory's per-token entropy with its phases shaded, one panel per trajectory.

  Each panel shows the entropy (gaps at invalid tokens), the phases as shaded spans, the high
  (dashed) and low (dotted) thresholds, and a title with the problem id, trajectory index,
  correctness and centroid. The figure is `ENTROPY_PANEL_SIZE` per panel.

  Returns:
    The path written.
  """
  if not traces:
    raise ValueError("No trajectories to draw; give at least one TokenTrace.")
  width, height = ENTROPY_PANEL_SIZE
  with _styled():
    figure = _new_figure((width, height * len(traces)))
    panels = figure.subplots(len(traces), 1, squeeze=False)[:, 0]
    for axes, trace in zip(panels, traces):
      _draw_trace(axes, trace)
    panels[-1].set_xlabel("token position")
    return _save(figure, path)


# ---------------------------------------------------------------------------------------------
# Heat-map of a 2-D ablation grid.


def heatmap_figure_size(rows: int, columns: int) -> tuple[float, float]:
  """Return the heat-map's size in inches for a grid of `rows` x `columns` cells."""
  return max(5.0, 2.5 + 0.8 * columns), max(4.0, 1.8 + 0.5 * rows)


def _axis_label(value) -> str:
  if isinstance(value, (float, np.floating)):
    return f"{float(value):g}"
  return str(value)


def plot_ablation_heatmap(data: ablation.HeatmapData, path: str | os.PathLike[str], *,
                          title: str | None = None) -> pathlib.Path:
  """Draw a 2-D ablation grid with the accuracy in percent written in each cell.

  Args:
    data: the grid, from `ablation.heatmap_data`. Missing cells are grey and marked "n/a".
    path: the PNG file to write.
    title: the figure title; the default names the fixed axes.

  Returns:
    The path written.
  """
  accuracy = 100 * np.asarray(data.accuracy, dtype=np.float64)
  expected_shape = (len(data.row_values), len(data.column_values))
  if accuracy.shape != expected_shape:
    raise ValueError(
        f"accuracy must be [rows, columns] = {expected_shape}, got {accuracy.shape}.")
  if title is None:
    fixed = ", ".join(f"{axis} = {_axis_label(value)}" for axis, value in data.fixed.items())
    title = "Accuracy (%)" + (f" at {fixed}" if fixed else "")
  with _styled():
    figure = _new_figure(heatmap_figure_size(*expected_shape))
    axes = figure.add_subplot()
    colormap = matplotlib.colormaps["viridis"].with_extremes(bad="0.85")
    finite = accuracy[np.isfinite(accuracy)]
    low, high = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 100.0)
    if high - low < 1e-9:
      low, high = low - 0.5, high + 0.5
    image = axes.imshow(np.ma.masked_invalid(accuracy), cmap=colormap, vmin=low, vmax=high,
                        aspect="auto")
    for i in range(expected_shape[0]):
      for j in range(expected_shape[1]):
        value = accuracy[i, j]
        if not math.isfinite(value):
          axes.text(j, i, "n/a", ha="center", va="center", color="0.3")
          continue
        red, green, blue, _ = colormap((value - low) / (high - low))
        # Dark text on light cells and light text on dark ones (relative luminance).
        light = 0.2126 * red + 0.7152 * green + 0.0722 * blue > 0.5
        axes.text(j, i, f"{value:.1f}", ha="center", va="center",
                  color="black" if light else "white")
    axes.set_xticks(range(expected_shape[1]), [_axis_label(v) for v in data.column_values])
    axes.set_yticks(range(expected_shape[0]), [_axis_label(v) for v in data.row_values])
    axes.set_xlabel(data.column_axis)
    axes.set_ylabel(data.row_axis)
    axes.grid(False)
    axes.set_title(title)
    figure.colorbar(image, ax=axes, label="accuracy (%)")
    return _save(figure, path)
