"""Test configuration: several fake CPU devices, set before JAX starts."""

import os

# JAX reads these when its backend starts, so they must be set before the first device use.
os.environ.setdefault("JAX_NUM_CPU_DEVICES", "8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import pathlib  # noqa: E402

import hypothesis  # noqa: E402
import pytest  # noqa: E402

# `ci` replays the same examples on every run, so a CI result depends only on the code. The
# default profile draws new examples each run and keeps finding new cases locally.
hypothesis.settings.register_profile("ci", derandomize=True, database=None)
hypothesis.settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))

DATA_DIR = pathlib.Path(__file__).parent / "data"


@pytest.fixture
def data_dir() -> pathlib.Path:
  """Folder of the real data files the tests read (copied into the repository)."""
  return DATA_DIR
