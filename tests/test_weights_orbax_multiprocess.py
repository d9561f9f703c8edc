"""Restoring an Orbax folder in 2 JAX processes x 2 CPU devices, on a mesh of model = 4.

The test process saves a tiny random decoder. Each worker process restores it with
`orbax_io.restore_decoder` onto `param_shardings` of a (data = 1, model = 4) mesh, so the
`model` axis spans both processes. Every process then checks that it holds only the shards of
its own 2 devices, that those shards equal the matching slices of the saved arrays, and that
the gathered arrays equal the saved ones. Each process runs in its own session, and every
process started here is killed in a `finally` block.
"""

import json
import os
import pathlib
import signal
import socket
import subprocess
import sys

import pytest

from ec_jax.model import config as config_lib
from ec_jax.model.testing import random_params
from ec_jax.weights import orbax_io

pytestmark = pytest.mark.multiprocess

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent
SEED = 51
TIMEOUT_S = 180

WORKER = '''\
"""Restore the saved decoder on a model = 4 mesh and check this process's shards."""
import json
import sys

import jax
import numpy as np
from flax import nnx

from ec_jax import parallel
from ec_jax.model import config as config_lib
from ec_jax.model import params as params_lib
from ec_jax.model.testing import random_params
from ec_jax.weights import orbax_io

folder, seed, output = sys.argv[1], int(sys.argv[2]), sys.argv[3]
parallel.initialize()
config = config_lib.tiny_llama()
expected = random_params(config, seed=seed)
mesh = parallel.make_mesh(data=1, model=4)
shardings = parallel.param_shardings(config, mesh)
decoder = orbax_io.restore_decoder(folder, shardings=shardings)
restored = params_lib.flatten_params(nnx.split(decoder)[1])
local_devices = set(jax.local_devices())
gathered = parallel.gather_to_host(restored)

report = {"process_index": jax.process_index(), "params": {}}
for path, array in restored.items():
  name = "/".join(str(part) for part in path)
  assert array.sharding == shardings[path], (name, array.sharding)
  devices = [shard.device for shard in array.addressable_shards]
  assert set(devices) == local_devices, (name, devices)
  for shard in array.addressable_shards:
    np.testing.assert_array_equal(np.asarray(shard.data), expected[path][shard.index],
                                  err_msg=name)
  np.testing.assert_array_equal(gathered[path], expected[path], err_msg=name)
  distinct = {str(shard.index): shard.data.nbytes for shard in array.addressable_shards}
  report["params"][name] = {"sharded": "model" in array.sharding.spec,
                            "local_bytes": sum(distinct.values()),
                            "total_bytes": expected[path].nbytes}
with open(output, "w") as file:
  json.dump(report, file)
print("worker finished", flush=True)
'''


def _free_port() -> int:
  with socket.socket() as probe:
    probe.bind(("127.0.0.1", 0))
    return probe.getsockname()[1]


def _environ(port: int, index: int) -> dict[str, str]:
  environ = {name: value for name, value in os.environ.items()
             if not name.startswith(("EC_JAX_", "SLURM_"))}
  environ.update(JAX_PLATFORMS="cpu", JAX_NUM_CPU_DEVICES="2", PYTHONUNBUFFERED="1",
                 PYTHONPATH=os.pathsep.join(filter(None, [str(REPO_ROOT),
                                                          environ.get("PYTHONPATH")])),
                 EC_JAX_COORDINATOR=f"127.0.0.1:{port}", EC_JAX_NUM_PROCESSES="2",
                 EC_JAX_PROCESS_ID=str(index), EC_JAX_HEARTBEAT_TIMEOUT_S="10",
                 EC_JAX_INIT_TIMEOUT_S="60", EC_JAX_SHUTDOWN_TIMEOUT_S="30")
  return environ


def test_restore_reads_own_shards(tmp_path):
  config = config_lib.tiny_llama()
  folder = orbax_io.save_params(tmp_path / "saved", config, random_params(config, seed=SEED))
  worker = tmp_path / "restore_worker.py"
  worker.write_text(WORKER)

  port = _free_port()
  processes, logs, reports = [], [], []
  try:
    for index in range(2):
      log = tmp_path / f"process_{index}.log"
      report = tmp_path / f"report_{index}.json"
      with log.open("w") as stream:
        processes.append(subprocess.Popen(
            [sys.executable, str(worker), str(folder), str(SEED), str(report)],
            cwd=REPO_ROOT, env=_environ(port, index), stdout=stream, stderr=subprocess.STDOUT,
            start_new_session=True))
      logs.append(log)
      reports.append(report)
    statuses = []
    for index, process in enumerate(processes):
      try:
        statuses.append(process.wait(timeout=TIMEOUT_S))
      except subprocess.TimeoutExpired:
        pytest.fail(f"process {index} still runs after {TIMEOUT_S} s:\n"
                    f"{logs[index].read_text(errors='replace')[-3000:]}")
  finally:
    for process in processes:
      if process.poll() is None:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=30)

  tails = "\n".join(log.read_text(errors="replace")[-3000:] for log in logs)
  assert statuses == [0, 0], tails
  for index, report_path in enumerate(reports):
    report = json.loads(report_path.read_text())
    assert report["process_index"] == index
    params = report["params"]
    assert len(params) == len(random_params(config, seed=SEED))
    sharded = {name for name, entry in params.items() if entry["sharded"]}
    # Embedding, attention and MLP matrices are split over `model`; only the norms are not.
    assert sharded == {name for name in params if not name.endswith("scale")}
    for name, entry in params.items():
      if entry["sharded"]:
        # 2 of the 4 shards of each sharded tensor live on this process's devices.
        assert entry["local_bytes"] * 2 == entry["total_bytes"], (name, entry)
      else:
        assert entry["local_bytes"] == entry["total_bytes"], (name, entry)
