"""The sweep on ec_jax run folders (all three entropies), and invalid sweep configs."""

import os

import numpy as np
import pytest

import scoring_oracle
from configs import sweep as sweep_config
from ec_jax import config_checks
from ec_jax import traces
from ec_jax.scoring import settings as settings_lib
from ec_jax.scoring import sweep
from ec_jax.scoring import trace_scoring

ENTROPY_KINDS = ("topk", "full", "sampling")
# Lengths and labels of a run of 3 problems x 4 trajectories, one of them empty.
LENGTHS = {"p0": [60, 0, 45, 30], "p1": [75, 52, 64, 40], "p2": [33, 58, 70, 49]}
CORRECT = {"p0": [True, False, True, False], "p1": [False, True, True, False],
           "p2": [True, False, False, True]}
TIME = 80


def make_config(trace, output_dir, **overrides):
  """The default sweep config for `trace`, with dotted-key overrides such as phases__top_percent."""
  config = sweep_config.get_config()
  config.input = str(trace)
  config.output_dir = str(output_dir)
  config.bootstrap.samples = 100
  for key, value in overrides.items():
    *parents, last = key.split("__")
    target = config
    for part in parents:
      target = target[part]
    setattr(target, last, value)
  return config


def write_run_folder(folder, seed, kinds=ENTROPY_KINDS):
  """Write an ec_jax run folder with an `entropy_<kind>` array per kind and return the arrays.

  Each entropy kind gets its own random values, so the kinds select different trajectories.
  """
  rng = np.random.default_rng(seed)
  problem_ids = [p for p in LENGTHS for _ in LENGTHS[p]]
  indices = [j for p in LENGTHS for j in range(len(LENGTHS[p]))]
  lengths = np.array([n for p in LENGTHS for n in LENGTHS[p]], np.int32)
  inside = np.arange(TIME)[None, :] < lengths[:, None]
  rows = lengths.size
  arrays = {
      "problem_id": np.array(problem_ids),
      "trajectory_index": np.array(indices),
      "lengths": lengths,
      "token_ids": rng.integers(0, 100, (rows, TIME)),
  }
  for name in (*(f"entropy_{kind}" for kind in kinds), "confidence", "self_certainty"):
    arrays[name] = np.where(inside, rng.exponential(0.6, (rows, TIME)), 0.0)
  traces.write_shard(folder, 0, arrays)
  # Correct trajectories answer "42", and wrong ones disagree among themselves.
  with traces.JsonlWriter(folder / "trajectories.jsonl") as writer:
    writer.write({"problem_id": p, "trajectory_index": j, "num_tokens": int(n), "text": "",
                  "answer": "42" if CORRECT[p][j] else f"{j}", "correct": CORRECT[p][j]}
                 for p, j, n in zip(problem_ids, indices, lengths))
  return arrays


def oracle_correct(arrays, kind, method="weighted_average_center", mass="length"):
  """Return how many problems the oracle's lowest centroid under `kind` answers correctly."""
  values = {}
  for row in range(arrays["lengths"].size):
    length = int(arrays["lengths"][row])
    entropies = arrays[f"entropy_{kind}"][row, :length].tolist()
    if method == "raw_entropy":
      centroid = scoring_oracle.raw_entropy_centroid(entropies)
    else:
      centroid = scoring_oracle.score(entropies, 1.0, 80.0, 2, mass)[method]
    values[(str(arrays["problem_id"][row]), int(arrays["trajectory_index"][row]))] = centroid
  correct = 0
  for problem, labels in CORRECT.items():
    candidates = [(values[(problem, j)], j) for j in range(len(labels))
                  if values[(problem, j)] is not None]
    correct += labels[min(candidates)[1]]
  return correct


@pytest.fixture(scope="module")
def run_folder(tmp_path_factory):
  folder = tmp_path_factory.mktemp("run")
  return folder, write_run_folder(folder, seed=5)


@pytest.fixture(scope="module")
def run_folder_sweep(run_folder, tmp_path_factory):
  folder, _ = run_folder
  config = make_config(folder, tmp_path_factory.mktemp("sweep") / "out",
                       phase_masses=("length",), num_samples_grid=(1, 2, 4))
  return sweep.run(config).report


def test_run_folder_scores_every_entropy(run_folder, run_folder_sweep):
  _, arrays = run_folder
  rows = run_folder_sweep["ablations"]["entropy"]
  assert [row["entropy"] for row in rows] == list(ENTROPY_KINDS)
  for row in rows:
    kind = row["entropy"]
    assert "unavailable" not in row, kind
    assert row["total"] == 3, kind
    assert row["unanswered"] == 0, kind
    assert row["correct"] == oracle_correct(arrays, kind), kind
  # The kinds select different trajectories, so a pass scored with the wrong entropy shows.
  assert len({row["correct"] for row in rows}) > 1
  assert run_folder_sweep["input"]["format"] == "ec_jax"
  assert run_folder_sweep["scoring"]["passes"] == [
      {"entropy": "topk", "phase_mass": "length", "settings": 28},
      {"entropy": "full", "phase_mass": "length", "settings": 1},
      {"entropy": "sampling", "phase_mass": "length", "settings": 1}]


def test_run_folder_centroid_methods(run_folder, run_folder_sweep):
  _, arrays = run_folder
  for row in run_folder_sweep["ablations"]["centroid_method"]:
    method = row["centroid_method"]
    assert row["correct"] == oracle_correct(arrays, "topk", method), method


def test_run_folder_curve_uses_answers(run_folder_sweep):
  rows = {(row["method"], row["num_samples"]): row
          for row in run_folder_sweep["ablations"]["num_samples"]}
  assert sorted(rows) == sorted((method, n) for method in sweep.CURVE_METHODS for n in (1, 2, 4))
  # Every problem has two correct answers "42" and two different wrong ones, so with all four
  # trajectories the vote always picks "42".
  assert rows[("majority_vote", 4)]["accuracy"] == 1.0
  assert rows[("pass@n", 4)]["accuracy"] == 1.0
  assert rows[("pass@1", 2)]["accuracy"] == pytest.approx(
      np.mean([np.mean(labels) for labels in CORRECT.values()]))


def test_missing_entropy_array_unavailable(tmp_path):
  folder = tmp_path / "run"
  write_run_folder(folder, seed=5, kinds=("topk", "full"))
  config = make_config(folder, tmp_path / "out", entropies=("sampling", "topk"),
                       phase_masses=("length",), num_samples_grid=(4,))
  report = sweep.run(config).report
  sampling, topk = report["ablations"]["entropy"]
  assert sampling == {"entropy": "sampling",
                      "unavailable": "the run folder has no entropy_sampling arrays"}
  assert "accuracy" in topk
  assert len(report["scoring"]["passes"]) == 1


# ---------------------------------------------------------------------------------------------
# Invalid configs: each is reported with its key before anything is read or written.


@pytest.mark.parametrize("overrides, message", [
    ({"centroid_methods": ("centroid",)}, "centroid_methods = ('centroid',) is invalid"),
    ({"centroid_methods": ()}, "centroid_methods = () is invalid: it must not be empty"),
    ({"centroid_methods": ("moment", "moment")}, "lists 'moment' more than once"),
    ({"entropies": ("topk", "fancy")}, "'fancy' is not one of topk, full, sampling"),
    ({"phase_masses": ("weight",)}, "'weight' is not one of length, entropy"),
    ({"sweep_grid__top_percent": ()}, "sweep_grid.top_percent = () is invalid"),
    ({"sweep_grid__consecutive_low": (2, 3, 2)}, "sweep_grid.consecutive_low = (2, 3, 2) is "
                                                 "invalid: it lists 2 more than once"),
    ({"num_samples_grid": (0,)}, r"num_samples_grid[0] = 0 is invalid: it must be an integer"),
    ({"num_samples_grid": (4, -1)}, r"num_samples_grid[1] = -1 is invalid"),
    ({"num_samples_grid": (1.5,)}, r"num_samples_grid[0] = 1.5 is invalid"),
    ({"num_samples_grid": ()}, "num_samples_grid = () is invalid: it must not be empty"),
    ({"num_samples_grid": (2, 2)}, "it lists [2] more than once"),
    ({"selection_entropy": "fancy"}, "selection_entropy = 'fancy' is invalid"),
    ({"phases__top_percent": 120.0}, "phases.top_percent = 120.0 is invalid"),
])
def test_invalid_config(run_folder, tmp_path, overrides, message):
  folder, _ = run_folder
  out = tmp_path / "out"
  config = make_config(folder, out, **overrides)
  with pytest.raises(config_checks.ConfigError) as error:
    sweep.run(config)
  assert message in str(error.value)
  assert not out.exists()


def test_invalid_config_lists_every_problem(run_folder, tmp_path):
  folder, _ = run_folder
  config = make_config(folder, tmp_path / "out", centroid_methods=("centroid",),
                       entropies=(), num_samples_grid=(0,), input=str(tmp_path / "absent"))
  with pytest.raises(config_checks.ConfigError) as error:
    sweep.check_sweep_config(config)
  keys = [problem.split(" ", 1)[0] for problem in error.value.problems]
  assert keys == ["input", "centroid_methods", "entropies", "num_samples_grid[0]"]


def test_default_config_is_valid(run_folder, tmp_path):
  folder, _ = run_folder
  config = make_config(folder, tmp_path / "out")
  sweep.check_sweep_config(config)
  assert config.centroid_methods == settings_lib.CENTROID_METHODS
  assert config.phase_masses == settings_lib.PHASE_MASSES
  assert config.entropies == ENTROPY_KINDS
  assert config.num_samples_grid is None
  options = sweep.sweep_options(config)
  assert len(options.settings) == 28
  assert options.settings[0] == settings_lib.PhaseSetting(1.0, 80.0, 2)


def test_unknown_variant():
  with pytest.raises(ValueError, match="Unknown sweep config variant 'fast'"):
    sweep_config.get_config("fast")


def test_full_entropy_on_imported_traces(data_dir, tmp_path):
  out = tmp_path / "out"
  config = make_config(data_dir / "reference_traces_small.json", out, selection_entropy="full")
  with pytest.raises(trace_scoring.TraceScoringError, match="selection_entropy='full'"):
    sweep.run(config)
  assert not out.exists()
  assert os.listdir(tmp_path) == []
