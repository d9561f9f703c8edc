"""Reports and tasks run without JAX: importing them must not import it."""

import subprocess
import sys

import pytest


@pytest.mark.parametrize("module", ["ec_jax.report.plots", "ec_jax.report.ablation",
                                    "ec_jax.report.accuracy_vs_n", "ec_jax.report.summary",
                                    "ec_jax.scoring.host_selection", "ec_jax.tasks",
                                    "ec_jax.traces"])
def test_module_does_not_import_jax(module):
  code = f"import sys, {module}; print('jax' in sys.modules)"
  result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True)
  assert result.stdout.strip() == "False", f"{module} imports JAX"
