"""Trace scoring of each input kind, labels, malformed files and the results-folder rule.

These call `trace_scoring.run` in-process; tests/test_score_traces.py runs the command itself.
"""

import json
import math
import os
import pathlib
import shutil

import numpy as np
import pytest
from scipy import special

import scoring_oracle
from configs import score_traces as score_traces_config
from ec_jax import traces
from ec_jax.scoring import results_folder
from ec_jax.scoring import trace_scoring

K = 10
VOCAB = 32
WINDOW = 8
TAIL = 5
RTOL = 1e-12
DATA_DIR = pathlib.Path(__file__).parent / "data"


def make_config(trace, output_dir, **overrides):
  """The default config for `trace`, with dotted-key overrides such as phases__max_phases=2."""
  config = score_traces_config.get_config()
  config.input = str(trace)
  config.output_dir = str(output_dir)
  config.bootstrap.samples = 200
  for key, value in overrides.items():
    *parents, last = key.split("__")
    target = config
    for part in parents:
      target = target[part]
    setattr(target, last, value)
  return config


def read_jsonl(path):
  with open(path, encoding="utf-8") as file:
    return [json.loads(line) for line in file]


def assert_close(got, expected, label, rtol=RTOL):
  if expected is None:
    assert got is None, f"{label}: expected null, got {got!r}"
  else:
    assert got is not None, f"{label}: expected {expected!r}, got null"
    assert math.isclose(got, expected, rel_tol=rtol, abs_tol=1e-15), f"{label}: {got!r} != {expected!r}"


def deepconf_reference(confidence):
  """DeepConf scores of the valid confidences, in plain numpy."""
  values = np.asarray(confidence, dtype=np.float64)
  size = min(WINDOW, values.size)
  windows = np.array([values[i:i + size].mean() for i in range(values.size - size + 1)])
  lowest = np.sort(windows)[:max(1, math.ceil(windows.size / 10))]
  return {"deepconf_tail": values[-TAIL:].mean(), "deepconf_mean": values.mean(),
          "deepconf_lowest_window": windows.min(), "deepconf_bottom10": lowest.mean()}


def assert_oracle_scores(record, entropies, label):
  """Compare a centroids.jsonl record with the plain-Python oracle at 1 / 80 / 2."""
  oracle = scoring_oracle.score(entropies, 1, 80, 2)
  assert record["phases"] == oracle["phases"], label
  assert record["num_phases"] == len(oracle["phases"]), label
  for key in ("high_threshold", "low_threshold", "weighted_average_center", "weighted_average",
              "moment", "raw_entropy"):
    assert_close(record[key], oracle[key], f"{label} {key}")
  assert record["centroid"] == record["weighted_average_center"], label


# ---------------------------------------------------------------------------------------------
# vLLM-style traces.

VLLM_ANSWERS = {"q0": ["7", " 7 ", "8", None], "q1": ["1", "2", "2", "1"],
                "q2": ["5", "5", "5", "5"]}
VLLM_TRUTH = {"q0": "7", "q1": "2", "q2": "5"}


def write_vllm_traces(path, seed):
  """Write 3 problems x 4 trajectories of log-softmax'd random logits; return the expectations.

  Positions t with t % 29 == 7 have no log-probabilities. q2's last trajectory has no label.
  """
  rng = np.random.default_rng(seed)
  expected = {}
  with open(path, "w", encoding="utf-8") as file:
    for problem, answers in VLLM_ANSWERS.items():
      for index, answer in enumerate(answers):
        length = int(rng.integers(40, 120))
        logits = rng.normal(size=(length, VOCAB)) * 2.0
        logprobs = logits - special.logsumexp(logits, axis=1, keepdims=True)
        entries, token_ids, entropies, confidence = [], [], [], []
        for t in range(length):
          probs = np.exp(logprobs[t])
          token = int(rng.choice(VOCAB, p=probs / probs.sum()))
          token_ids.append(token)
          if t % 29 == 7:
            entries.append(None)
            entropies.append(None)
            continue
          top = [int(i) for i in np.argsort(-logprobs[t], kind="stable")[:K]]
          ids = top + ([token] if token not in top else [])
          entries.append({str(i): float(logprobs[t, i]) for i in ids})
          log_q = logprobs[t, top] - special.logsumexp(logprobs[t, top])
          entropies.append(float(-(np.exp(log_q) * log_q).sum()))
          confidence.append(float(-log_q.mean()))
        record = {"problem_id": problem, "trajectory_index": index, "token_ids": token_ids,
                  "logprobs": entries, "answer": answer}
        if not (problem == "q2" and index == 3):
          record["correct"] = answer is not None and answer.strip() == VLLM_TRUTH[problem]
        file.write(json.dumps(record) + "\n")
        expected[(problem, index)] = (entropies, confidence, record.get("correct"))
  return expected


def test_vllm_traces(tmp_path):
  trace = tmp_path / "samples.jsonl"
  expected = write_vllm_traces(trace, seed=0)
  out = tmp_path / "out"
  result = trace_scoring.run(make_config(trace, out, deepconf__window=WINDOW,
                                         deepconf__tail=TAIL))
  records = read_jsonl(out / trace_scoring.CENTROIDS_FILE)
  assert len(records) == 12
  for record in records:
    key = (record["problem_id"], record["trajectory_index"])
    label = f"{key[0]}/{key[1]}"
    entropies, confidence, correct = expected[key]
    assert record["num_tokens"] == len(entropies), label
    assert record["num_invalid"] == sum(h is None for h in entropies), label
    assert_oracle_scores(record, entropies, label)
    assert_close(record["mean_entropy"], float(np.mean([h for h in entropies if h is not None])),
                 f"{label} mean_entropy")
    for name, value in deepconf_reference(confidence).items():
      assert_close(record[name], float(value), f"{label} {name}", rtol=1e-10)
    assert record["self_certainty"] is None, label
    assert record["correct"] == correct, label

  summary = result.summary
  assert summary["input"]["format"] == "vllm"
  assert "top-10" in summary["scoring"]["entropy_source"]
  methods = summary["methods"]
  # q2 has an unlabelled trajectory, so only q0 and q1 count.
  assert methods["pass@1"]["total"] == 2
  assert methods["pass@1"]["unlabelled"] == 1
  assert methods["pass@1"]["accuracy"] == 0.5
  assert "unavailable" in methods["self_certainty"]
  assert "accuracy" in methods["deepconf_tail"]
  assert summary["labels"]["file"] is None
  assert summary["labels"]["labelled_trajectories"] == 11

  # Answers are compared after whitespace normalisation: " 7 " votes with "7".
  selected = read_jsonl(out / trace_scoring.SELECTED_FILE)
  votes = {r["problem_id"]: r for r in selected if r["method"] == "majority_vote"}
  assert votes["q0"]["trajectory_index"] == 0
  assert votes["q0"]["answer"] == "7"
  assert votes["q0"]["correct"] is True
  # A 2-2 tie goes to the answer seen first.
  assert votes["q1"]["answer"] == "1"
  assert votes["q1"]["correct"] is False
  assert methods["majority_vote"]["correct"] == 1


def test_vllm_full_entropy_unavailable(tmp_path):
  trace = tmp_path / "samples.jsonl"
  write_vllm_traces(trace, seed=1)
  with pytest.raises(trace_scoring.TraceScoringError, match="selection_entropy='full'"):
    trace_scoring.run(make_config(trace, tmp_path / "out", selection_entropy="full"))
  assert not (tmp_path / "out").exists()


def test_vllm_too_few_logprobs(tmp_path):
  trace = tmp_path / "samples.jsonl"
  write_vllm_traces(trace, seed=2)
  with pytest.raises(traces.TraceFormatError) as raised:
    trace_scoring.run(make_config(trace, tmp_path / "out", entropy_k=12))
  assert str(trace) in str(raised.value)
  assert raised.value.position is not None
  assert not (tmp_path / "out").exists()


# ---------------------------------------------------------------------------------------------
# ec_jax run folders.


def write_run_folder(folder, seed):
  """Write an ec_jax run: 2 problems x 3 trajectories, all per-token arrays; return them."""
  rng = np.random.default_rng(seed)
  lengths = np.array([60, 0, 45, 30, 75, 52], np.int32)
  rows, time = lengths.size, 80
  inside = np.arange(time)[None, :] < lengths[:, None]
  arrays = {
      "problem_id": np.array(["a", "a", "a", "b", "b", "b"]),
      "trajectory_index": np.array([0, 1, 2, 0, 1, 2]),
      "lengths": lengths,
      "token_ids": rng.integers(0, 100, (rows, time)),
  }
  for name in ("entropy_topk", "entropy_full", "entropy_sampling", "confidence",
               "self_certainty"):
    arrays[name] = np.where(inside, rng.exponential(0.6, (rows, time)), 0.0)
  traces.write_shard(folder, 0, arrays)
  with traces.JsonlWriter(folder / "trajectories.jsonl") as writer:
    writer.write({"problem_id": str(p), "trajectory_index": int(j), "num_tokens": int(n),
                  "text": "", "answer": str(j % 2), "correct": bool(j % 2 == 0)}
                 for p, j, n in zip(arrays["problem_id"], arrays["trajectory_index"], lengths))
  return arrays


def test_run_folder_uses_all_series(tmp_path):
  run = tmp_path / "run"
  arrays = write_run_folder(run, seed=3)
  out = tmp_path / "out"
  result = trace_scoring.run(make_config(run, out, selection_entropy="full",
                                         deepconf__window=WINDOW, deepconf__tail=TAIL))
  records = read_jsonl(out / trace_scoring.CENTROIDS_FILE)
  for row, record in enumerate(records):
    length = int(arrays["lengths"][row])
    label = f"{record['problem_id']}/{record['trajectory_index']}"
    assert record["num_tokens"] == length
    if length == 0:
      assert record["centroid"] is None
      assert record["self_certainty"] is None
      continue
    assert_oracle_scores(record, arrays["entropy_full"][row, :length].tolist(), label)
    assert_close(record["mean_entropy"], float(arrays["entropy_full"][row, :length].mean()),
                 label)
    for kind in ("topk", "full", "sampling"):
      values = arrays[f"entropy_{kind}"][row, :length]
      assert_close(record[f"mean_entropy_{kind}"], float(values.mean()), f"{label} {kind}")
    assert_close(record["self_certainty"], float(arrays["self_certainty"][row, :length].mean()),
                 label)
    for name, value in deepconf_reference(arrays["confidence"][row, :length]).items():
      assert_close(record[name], float(value), f"{label} {name}", rtol=1e-10)

  methods = result.summary["methods"]
  for name in ("self_certainty", "lowest_mean_entropy_full", "lowest_mean_entropy_sampling"):
    assert "accuracy" in methods[name], name
  assert methods["lowest_centroid"]["total"] == 2
  assert result.summary["input"]["format"] == "ec_jax"
  assert "entropy_full" in result.summary["scoring"]["entropy_source"]


# ---------------------------------------------------------------------------------------------
# Labels from an evaluation cache beside the traces, and the results-folder rule.

CORRECT = {"sample_00000": [True, False, True, False], "sample_00001": [True, True, None, False],
           "sample_00002": [False, False, False, True]}


@pytest.fixture(scope="module")
def labelled_run(tmp_path_factory):
  """A reference file with an evaluation cache that lacks one trajectory and has one extra."""
  folder = tmp_path_factory.mktemp("labelled")
  trace = folder / "entropy_results.json"
  shutil.copy(DATA_DIR / "reference_traces_small.json", trace)
  entries = {"sample_00009_traj_0": {"is_correct": True, "extracted_answer": "x"}}
  for problem, labels in CORRECT.items():
    for index, label in enumerate(labels):
      if label is not None:
        entries[f"{problem}_traj_{index}"] = {
            "is_correct": label, "extracted_answer": "right" if label else f"wrong{index % 2}",
            "original_id": problem}
  (folder / "evaluation_cache.json").write_text(
      json.dumps({"version": 2, "trajectories": entries}))
  out = folder / "out"
  config = make_config(trace, out, phases__max_phases=2)
  result = trace_scoring.run(config)
  return config, out, result.summary


def test_labels_counted(labelled_run, data_dir):
  config, out, summary = labelled_run
  labels = summary["labels"]
  assert labels["file"] == os.path.join(os.path.dirname(config.input), "evaluation_cache.json")
  assert labels["labelled_trajectories"] == 11
  assert labels["unlabelled_trajectories"] == 1
  assert labels["unused_entries"] == 1
  assert labels["unlabelled_problems"] == 1
  assert labels["unlabelled_examples"] == ["sample_00001_traj_2"]

  methods = summary["methods"]
  assert methods["pass@1"]["total"] == 2
  assert methods["pass@1"]["unlabelled"] == 1
  assert methods["pass@1"]["accuracy"] == pytest.approx((2 / 4 + 1 / 4) / 2)

  records = read_jsonl(out / trace_scoring.CENTROIDS_FILE)
  expected = {(r["problem_id"], r["trajectory_index"]): r
              for r in read_jsonl(data_dir / "reference_traces_small.expected.jsonl")}
  picks = {}
  for problem in CORRECT:
    rows = [r for r in records if r["problem_id"] == problem and r["centroid"] is not None]
    picks[problem] = min(rows, key=lambda r: (r["centroid"], r["trajectory_index"]))
  hits = [CORRECT[p][picks[p]["trajectory_index"]] for p in ("sample_00000", "sample_00002")]
  assert methods["lowest_centroid"]["correct"] == sum(hits)
  assert methods["lowest_centroid"]["accuracy"] == sum(hits) / 2
  difference = summary["paired_difference"]
  assert difference["problems"] == 2
  assert difference["difference"] == pytest.approx(sum(hits) / 2 - 0.375)
  assert len(difference["interval"]) == 2

  selected = read_jsonl(out / trace_scoring.SELECTED_FILE)
  for record in selected:
    if record["method"] != "lowest_centroid":
      continue
    pick = picks[record["problem_id"]]
    assert record["trajectory_index"] == pick["trajectory_index"]
    assert record["correct"] == CORRECT[record["problem_id"]][pick["trajectory_index"]]
    assert record["answer"] == pick["answer"]
  assert "accuracy" in methods["majority_vote"]
  assert "accuracy" in methods["centroid_vote"]

  # Phases are capped at max_phases = 2, while counts and centroids stay exact.
  for record in records:
    key = (record["problem_id"], record["trajectory_index"])
    assert record["phases"] == expected[key]["phases"][:2]
    assert record["num_phases"] == len(expected[key]["phases"])
    assert_close(record["centroid"], expected[key]["weighted_average_center"], str(key))
  over = sum(len(row["phases"]) > 2 for row in expected.values())
  assert summary["counts"]["trajectories_over_max_phases"] == over


def test_other_config_rejected(labelled_run):
  config, out, _ = labelled_run
  before = {name: (out / name).read_bytes() for name in trace_scoring.OUTPUT_FILES}
  other = make_config(config.input, out, phases__max_phases=2, phases__top_percent=5.0, delta=0.2)
  with pytest.raises(results_folder.OutputFolderError) as raised:
    trace_scoring.run(other)
  message = str(raised.value)
  assert "phases.top_percent (existing 1.0, requested 5.0)" in message
  assert "delta (existing 0.1, requested 0.2)" in message
  assert "max_phases" not in message
  assert {name: (out / name).read_bytes() for name in trace_scoring.OUTPUT_FILES} == before


def test_same_config_replaces(labelled_run):
  config, out, summary = labelled_run
  (out / trace_scoring.CENTROIDS_FILE).write_text("stale\n")
  again = trace_scoring.run(make_config(config.input, out, phases__max_phases=2))
  assert sorted(os.listdir(out)) == sorted(trace_scoring.OUTPUT_FILES)
  assert (out / trace_scoring.CENTROIDS_FILE).read_text().startswith('{"problem_id"')
  first = dict(summary)
  second = dict(again.summary)
  del first["timing"], second["timing"]
  assert first == second
  hidden = [name for name in os.listdir(out.parent) if name.startswith(".")]
  assert hidden == []


def test_foreign_folder_rejected(data_dir, tmp_path):
  out = tmp_path / "out"
  out.mkdir()
  (out / "notes.txt").write_text("mine")
  with pytest.raises(results_folder.OutputFolderError, match="not a results folder"):
    trace_scoring.run(make_config(data_dir / "reference_traces_small.json", out))
  assert os.listdir(out) == ["notes.txt"]


def test_config_differences_lists_keys():
  assert results_folder.config_differences({"a": {"b": 1}, "output_dir": "x"},
                                           {"a": {"b": 1}, "output_dir": "y"}) == []
  assert results_folder.config_differences({"a": {"b": 1}}, {"a": {"b": 2}, "c": 3}) == [
      "a.b (existing 1, requested 2)", "c (existing '<absent>', requested 3)"]


# ---------------------------------------------------------------------------------------------
# Malformed input leaves nothing behind.


def assert_nothing_written(tmp_path, out):
  assert not out.exists()
  assert [name for name in os.listdir(tmp_path) if name.startswith(".")] == []


def test_json_syntax_error(data_dir, tmp_path):
  trace = tmp_path / "entropy_results.json"
  trace.write_bytes((data_dir / "reference_traces_small.json").read_bytes()[:50_000])
  out = tmp_path / "out"
  with pytest.raises(traces.TraceFormatError) as raised:
    trace_scoring.run(make_config(trace, out))
  assert str(trace) in str(raised.value)
  assert_nothing_written(tmp_path, out)


def test_duplicate_trajectory(tmp_path):
  record = {"original_id": "p", "trajectory_index": 0, "entropy_sequence": [{"entropy": 1.0}]}
  trace = tmp_path / "entropy_results.json"
  trace.write_text(json.dumps([record, record]))
  out = tmp_path / "out"
  with pytest.raises(traces.TraceFormatError, match="appears twice"):
    trace_scoring.run(make_config(trace, out))
  assert_nothing_written(tmp_path, out)


def test_malformed_labels_file(data_dir, tmp_path):
  labels = tmp_path / "labels.json"
  labels.write_text(json.dumps({"trajectories": {"sample_00000_traj_0": {"is_correct": "yes"}}}))
  out = tmp_path / "out"
  with pytest.raises(traces.TraceFormatError) as raised:
    trace_scoring.run(make_config(data_dir / "reference_traces_small.json", out,
                                  labels=str(labels)))
  assert str(labels) in str(raised.value)
  assert "is_correct" in str(raised.value)
  assert_nothing_written(tmp_path, out)


def test_format_mismatch(data_dir, tmp_path):
  out = tmp_path / "out"
  with pytest.raises(traces.TraceFormatError, match="format='vllm'"):
    trace_scoring.run(make_config(data_dir / "reference_traces_small.json", out, format="vllm"))
  assert_nothing_written(tmp_path, out)


def test_unknown_format(tmp_path):
  trace = tmp_path / "table.csv"
  trace.write_text("a,b\n1,2\n")
  out = tmp_path / "out"
  with pytest.raises(traces.TraceFormatError, match="unknown trace format"):
    trace_scoring.run(make_config(trace, out))
  assert_nothing_written(tmp_path, out)


def test_invalid_config_reads_nothing(tmp_path):
  out = tmp_path / "out"
  config = make_config(tmp_path / "absent.json", out, cv_folds=1)
  with pytest.raises(trace_scoring.config_checks.ConfigError) as raised:
    trace_scoring.run(config)
  assert len(raised.value.problems) == 2
  assert_nothing_written(tmp_path, out)


# ---------------------------------------------------------------------------------------------
# Edge cases and ablation settings.


def test_reference_jsonl_edge_cases(tmp_path):
  """Reference JSONL with rewards, NaN and null entropies, and a problem without a centroid."""
  rng = np.random.default_rng(4)
  entropies = [float(h) for h in rng.exponential(0.5, 40)]
  with_gaps = list(entropies)
  with_gaps[5] = math.nan
  with_gaps[9] = None
  records = [
      {"id": "p0_traj_0", "original_id": "p0", "reward": 1.0,
       "entropy_sequence": [{"entropy": h} for h in entropies]},
      {"id": "p0_traj_1", "original_id": "p0", "reward": 0.0,
       "entropy_sequence": [{"entropy": h} for h in with_gaps]},
      {"id": "p1", "original_id": "p1", "reward": 1.0, "entropy_sequence": []},
  ]
  trace = tmp_path / "entropy_results.jsonl"
  # json.dumps writes NaN as the literal NaN, as the reference files do.
  trace.write_text("".join(json.dumps(record) + "\n" for record in records))
  out = tmp_path / "out"
  result = trace_scoring.run(make_config(trace, out))

  rows = read_jsonl(out / trace_scoring.CENTROIDS_FILE)
  assert [(r["problem_id"], r["trajectory_index"]) for r in rows] == [
      ("p0", 0), ("p0", 1), ("p1", 0)]
  assert rows[1]["num_invalid"] == 2
  assert_oracle_scores(rows[1], with_gaps, "p0/1")
  assert rows[2]["centroid"] is None

  summary = result.summary
  assert summary["input"]["format"] == "reference_jsonl"
  counts = summary["counts"]
  assert counts["nan_positions"] == 1
  assert counts["missing_positions"] == 1
  assert counts["problems_without_centroid"] == 1
  lowest = summary["methods"]["lowest_centroid"]
  assert lowest["total"] == 2
  assert lowest["unanswered"] == 1
  assert "unavailable" in summary["methods"]["deepconf_mean"]
  assert "unavailable" in summary["methods"]["majority_vote"]

  selected = read_jsonl(out / trace_scoring.SELECTED_FILE)
  unanswered = [r for r in selected if r["problem_id"] == "p1" and r["method"] == "lowest_centroid"]
  assert unanswered == [{"problem_id": "p1", "method": "lowest_centroid",
                         "trajectory_index": None, "answer": None, "correct": False}]


def test_entropy_mass_and_moment(data_dir, tmp_path):
  out = tmp_path / "out"
  result = trace_scoring.run(make_config(data_dir / "reference_traces_small.json", out,
                                         phase_mass="entropy", centroid_method="moment"))
  assert result.summary["scoring"]["exact_tie_key"] is False
  assert result.summary["scoring"]["phase_mass"] == "entropy"
  with open(data_dir / "reference_traces_small.json", encoding="utf-8") as file:
    sequences = {(r["original_id"], r["trajectory_index"]):
                 [entry["entropy"] for entry in r["entropy_sequence"]] for r in json.load(file)}
  for record in read_jsonl(out / trace_scoring.CENTROIDS_FILE):
    key = (record["problem_id"], record["trajectory_index"])
    oracle = scoring_oracle.score(sequences[key], 1, 80, 2, phase_mass="entropy")
    assert record["centroid"] == record["moment"], key
    for method in ("weighted_average_center", "weighted_average", "moment"):
      assert_close(record[method], oracle[method], f"{key} {method}", rtol=1e-9)


def test_float32_scoring(data_dir, tmp_path):
  out = tmp_path / "out"
  trace_scoring.run(make_config(data_dir / "reference_traces_small.json", out, x64=False))
  expected = {(r["problem_id"], r["trajectory_index"]): r
              for r in read_jsonl(data_dir / "reference_traces_small.expected.jsonl")}
  for record in read_jsonl(out / trace_scoring.CENTROIDS_FILE):
    row = expected[(record["problem_id"], record["trajectory_index"])]
    assert record["phases"] == row["phases"]
    for method in ("weighted_average_center", "weighted_average", "moment", "raw_entropy"):
      assert_close(record[method], row[method], method, rtol=1e-5)
