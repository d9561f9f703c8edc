"""Test configuration: several fake CPU devices, set before JAX starts."""

import os

# JAX reads these when its backend starts, so they must be set before the first device use.
os.environ.setdefault("JAX_NUM_CPU_DEVICES", "8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import pathlib  # noqa: E402

import pytest  # noqa: E402

DATA_DIR = pathlib.Path(__file__).parent / "data"


@pytest.fixture
def data_dir() -> pathlib.Path:
  """Folder of the real data files the tests read (copied into the repository)."""
  return DATA_DIR
