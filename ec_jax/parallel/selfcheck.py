r"""Check a (multi-process) JAX set-up: a sharded decoder pass must match one device.

Every process builds the same tiny decoder (`tiny_llama`, NumPy weights from --seed) and the same token batch
[rows, seq_len]. It shards the weights on the mesh (`param_shardings`) and assembles the global
batch from its own rows. One jitted computation returns the teacher-forced log-probability of
each token [rows, seq_len - 1] and the logits and top-5 logits at each row's last position. The
results, gathered to every host, must agree with the same computation on one local device.
The run also checks `broadcast_from_primary` and `gather_to_host`.

  python -m ec_jax.parallel.selfcheck --mesh_model=2
  launch/local_multiprocess.sh -n 2 -d 2 ec_jax.parallel.selfcheck --mesh_model=2

Start-up follows `ec_jax.parallel.initialize` (environment variables EC_JAX_*). Process 0
writes the results to --output as JSON. The exit status is 0 when every check passes.
"""

from __future__ import annotations

import json
import pathlib
import time
from collections.abc import Sequence

from absl import app
from absl import flags
from absl import logging
from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np

from ec_jax import parallel
from ec_jax.model import config as config_lib
from ec_jax.model import decoder as decoder_lib
from ec_jax.model import params as params_lib
from ec_jax.model import testing

_MESH_DATA = flags.DEFINE_integer("mesh_data", -1, "Size of the data axis; -1 for all devices.")
_MESH_MODEL = flags.DEFINE_integer("mesh_model", 1, "Size of the model axis.")
_ROWS = flags.DEFINE_integer("rows", 8, "Rows of the global token batch.")
_SEQ_LEN = flags.DEFINE_integer("seq_len", 16, "Tokens per row.")
_SEED = flags.DEFINE_integer("seed", 0, "Seed of the decoder weights and the tokens.")
_TOLERANCE = flags.DEFINE_float(
    "tolerance", 1e-4, "Largest allowed absolute difference from the one-device result.")
_OUTPUT = flags.DEFINE_string("output", None, "JSON file for the results (process 0 writes).")
_REPEAT_SECONDS = flags.DEFINE_float(
    "repeat_seconds", 0.0,
    "After the checks, keep running the sharded computation and gathering its result for this "
    "many seconds (tests use it to observe what happens when a peer process dies).")

TOP_K = 5


def _score_rows(decoder: decoder_lib.Decoder, tokens: jax.Array
                ) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
  """Score tokens [rows, time] with a teacher-forced pass.

  Returns:
    The log-probability of each of tokens[:, 1:] [rows, time - 1], the top-5 logits at the
    last position [rows, 5], their ids [rows, 5], and the last position's logits
    [rows, vocab].
  """
  logits = decoder.forward(tokens)
  log_probs = jax.nn.log_softmax(logits[:, :-1], axis=-1)
  picked = jnp.take_along_axis(log_probs, tokens[:, 1:, None], axis=-1)[..., 0]
  top_values, top_ids = jax.lax.top_k(logits[:, -1], TOP_K)
  return picked, top_values, top_ids, logits[:, -1]


def run_checks() -> dict:
  """Run every check and return the results; raise RuntimeError when one fails."""
  plan = parallel.initialize()
  mesh = parallel.make_mesh(data=_MESH_DATA.value, model=_MESH_MODEL.value)
  logging.info("Self-check on %s, start-up mode %s.", parallel.describe_mesh(mesh), plan.mode)

  config = config_lib.tiny_llama()
  rows, seq_len = _ROWS.value, _SEQ_LEN.value
  data_size = mesh.shape[parallel.DATA_AXIS]
  if rows % data_size:
    raise ValueError(
        f"--rows = {rows} is not a multiple of the data axis size {data_size}; pass a multiple.")

  # NumPy draws the same weights and tokens on every process.
  params = testing.random_params(config, seed=_SEED.value)
  tokens = np.random.default_rng(_SEED.value).integers(
      0, config.vocab_size, size=(rows, seq_len), dtype=np.int32)

  local_device = jax.local_devices()[0]
  one_device = jax.sharding.SingleDeviceSharding(local_device)
  reference_model = params_lib.decoder_from_params(
      config, params, {path: one_device for path in params})
  graphdef, reference_state = nnx.split(reference_model)
  score = jax.jit(lambda state, batch: _score_rows(nnx.merge(graphdef, state), batch))
  reference = jax.device_get(score(reference_state, jax.device_put(tokens, local_device)))

  sharded_model = params_lib.decoder_from_params(
      config, params, parallel.param_shardings(config, mesh))
  sharded_graphdef, sharded_state = nnx.split(sharded_model)
  sharded_score = jax.jit(
      lambda state, batch: _score_rows(nnx.merge(sharded_graphdef, state), batch))
  batch_sharding = parallel.batch_sharding(mesh, 2)
  own_rows = parallel.local_row_slice(batch_sharding, tokens.shape)
  global_tokens = parallel.global_array_from_local(
      tokens[own_rows], batch_sharding, tokens.shape)
  result = sharded_score(sharded_state, global_tokens)
  token_logprob, top_values, top_ids, last_logits = parallel.gather_to_host(result)

  # Top-k ids may swap between near-equal logits, so the check compares the reference logits
  # at the sharded run's ids rather than the ids themselves.
  reference_logprob, reference_top_values, _, reference_logits = reference
  differences = {
      "token_logprob": float(np.max(np.abs(token_logprob - reference_logprob))),
      "last_logits": float(np.max(np.abs(last_logits - reference_logits))),
      "top_values": float(np.max(np.abs(top_values - reference_top_values))),
      "logits_at_top_ids": float(np.max(np.abs(
          np.take_along_axis(reference_logits, top_ids, axis=1) - top_values))),
  }

  process_count = jax.process_count()
  broadcast = parallel.broadcast_from_primary({"process_index": jax.process_index()})
  gathered = parallel.gather_to_host(np.asarray([jax.process_index()], np.int32))

  failures = [f"{name} differs by {value:.3g} > {_TOLERANCE.value:g}"
              for name, value in differences.items() if not value <= _TOLERANCE.value]
  if broadcast["process_index"] != 0:
    failures.append(f"broadcast_from_primary returned {broadcast}, expected process 0's value")
  if gathered.tolist() != list(range(process_count)):
    failures.append(f"gather_to_host returned {gathered.tolist()}, expected "
                    f"{list(range(process_count))}")

  results = {
      "passed": not failures,
      "failures": failures,
      "process_count": process_count,
      "device_count": jax.device_count(),
      "mesh": dict(mesh.shape),
      "startup_mode": plan.mode,
      "max_abs_difference": differences,
      "token_logprob": token_logprob.tolist(),
      "top_values": top_values.tolist(),
      "top_ids": top_ids.tolist(),
  }
  if failures:
    raise RuntimeError("Self-check failed: " + "; ".join(failures))
  logging.info("Self-check passed on process %d of %d: largest differences %s.",
               jax.process_index(), process_count, differences)

  if _OUTPUT.value and parallel.is_primary():
    path = pathlib.Path(_OUTPUT.value)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=1) + "\n")

  if _REPEAT_SECONDS.value > 0:
    logging.info("Repeating the sharded computation for %g s.", _REPEAT_SECONDS.value)
    deadline = time.monotonic() + _REPEAT_SECONDS.value
    repeats = 0
    try:
      while time.monotonic() < deadline:
        parallel.gather_to_host(sharded_score(sharded_state, global_tokens))
        repeats += 1
    except jax.errors.JaxRuntimeError as error:
      logging.error(
          "A collective failed after %d repeats, most likely because another process died: "
          "%s. JAX's coordination service then names the lost process: 'Task <id> heartbeat "
          "timeout' on process 0, or 'the leader task was preempted/died' when process 0 is "
          "lost.", repeats, error)
      raise
    logging.info("Repeated the sharded computation %d times.", repeats)
  return results


def main(argv: Sequence[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  results = run_checks()
  print(json.dumps({key: results[key] for key in
                    ("passed", "process_count", "device_count", "mesh", "max_abs_difference")}),
        flush=True)


if __name__ == "__main__":
  app.run(main)
