"""The main job end to end on a tiny random model: files, records, shards, summary, resume."""

import json
import pathlib

import numpy as np
import pytest

from configs import best_of_n
from ec_jax import parallel
from ec_jax import tasks
from ec_jax import traces
from ec_jax.engine import batch_sampling
from ec_jax.engine import model_loading
from ec_jax.engine import prompts as prompts_lib
from ec_jax.engine import run as run_lib
from ec_jax.engine import run_folder
from ec_jax.engine import tiny_model
from ec_jax.scoring import selection
from ec_jax.text import chat_template
from ec_jax.traces import shards

NUM_SAMPLES = 4
NUM_PROBLEMS = 3
RECORD_KEYS = ("problem_id", "trajectory_index", "token_ids", "text", "num_tokens",
               "finish_reason", "answer", "correct", "centroid", "num_phases", "phases",
               "weighted_average_center", "weighted_average", "moment", "raw_entropy",
               "mean_entropy", "self_certainty", "deepconf_tail", "deepconf_mean",
               "deepconf_lowest_window", "deepconf_bottom10")
SHARD_KEYS = ("problem_id", "trajectory_index", "lengths", "token_ids", "logprob",
              "entropy_topk", "entropy_full", "entropy_sampling", "confidence",
              "self_certainty", "phase_id")
METHODS = ("pass@1", "pass@2", "pass@n", "random", "lowest_centroid", "lowest_centroid_delta",
           "lowest_centroid_delta_cv", "lowest_centroid_delta_oracle", "majority_vote",
           "centroid_vote", "lowest_mean_entropy", "self_certainty", "deepconf_tail",
           "deepconf_mean", "deepconf_lowest_window", "deepconf_bottom10", "greedy")


def tiny_config(output_dir, **overrides):
  config = best_of_n.get_config("tiny")
  config.output_dir = str(output_dir)
  config.num_problems = NUM_PROBLEMS
  config.num_samples = NUM_SAMPLES
  config.max_new_tokens = 12
  config.greedy = True
  # One prompt bucket for every problem, so the sampler compiles once.
  config.prompt_bucket = 512
  for key, value in overrides.items():
    config[key] = value
  return config


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
  folder = tmp_path_factory.mktemp("run") / "tiny"
  config = tiny_config(folder)
  result = run_lib.run(config)
  return config, folder, result


def read_lines(path):
  return [json.loads(line) for line in pathlib.Path(path).read_text("utf-8").splitlines()]


def test_run_writes_every_file(finished_run):
  _, folder, result = finished_run
  assert result.output_dir == folder
  for name in ("config.json", "trajectories.jsonl", "greedy.jsonl", "selected.jsonl",
               "summary.json", "arrays/batch_0.npz", "arrays/batch_1.npz"):
    assert (folder / name).is_file(), name
  for name in ("centroid_distributions.png", "accuracy_vs_n.png", "token_entropy.png"):
    assert (folder / "plots" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name


def test_trajectory_records(finished_run):
  _, folder, _ = finished_run
  records = read_lines(folder / "trajectories.jsonl")
  tokenizer = tiny_model.byte_tokenizer()
  problem_ids = [p.problem_id for p in tasks.get_task("gsm8k").load(NUM_PROBLEMS)]
  expected_keys = [(p, n) for p in problem_ids for n in range(NUM_SAMPLES)]
  assert [(r["problem_id"], r["trajectory_index"]) for r in records] == expected_keys
  for record in records:
    for key in RECORD_KEYS:
      assert key in record, key
    assert record["num_tokens"] == len(record["token_ids"]) >= 1
    assert record["text"] == tokenizer.decode(record["token_ids"], skip_special_tokens=True)
    ends_on_stop = record["token_ids"][-1] in tokenizer.stop_ids
    assert record["finish_reason"] == ("stop" if ends_on_stop else "length")
    if record["finish_reason"] == "length":
      assert record["num_tokens"] == 12
    assert isinstance(record["correct"], bool)
    assert len(record["phases"]) == record["num_phases"]
    if record["num_phases"]:
      assert 0 <= record["centroid"] <= 1
      assert record["centroid"] == record["weighted_average_center"]
    else:
      assert record["centroid"] is None


def test_answers_are_task_extractions(finished_run):
  _, folder, _ = finished_run
  task = tasks.get_task("gsm8k")
  problems = {p.problem_id: p for p in task.load(NUM_PROBLEMS)}
  for record in read_lines(folder / "trajectories.jsonl"):
    problem = problems[record["problem_id"]]
    assert record["answer"] == task.extract(record["text"], problem)


def test_shards_match_records(finished_run):
  _, folder, _ = finished_run
  records = read_lines(folder / "trajectories.jsonl")
  rows = []
  for batch in (0, 1):
    arrays = shards.read_shard(shards.shard_path(folder, batch))
    assert tuple(arrays) == SHARD_KEYS
    for row in range(arrays["problem_id"].shape[0]):
      rows.append({key: values[row] for key, values in arrays.items()})
  assert len(rows) == len(records)
  for row, record in zip(rows, records):
    assert (str(row["problem_id"]), int(row["trajectory_index"])) == (
        record["problem_id"], record["trajectory_index"])
    length = int(row["lengths"])
    assert length == record["num_tokens"]
    assert row["token_ids"][:length].tolist() == record["token_ids"]
    in_phase = int(np.sum(row["phase_id"][:length] >= 0))
    assert in_phase == sum(duration for _, duration in record["phases"])
    assert np.all(np.isfinite(row["entropy_topk"][:length]))
    assert np.all(row["entropy_topk"][:length] <= np.log(10) + 1e-5)


def test_greedy_records_are_separate(finished_run):
  _, folder, _ = finished_run
  greedy = read_lines(folder / "greedy.jsonl")
  assert len(greedy) == NUM_PROBLEMS
  assert all(record["trajectory_index"] == 0 for record in greedy)
  sampled = read_lines(folder / "trajectories.jsonl")
  assert len(sampled) == NUM_PROBLEMS * NUM_SAMPLES


def test_summary_reports_every_method(finished_run):
  _, folder, result = finished_run
  summary = json.loads((folder / "summary.json").read_text())
  assert summary == json.loads(json.dumps(result.summary))
  assert tuple(summary["methods"]) == METHODS
  for name, entry in summary["methods"].items():
    assert set(entry) >= {"accuracy", "interval", "correct", "total", "unanswered",
                          "unlabelled"}, name
    assert entry["total"] == NUM_PROBLEMS
  difference = summary["paired_difference"]
  assert (difference["method"], difference["baseline"]) == ("lowest_centroid", "pass@1")
  counts = summary["counts"]
  assert counts["trajectories"] == NUM_PROBLEMS * NUM_SAMPLES
  assert counts["stopped_trajectories"] + counts["length_cutoff_trajectories"] == 12
  assert counts["nucleus_overflow_trajectories"] >= 0
  assert set(summary["accuracy_vs_n"]["lowest_centroid"]) == {"1", "2", "3", "4"}
  for key in ("tokens_per_second", "sampling_seconds", "total_seconds"):
    assert key in summary["timing"]
    assert key not in json.dumps({k: v for k, v in summary.items() if k != "timing"})


def test_selected_follows_the_centroids(finished_run):
  _, folder, _ = finished_run
  records = read_lines(folder / "trajectories.jsonl")
  selected = read_lines(folder / "selected.jsonl")
  methods = [name for name in METHODS if not name.startswith("pass@") and name != "greedy"]
  assert len(selected) == NUM_PROBLEMS * len(methods)
  by_problem = {}
  for record in records:
    by_problem.setdefault(record["problem_id"], []).append(record)
  for choice in selected:
    if choice["method"] != "lowest_centroid":
      continue
    candidates = by_problem[choice["problem_id"]]
    numerators = [r["center_numerator"] for r in candidates]
    denominators = [r["center_denominator"] for r in candidates]
    centroids = np.array([np.nan if r["centroid"] is None else r["centroid"]
                          for r in candidates])
    expected = selection.select_lowest_host(
        centroids[None], np.ones((1, NUM_SAMPLES), bool),
        (np.array([numerators]), np.array([denominators])))[0]
    assert choice["trajectory_index"] == (None if expected < 0 else int(expected))


def test_in_graph_selections_match_records(finished_run):
  config, folder, _ = finished_run
  mesh = parallel.mesh_from_config(config)
  tokenizer = model_loading.load_tokenizer(config.model)
  model = model_loading.load_model(config.model, config.dtype, mesh, tokenizer)
  setup = batch_sampling.sampler_setup(config, mesh, model)
  task = tasks.get_task("gsm8k")
  problems = task.load(2)
  prompt_ids = prompts_lib.encode_prompts(task, problems, tokenizer, config.max_new_tokens,
                                          model.context_length)
  tokens, lengths = prompts_lib.pad_left(prompt_ids, config.prompt_bucket)
  uids = np.array([p.problem_uid for p in problems], np.int32)
  output = batch_sampling.BatchSampler(model, setup).sample(tokens, lengths, uids)
  records = read_lines(folder / "trajectories.jsonl")[:2 * NUM_SAMPLES]
  assert [r["token_ids"] for r in records] == [
      output.tokens[row, :output.lengths[row]].tolist() for row in range(2 * NUM_SAMPLES)]
  selected = {(c["problem_id"], c["method"]): c["trajectory_index"]
              for c in read_lines(folder / "selected.jsonl")}
  for method in ("lowest_centroid", "lowest_mean_entropy", "self_certainty", "deepconf_tail",
                 "deepconf_lowest_window", "lowest_centroid_delta"):
    for index, problem in enumerate(problems):
      in_graph = int(output.selections[method][index])
      assert selected[(problem.problem_id, method)] == (None if in_graph < 0 else in_graph), (
          method, problem.problem_id)


def test_rerun_changes_only_timing(finished_run):
  config, folder, _ = finished_run
  before = {path: path.read_bytes() for path in folder.rglob("*") if path.is_file()}
  summary_before = json.loads((folder / "summary.json").read_text())
  run_lib.run(config)
  after = {path: path.read_bytes() for path in folder.rglob("*") if path.is_file()}
  assert set(after) == set(before)
  for path, data in before.items():
    if path.name != "summary.json":
      assert after[path] == data, path
  summary_after = json.loads((folder / "summary.json").read_text())
  assert "batches_sampled" not in summary_after["timing"]
  summary_before.pop("timing")
  summary_after.pop("timing")
  assert summary_after == summary_before


def test_other_config_in_same_folder_is_rejected(finished_run):
  config, folder, _ = finished_run
  other = tiny_config(folder, num_samples=2, seed=3)
  with pytest.raises(run_folder.RunFolderError) as error:
    run_lib.run(other)
  assert "num_samples (existing 4, requested 2)" in str(error.value)
  assert "seed (existing 0, requested 3)" in str(error.value)


def test_prompt_too_long_stops_before_sampling(tmp_path):
  config = tiny_config(tmp_path / "long", max_new_tokens=1900)
  with pytest.raises(chat_template.PromptTooLongError, match="Problem '0'"):
    run_lib.run(config)
  assert not (tmp_path / "long" / "trajectories.jsonl").exists()
