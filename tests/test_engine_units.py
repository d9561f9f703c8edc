"""Pieces of the main job's engine: tiny tokenizer, prompt buckets, batches, run folder, resume."""

import json

import numpy as np
import pytest

from ec_jax import traces
from ec_jax.engine import batches
from ec_jax.engine import prompts
from ec_jax.engine import run_folder
from ec_jax.engine import tiny_model
from ec_jax.traces import shards


def test_byte_tokenizer_ids_are_bytes():
  tokenizer = tiny_model.byte_tokenizer()
  text = "Tom has 5 apples, café ☕.\n"
  ids = tokenizer.encode(text)
  assert ids == list(text.encode("utf-8"))
  assert tokenizer.decode(ids) == text


def test_byte_tokenizer_special_tokens_and_stops():
  tokenizer = tiny_model.byte_tokenizer()
  assert tokenizer.vocab_size == 259
  assert tokenizer.token_to_id("<|im_end|>") == 258
  assert tokenizer.stop_ids == (256, 258)
  prompt = tokenizer.encode_prompt([{"role": "user", "content": "hi"}], 8, 64)
  assert prompt[0] == 257
  assert tokenizer.decode(prompt) == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
  assert tokenizer.decode([104, 105, 258], skip_special_tokens=True) == "hi"


def test_tiny_model_config_matches_tokenizer():
  config = tiny_model.tiny_model_config("tiny:qwen2", "bfloat16")
  assert config.vocab_size == tiny_model.byte_tokenizer().vocab_size
  assert config.attention_bias
  assert config.param_dtype == "bfloat16"
  with pytest.raises(ValueError, match="tiny:llama, tiny:qwen2"):
    tiny_model.preset_name("tiny:gpt")


@pytest.mark.parametrize("length,multiple,limit,expected", [
    (1, 64, 1000, 64), (64, 64, 1000, 64), (65, 64, 1000, 128), (65, 64, 100, 100),
    (100, 64, 100, 100)])
def test_bucket_length(length, multiple, limit, expected):
  assert prompts.bucket_length(length, multiple, limit) == expected


def test_bucket_length_rejects_prompt_over_limit():
  with pytest.raises(ValueError, match="exceeds the limit"):
    prompts.bucket_length(101, 64, 100)


def test_pad_left_right_aligns_prompts():
  tokens, lengths = prompts.pad_left([[5, 6], [7, 8, 9]], 4, pad_id=0)
  np.testing.assert_array_equal(tokens, [[0, 0, 5, 6], [0, 7, 8, 9]])
  np.testing.assert_array_equal(lengths, [2, 3])
  with pytest.raises(ValueError, match="Prompt 0 has 5 tokens"):
    prompts.pad_left([[1, 2, 3, 4, 5]], 4)


def test_plan_batches_pads_last_batch():
  plan = batches.plan_batches(5, 2)
  assert [batch.problems for batch in plan] == [(0, 1), (2, 3), (4,)]
  assert plan[2].slot_problems == (4, 4)
  np.testing.assert_array_equal(plan[2].mask, [True, False])
  for i in range(5):
    assert i in plan[batches.batch_of_problem(i, 2)].problems
  assert batches.slot_values(plan[2], ["a", "b", "c", "d", "e"]) == ["e", "e"]


# ---------------------------------------------------------------------------------------------
# Run folder and resume.

CONFIG = {"model": "tiny:llama", "num_samples": 2, "output_dir": "a", "phases": {"max_phases": 8}}


def test_check_output_dir_new_and_same_config(tmp_path):
  assert not run_folder.check_output_dir(tmp_path / "new", CONFIG)
  run_folder.write_config(tmp_path / "run", CONFIG)
  moved = dict(CONFIG, output_dir="b")
  assert run_folder.check_output_dir(tmp_path / "run", moved)


def test_check_output_dir_names_differing_keys(tmp_path):
  run_folder.write_config(tmp_path, CONFIG)
  other = dict(CONFIG, num_samples=4, phases={"max_phases": 16})
  with pytest.raises(run_folder.RunFolderError) as error:
    run_folder.check_output_dir(tmp_path, other)
  message = str(error.value)
  assert "num_samples (existing 2, requested 4)" in message
  assert "phases.max_phases (existing 8, requested 16)" in message
  assert "model" not in message.split("differing keys:")[1]


def test_check_output_dir_rejects_foreign_folder(tmp_path):
  (tmp_path / "notes.txt").write_text("mine")
  with pytest.raises(run_folder.RunFolderError, match="not a best_of_n run folder"):
    run_folder.check_output_dir(tmp_path, CONFIG)


PROBLEM_IDS = ["p0", "p1", "p2"]
PLAN = batches.plan_batches(3, 2)


def _records(batch_problems, num_samples=2):
  return [{"problem_id": PROBLEM_IDS[i], "trajectory_index": n, "text": f"{i}/{n}"}
          for i in batch_problems for n in range(num_samples)]


def _shard(folder, batch_index, records):
  rows = len(records)
  traces.write_shard(folder, batch_index, {
      "problem_id": [r["problem_id"] for r in records],
      "trajectory_index": [r["trajectory_index"] for r in records],
      "lengths": np.ones(rows, np.int32), "token_ids": np.zeros((rows, 1), np.int32)})


def test_resume_keeps_finished_batches_and_drops_partial(tmp_path):
  first, second = _records((0, 1)), _records((2,))
  _shard(tmp_path, 0, first)
  _shard(tmp_path, 1, second)
  with traces.JsonlWriter(tmp_path / run_folder.TRAJECTORIES_FILE) as writer:
    writer.write(first)
    writer.write(second[:1])
  finished_bytes = b"".join(traces.records.encode_json_line(r) for r in first)
  with open(tmp_path / run_folder.TRAJECTORIES_FILE, "ab") as file:
    file.write(b'{"problem_id": "p2", "traj')  # A torn append.

  state = run_folder.resume_state(tmp_path, PLAN, PROBLEM_IDS, 2, greedy=False)

  assert state.finished == frozenset({0})
  assert state.dropped_records == 1
  assert (tmp_path / run_folder.TRAJECTORIES_FILE).read_bytes() == finished_bytes


def test_resume_needs_the_shard(tmp_path):
  records = _records((0, 1))
  with traces.JsonlWriter(tmp_path / run_folder.TRAJECTORIES_FILE) as writer:
    writer.write(records)
  state = run_folder.resume_state(tmp_path, PLAN, PROBLEM_IDS, 2, greedy=False)
  assert state.finished == frozenset()
  assert (tmp_path / run_folder.TRAJECTORIES_FILE).read_bytes() == b""


def test_resume_needs_greedy_records(tmp_path):
  records = _records((0, 1))
  _shard(tmp_path, 0, records)
  with traces.JsonlWriter(tmp_path / run_folder.TRAJECTORIES_FILE) as writer:
    writer.write(records)
  with traces.JsonlWriter(tmp_path / run_folder.GREEDY_FILE) as writer:
    writer.write(_records((0,), num_samples=1))
  state = run_folder.resume_state(tmp_path, PLAN, PROBLEM_IDS, 2, greedy=True)
  assert state.finished == frozenset()
  assert state.dropped_records == 5
  assert not (tmp_path / run_folder.GREEDY_FILE).read_bytes()


def test_resume_rejects_foreign_problem(tmp_path):
  with traces.JsonlWriter(tmp_path / run_folder.TRAJECTORIES_FILE) as writer:
    writer.write([{"problem_id": "other", "trajectory_index": 0}])
  with pytest.raises(run_folder.RunFolderError, match="'other'"):
    run_folder.resume_state(tmp_path, PLAN, PROBLEM_IDS, 2, greedy=False)


def test_resume_ignores_shard_of_other_rows(tmp_path):
  records = _records((0, 1))
  _shard(tmp_path, 0, records[:3])
  with traces.JsonlWriter(tmp_path / run_folder.TRAJECTORIES_FILE) as writer:
    writer.write(records)
  state = run_folder.resume_state(tmp_path, PLAN, PROBLEM_IDS, 2, greedy=False)
  assert state.finished == frozenset()
  assert shards.shard_path(tmp_path, 0).is_file()
  assert [json.loads(line) for line in
          (tmp_path / run_folder.TRAJECTORIES_FILE).read_text().splitlines()] == []
