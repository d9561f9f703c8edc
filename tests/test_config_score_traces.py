"""The score_traces config, the shared scoring groups and their validation."""

import copy
import math

import pytest

from configs import common
from configs import score_traces as score_traces_config
from ec_jax import config_checks
from ec_jax.report import statistics
from ec_jax.scoring import deepconf
from ec_jax.scoring import selection
from ec_jax.scoring import settings as settings_lib


@pytest.fixture
def config(tmp_path):
  """A valid config: the defaults with an existing input and a fresh output folder."""
  trace = tmp_path / "traces.json"
  trace.write_text("[]")
  config = score_traces_config.get_config()
  config.input = str(trace)
  config.output_dir = str(tmp_path / "out")
  return config


def test_defaults_match_library_constants():
  config = score_traces_config.get_config()
  assert config.phases.top_percent == settings_lib.DEFAULT_TOP_PERCENT
  assert config.phases.bottom_percent == settings_lib.DEFAULT_BOTTOM_PERCENT
  assert config.phases.consecutive_low == settings_lib.DEFAULT_CONSECUTIVE_LOW
  assert config.phases.max_phases == settings_lib.DEFAULT_MAX_PHASES
  assert tuple(config.sweep_grid.top_percent) == settings_lib.DEFAULT_SWEEP_TOP_PERCENT
  assert tuple(config.sweep_grid.bottom_percent) == settings_lib.DEFAULT_SWEEP_BOTTOM_PERCENT
  assert tuple(config.sweep_grid.consecutive_low) == settings_lib.DEFAULT_SWEEP_CONSECUTIVE_LOW
  assert config.centroid_method == "weighted_average_center"
  assert config.phase_mass == "length"
  assert config.delta == selection.DEFAULT_DELTA
  assert config.cv_folds == selection.DEFAULT_CV_FOLDS
  assert config.centroid_vote_fraction == selection.DEFAULT_CENTROID_VOTE_FRACTION
  assert config.deepconf.window == deepconf.DEFAULT_WINDOW
  assert config.deepconf.tail == deepconf.DEFAULT_TAIL
  assert config.bootstrap.samples == statistics.DEFAULT_SAMPLES
  assert config.bootstrap.seed == statistics.DEFAULT_SEED
  assert config.entropy_k == 10
  assert config.selection_entropy == "topk"


def test_score_traces_keys():
  config = score_traces_config.get_config()
  assert config.input == ""
  assert config.format == "auto"
  assert config.labels == ""
  assert config.output_dir == ""
  assert config.sweep is False
  assert config.x64 is True
  assert config.seed == 0


def test_variants():
  reference = score_traces_config.get_config("reference")
  assert (reference.phases.top_percent, reference.phases.bottom_percent,
          reference.phases.consecutive_low) == (5.0, 50.0, 3)
  both = score_traces_config.get_config("reference,sweep")
  assert both.sweep is True
  assert both.phases.top_percent == 5.0


def test_unknown_variant_raises():
  with pytest.raises(ValueError, match="bogus"):
    score_traces_config.get_config("bogus")


def test_common_groups_added_in_place():
  from ml_collections import config_dict
  base = config_dict.ConfigDict({"model": "x"})
  returned = common.add_scoring_groups(base)
  assert returned is base
  assert base.model == "x"
  assert base.phases.max_phases == 256


def test_valid_config_passes(config):
  config_checks.check_score_traces_config(config)


INVALID_VALUES = [
    ("phases.top_percent", 120.0),
    ("phases.top_percent", -1.0),
    ("phases.top_percent", math.nan),
    ("phases.bottom_percent", 100.5),
    ("phases.consecutive_low", 0),
    ("phases.max_phases", 0),
    ("centroid_method", "median"),
    ("phase_mass", "volume"),
    ("selection_entropy", "renyi"),
    ("format", "csv"),
    ("delta", -0.1),
    ("cv_folds", 1),
    ("centroid_vote_fraction", 0.0),
    ("centroid_vote_fraction", 1.5),
    ("deepconf.window", 0),
    ("deepconf.tail", -3),
    ("bootstrap.samples", 0),
    ("bootstrap.seed", -1),
    ("entropy_k", 0),
    ("seed", -5),
    ("pass_k", (0, 4)),  # Reported as pass_k[0] = 0.
    ("sweep_grid.top_percent", ()),
    ("sweep_grid.bottom_percent", (30.0, 101.0)),  # Reported as sweep_grid.bottom_percent[1].
    ("sweep_grid.consecutive_low", (2, 0)),
    ("input", ""),
    ("output_dir", ""),
    ("output_dir", "gs://bucket/scores"),
    ("labels", "/nonexistent/evaluation_cache.json"),
    ("sweep", "yes"),
    ("x64", 1),
]


def _set(config, key, value):
  """Set a dotted key on a copy, skipping type checks as a hand-edited config file would."""
  config = copy.deepcopy(config)
  *parents, last = key.split(".")
  target = config
  for part in parents:
    target = target[part]
  with config.ignore_type():
    setattr(target, last, value)
  return config


@pytest.mark.parametrize("key,value", INVALID_VALUES, ids=[f"{k}={v!r}" for k, v in INVALID_VALUES])
def test_invalid_value_names_key_and_value(config, key, value):
  broken = _set(config, key, value)
  with pytest.raises(config_checks.ConfigError) as raised:
    config_checks.check_score_traces_config(broken)
  problems = raised.value.problems
  assert len(problems) == 1, problems
  assert problems[0].startswith(key), problems[0]
  if isinstance(value, tuple) and value:
    # A list is reported by its first invalid entry.
    bad = next(i for i, item in enumerate(value) if item in (0, 101.0))
    assert problems[0].startswith(f"{key}[{bad}] = {value[bad]!r} is invalid"), problems[0]
  else:
    assert problems[0].startswith(f"{key} = {value!r} is invalid"), problems[0]
  assert "Set" in problems[0] or "Pass" in problems[0] or "Give" in problems[0], problems[0]


def test_missing_input_path(config, tmp_path):
  broken = _set(config, "input", str(tmp_path / "absent.json"))
  with pytest.raises(config_checks.ConfigError, match="input = .* does not exist"):
    config_checks.check_score_traces_config(broken)


def test_output_dir_containing_input(config, tmp_path):
  broken = _set(config, "output_dir", str(tmp_path))
  with pytest.raises(config_checks.ConfigError, match="output_dir = .* contains the input"):
    config_checks.check_score_traces_config(broken)


def test_output_dir_is_file(config, tmp_path):
  existing = tmp_path / "file.txt"
  existing.write_text("x")
  broken = _set(config, "output_dir", str(existing))
  with pytest.raises(config_checks.ConfigError, match="existing file"):
    config_checks.check_score_traces_config(broken)


def test_several_problems_listed_together(config):
  broken = _set(_set(config, "phases.top_percent", 200.0), "cv_folds", 0)
  with pytest.raises(config_checks.ConfigError) as raised:
    config_checks.check_score_traces_config(broken)
  assert len(raised.value.problems) == 2
  assert "phases.top_percent" in str(raised.value)
  assert "cv_folds" in str(raised.value)


def test_missing_key_reported(config):
  broken = copy.deepcopy(config)
  broken.unlock()
  del broken["deepconf"]
  problems = config_checks.score_traces_problems(broken)
  assert any(problem.startswith("deepconf.window is missing") for problem in problems)
  assert any(problem.startswith("deepconf.tail is missing") for problem in problems)


def test_scoring_check_ignores_command_keys():
  config = score_traces_config.get_config()
  # input and output_dir are empty, but they are not scoring keys.
  config_checks.check_scoring_config(config)
