"""PNG figures on the reference parity traces: valid files, fixed sizes, identical bytes."""

import json
import struct
import zlib

import matplotlib
from matplotlib import image as image_lib
import numpy as np
import pytest

from ec_jax import traces
from ec_jax.report import ablation
from ec_jax.report import accuracy_vs_n
from ec_jax.report import plots

PARITY_FILE = "reference_traces_small.json"
EXPECTED_FILE = "reference_traces_small.expected.jsonl"
# Labels chosen for these tests (the parity file has none): 3 problems x 4 trajectories.
CORRECT = np.array([[True, False, False, True],
                    [False, True, True, False],
                    [True, True, False, True]])
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
METADATA_CHUNKS = {b"tEXt", b"iTXt", b"zTXt", b"tIME"}


def _png_chunks(path):
  """Return the PNG's (type, data) chunks, checking the signature and every CRC."""
  data = path.read_bytes()
  assert data[:8] == PNG_SIGNATURE
  chunks = []
  offset = 8
  while offset < len(data):
    (length,) = struct.unpack(">I", data[offset:offset + 4])
    kind = data[offset + 4:offset + 8]
    body = data[offset + 8:offset + 8 + length]
    (crc,) = struct.unpack(">I", data[offset + 8 + length:offset + 12 + length])
    assert zlib.crc32(kind + body) == crc, kind
    chunks.append((kind, body))
    offset += 12 + length
  return chunks


def _check_png(path, size_inches):
  """Check a written figure: valid PNG, the expected pixel size, no metadata, not blank."""
  chunks = _png_chunks(path)
  assert chunks[0][0] == b"IHDR"
  assert chunks[-1][0] == b"IEND"
  width, height = struct.unpack(">II", chunks[0][1][:8])
  assert (width, height) == (round(size_inches[0] * plots.DPI), round(size_inches[1] * plots.DPI))
  assert not METADATA_CHUNKS & {kind for kind, _ in chunks}
  pixels = image_lib.imread(path)
  assert pixels.shape[:2] == (height, width)
  assert float(np.std(pixels[..., :3])) > 0.01


def _draw_twice(draw, tmp_path):
  first = draw(tmp_path / "first.png")
  second = draw(tmp_path / "second.png")
  assert first == tmp_path / "first.png"
  assert first.read_bytes() == second.read_bytes()
  return first


@pytest.fixture
def records(data_dir):
  with open(data_dir / EXPECTED_FILE, encoding="utf-8") as file:
    return [json.loads(line) for line in file]


@pytest.fixture
def centroid_tables(records):
  return ablation.tables_from_records(records, ["weighted_average_center",
                                                "weighted_average_center@5/50/3",
                                                "weighted_average_center@3/30/5"])


def test_centroid_distributions_png(centroid_tables, tmp_path):
  centroids = centroid_tables.tables["weighted_average_center"]
  path = _draw_twice(
      lambda p: plots.plot_centroid_distributions(centroids, CORRECT, p, bins=8), tmp_path)
  _check_png(path, plots.CENTROID_FIGURE_SIZE)


def test_centroid_distributions_ignore_user_style(centroid_tables, tmp_path):
  centroids = centroid_tables.tables["weighted_average_center"]
  plain = plots.plot_centroid_distributions(centroids, CORRECT, tmp_path / "plain.png")
  with matplotlib.rc_context({"lines.linewidth": 6.0, "font.size": 20.0,
                              "axes.facecolor": "black"}):
    styled = plots.plot_centroid_distributions(centroids, CORRECT, tmp_path / "styled.png")
  assert plain.read_bytes() == styled.read_bytes()


def test_centroid_distributions_without_centroids(tmp_path):
  centroids = np.full((2, 3), np.nan)
  correct = [[True, False, None], [False, False, True]]
  path = plots.plot_centroid_distributions(centroids, correct, tmp_path / "empty.png")
  _check_png(path, plots.CENTROID_FIGURE_SIZE)


def test_accuracy_vs_n_png(centroid_tables, tmp_path):
  centroids = centroid_tables.tables["weighted_average_center"]
  answers = [["1", "2", "1", None], ["a", "a", "b", "b"], ["x", "x", "y", "x"]]
  curves = {}
  for method in ("pass@1", "pass@n", "lowest_centroid", "majority_vote", "centroid_vote"):
    curves[method] = accuracy_vs_n.accuracy_curve(method, CORRECT, [1, 2, 3, 4],
                                                  centroids=centroids, answers=answers)
  # A curve given as plain accuracies, with a Monte Carlo label, and a missing point.
  curves["lowest_centroid_delta"] = accuracy_vs_n.accuracy_curve(
      "lowest_centroid_delta", CORRECT, [1, 2, 3, 4], centroids=centroids, max_subsets=2,
      samples=50)
  curves["deepconf_mean"] = {1: 0.5, 2: None, 4: 0.75}
  path = _draw_twice(lambda p: plots.plot_accuracy_vs_n(curves, p), tmp_path)
  _check_png(path, plots.ACCURACY_FIGURE_SIZE)


def test_accuracy_vs_n_log_axis(tmp_path):
  curves = {"pass@1": {n: 0.4 for n in range(1, 65)},
            "lowest_centroid": {n: 0.4 + 0.002 * n for n in range(1, 65)}}
  path = plots.plot_accuracy_vs_n(curves, tmp_path / "long.png")
  _check_png(path, plots.ACCURACY_FIGURE_SIZE)


def _token_traces(data_dir, records):
  trajectories = traces.read_traces(data_dir / PARITY_FILE, labels=None)
  drawn = []
  for trajectory, record in list(zip(trajectories, records))[:4]:
    entropy = trajectory.entropy
    valid = np.isfinite(entropy)
    # The default setting: top_percent 1, bottom_percent 80, numpy's linear percentile.
    high = float(np.percentile(entropy[valid], 99)) if valid.any() else None
    low = float(np.percentile(entropy[valid], 80)) if valid.any() else None
    problem = int(record["problem_id"][-1])
    drawn.append(plots.TokenTrace(
        record["problem_id"], record["trajectory_index"], entropy, record["phases"], high, low,
        bool(CORRECT[problem, record["trajectory_index"]]), record["weighted_average_center"],
        valid=valid, num_phases=len(record["phases"]) + (1 if drawn else 0)))
  return drawn


def test_token_entropy_png(data_dir, records, tmp_path):
  drawn = _token_traces(data_dir, records)
  path = _draw_twice(lambda p: plots.plot_token_entropy(drawn, p), tmp_path)
  width, height = plots.ENTROPY_PANEL_SIZE
  _check_png(path, (width, height * len(drawn)))


def test_token_entropy_title(data_dir, records):
  drawn = _token_traces(data_dir, records)
  # pylint: disable-next=protected-access
  title = plots._trace_title(drawn[0])
  assert title == "problem sample_00000, trajectory 0: correct, centroid 0.4585"
  # pylint: disable-next=protected-access
  assert plots._trace_title(drawn[1]).endswith(
      "incorrect, no centroid (first 0 of 1 phases shaded)")


def test_phase_spans_widen_over_invalid_tokens():
  valid = np.array([True, True, False, True, True, False, True])
  assert plots.phase_spans([(1, 3), (6, 1)], valid) == [(1, 5), (6, 7)]
  assert plots.phase_spans([(0, 2)], np.ones(4, bool)) == [(0, 2)]
  with pytest.raises(ValueError, match="valid token"):
    plots.phase_spans([(2, 1)], valid)


def test_ablation_heatmap_png(centroid_tables, tmp_path):
  rows = []
  for key, table in centroid_tables.tables.items():
    for row in ablation.num_samples_rows(CORRECT, centroids=table, bootstrap_samples=200):
      rows.append({"centroid_key": key, **row})
  data = ablation.heatmap_data(rows, "centroid_key", "num_samples")
  path = _draw_twice(lambda p: plots.plot_ablation_heatmap(data, p), tmp_path)
  _check_png(path, plots.heatmap_figure_size(3, 4))


def test_ablation_heatmap_missing_cells(tmp_path):
  rows = [{"top_percent": t, "bottom_percent": b, "accuracy": a}
          for t, b, a in [(1.0, 30.0, 0.5), (1.0, 80.0, None), (3.0, 30.0, 0.5)]]
  data = ablation.heatmap_data(rows, "top_percent", "bottom_percent")
  path = plots.plot_ablation_heatmap(data, tmp_path / "sparse.png", title="sparse grid")
  _check_png(path, plots.heatmap_figure_size(2, 2))


def test_plots_reject_bad_input(tmp_path):
  with pytest.raises(ValueError, match="No curves"):
    plots.plot_accuracy_vs_n({}, tmp_path / "x.png")
  with pytest.raises(ValueError, match="No trajectories"):
    plots.plot_token_entropy([], tmp_path / "x.png")
  with pytest.raises(ValueError, match="bins"):
    plots.plot_centroid_distributions(np.zeros((1, 2)), [[True, False]], tmp_path / "x.png",
                                      bins=0)
  with pytest.raises(ValueError, match=r"\[problems, N\]"):
    plots.plot_centroid_distributions(np.zeros(2), [[True, False]], tmp_path / "x.png")
  assert not (tmp_path / "x.png").exists()
