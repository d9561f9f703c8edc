"""The main job: sample N answers per problem, score and select in-graph, grade, write, summarise.

  check config, task, data file and model ─► output_dir: new, or resume a run of the same config
  ─► tokenizer and prompts (each prompt + max_new_tokens must fit the context)
  ─► weights on the mesh ─► per unfinished batch: sample (one jit per prompt bucket), decode,
     extract and grade, append records and shard ─► read the folder back: every method,
     bootstrap intervals, accuracy vs n ─► selected.jsonl, summary.json, plots

Every process runs the sampler (SPMD). Only process 0 reads the output folder, grades and
writes; when it fails to read the folder, every process raises its error.
"""

from __future__ import annotations

import dataclasses
import pathlib
import sys
import time
from collections.abc import Sequence
from typing import Any

from absl import logging
import jax
import numpy as np
import tqdm

from ec_jax import config_checks
from ec_jax import parallel
from ec_jax import tasks
from ec_jax import traces
from ec_jax.engine import batch_sampling
from ec_jax.engine import batches as batches_lib
from ec_jax.engine import checks
from ec_jax.engine import model_loading
from ec_jax.engine import prompts as prompts_lib
from ec_jax.engine import records as records_lib
from ec_jax.engine import run_folder
from ec_jax.engine import run_plots
from ec_jax.engine import summary as summary_lib
from ec_jax.report import table
from ec_jax.scoring import results_folder
from ec_jax.text import chat_template


@dataclasses.dataclass(frozen=True)
class RunResult:
  """The run folder and, on process 0, the summary written into it (None elsewhere)."""

  output_dir: pathlib.Path
  summary: dict | None


@dataclasses.dataclass
class _Throughput:
  """Counters of this invocation's sampling, for the progress bar and `timing`."""

  batches: int = 0
  generated_tokens: int = 0
  decode_row_steps: int = 0
  sampling_seconds: float = 0.0
  grading_seconds: float = 0.0
  writing_seconds: float = 0.0


def _load_problems(config: Any) -> tuple[tasks.Task, list[tasks.Problem]]:
  task = tasks.get_task(config.task, config.data_path or None)
  problems = task.load(None if config.num_problems == -1 else int(config.num_problems))
  logging.info("Task %s: %d problems from %s.", task.name, len(problems), task.data_path)
  return task, problems


def _encode_prompts(config: Any, task: tasks.Task, problems: Sequence[tasks.Problem],
                    tokenizer, context_length: int) -> list[list[int]]:
  encoded = prompts_lib.encode_prompts(task, problems, tokenizer, int(config.max_new_tokens),
                                       context_length)
  lengths = [len(ids) for ids in encoded]
  logging.info("Prompts: %d to %d tokens (mean %.1f), %d new tokens each, context %d.",
               min(lengths), max(lengths), float(np.mean(lengths)), int(config.max_new_tokens),
               context_length)
  return encoded


class _BatchRunner:
  """Samples, grades and writes one batch at a time."""

  def __init__(self, config: Any, task: tasks.Task, problems: Sequence[tasks.Problem],
               prompt_ids: Sequence[Sequence[int]], model: model_loading.LoadedModel,
               setup: batch_sampling.SamplerSetup, writer: bool):
    self._config = config
    self._task = task
    self._problems = problems
    self._prompt_ids = prompt_ids
    self._model = model
    self._setup = setup
    self._sampler = batch_sampling.BatchSampler(model, setup)
    self._writer = writer
    self._folder = pathlib.Path(config.output_dir)
    self.counters = _Throughput()

  def _inputs(self, batch: batches_lib.ProblemBatch) -> tuple[np.ndarray, ...]:
    slot_prompts = batches_lib.slot_values(batch, self._prompt_ids)
    room = self._model.context_length - int(self._config.max_new_tokens)
    width = prompts_lib.bucket_length(max(len(ids) for ids in slot_prompts),
                                      int(self._config.prompt_bucket), room)
    tokens, lengths = prompts_lib.pad_left(slot_prompts, width)
    uids = np.array([problem.problem_uid for problem in
                     batches_lib.slot_values(batch, self._problems)], np.int32)
    return tokens, lengths, uids

  def _records(self, batch: batches_lib.ProblemBatch, output, num_samples: int
               ) -> tuple[list[dict], np.ndarray, list[str], list[int]]:
    rows = records_lib.rows_of_slots(len(batch.problems), num_samples)
    texts = records_lib.decode_texts(self._model.tokenizer, output, rows)
    records, problem_ids, indices = [], [], []
    for row, text in zip(rows, texts):
      problem = self._problems[batch.problems[row // num_samples]]
      grade = records_lib.grade_text(self._task, problem, text)
      records.append(records_lib.trajectory_record(
          problem.problem_id, int(row % num_samples), int(row), output, text, grade,
          self._setup.settings, str(self._config.centroid_method),
          int(self._config.phases.max_phases)))
      problem_ids.append(problem.problem_id)
      indices.append(int(row % num_samples))
    return records, rows, problem_ids, indices

  def run(self, batch: batches_lib.ProblemBatch) -> None:
    """Sample, grade and write one batch (the files only on process 0)."""
    started = time.perf_counter()
    tokens, lengths, uids = self._inputs(batch)
    output = self._sampler.sample(tokens, lengths, uids)
    greedy_output = None
    if self._setup.greedy_spec is not None:
      greedy_output = self._sampler.sample(tokens, lengths, uids, greedy=True)
    sampled = time.perf_counter()
    counters = self.counters
    counters.batches += 1
    counters.sampling_seconds += sampled - started
    real_rows = len(batch.problems) * self._setup.spec.num_samples
    counters.generated_tokens += int(output.lengths[:real_rows].sum())
    counters.decode_row_steps += int(output.steps) * output.lengths.shape[0]
    if not self._writer:
      return

    records, rows, problem_ids, indices = self._records(batch, output,
                                                        self._setup.spec.num_samples)
    greedy_records = None
    if greedy_output is not None:
      greedy_records, _, _, _ = self._records(batch, greedy_output, 1)
    graded = time.perf_counter()
    counters.grading_seconds += graded - sampled

    traces.write_shard(self._folder, batch.index,
                       records_lib.shard_arrays(problem_ids, indices, rows, output))
    if greedy_records is not None:
      with traces.JsonlWriter(self._folder / run_folder.GREEDY_FILE) as file:
        file.write(greedy_records)
    # The trajectories are written last: their presence marks the batch as finished.
    with traces.JsonlWriter(self._folder / run_folder.TRAJECTORIES_FILE) as file:
      file.write(records)
    counters.writing_seconds += time.perf_counter() - graded

  @property
  def compiled_shapes(self) -> int:
    return self._sampler.num_compiled_shapes


def _progress_bar(total: int, done: int, writer: bool) -> tqdm.tqdm:
  return tqdm.tqdm(total=total, initial=done, unit="problem", desc="best_of_n",
                   file=sys.stderr, disable=not writer, dynamic_ncols=True)


def _sample_pending(config: Any, task: tasks.Task, problems: Sequence[tasks.Problem],
                    plan: Sequence[batches_lib.ProblemBatch], pending: Sequence[int],
                    mesh, writer: bool, timing: dict[str, Any]) -> None:
  """Load the model and sample every unfinished batch, in index order."""
  started = time.perf_counter()
  tokenizer = model_loading.load_tokenizer(config.model)
  prompt_ids = None
  if tokenizer.context_length is not None:
    # Checked before the weights are read, so a too-long prompt fails fast.
    prompt_ids = _encode_prompts(config, task, problems, tokenizer, tokenizer.context_length)
  model = model_loading.load_model(config.model, str(config.dtype), mesh, tokenizer)
  if prompt_ids is None or model.context_length != tokenizer.context_length:
    prompt_ids = _encode_prompts(config, task, problems, tokenizer, model.context_length)
  setup = batch_sampling.sampler_setup(config, mesh, model)
  runner = _BatchRunner(config, task, problems, prompt_ids, model, setup, writer)
  timing["model_load_seconds"] = time.perf_counter() - started

  done = sum(len(batch.problems) for batch in plan if batch.index not in pending)
  with _progress_bar(len(problems), done, writer) as bar:
    for index in pending:
      batch = plan[index]
      runner.run(batch)
      counters = runner.counters
      bar.update(len(batch.problems))
      if counters.sampling_seconds > 0:
        bar.set_postfix(tokens_per_s=f"{counters.generated_tokens / counters.sampling_seconds:.1f}")
  counters = runner.counters
  timing.update(
      batches_sampled=counters.batches, compiled_shapes=runner.compiled_shapes,
      sampling_seconds=counters.sampling_seconds, grading_seconds=counters.grading_seconds,
      writing_seconds=counters.writing_seconds, generated_tokens=counters.generated_tokens,
      decode_row_steps=counters.decode_row_steps,
      tokens_per_second=(counters.generated_tokens / counters.sampling_seconds
                         if counters.sampling_seconds else None),
      decode_row_steps_per_second=(counters.decode_row_steps / counters.sampling_seconds
                                   if counters.sampling_seconds else None))


def _summarise(config: Any, task: tasks.Task, problem_ids: Sequence[str],
               options: summary_lib.ScoringOptions, timing: dict[str, Any],
               started: float) -> dict:
  """Read the run folder back and write selected.jsonl, summary.json and the plots."""
  folder = pathlib.Path(config.output_dir)
  summary_started = time.perf_counter()
  records = list(traces.read_jsonl(folder / run_folder.TRAJECTORIES_FILE))
  tables = summary_lib.build_tables(records, problem_ids, task, options)
  greedy_correct = None
  if options.greedy:
    greedy_correct = summary_lib.read_greedy_correct(folder / run_folder.GREEDY_FILE,
                                                     problem_ids)
  evaluation = summary_lib.evaluate(tables, options, greedy_correct)
  curves = summary_lib.accuracy_curves(tables, options)
  summary_lib.write_jsonl_atomic(folder / run_folder.SELECTED_FILE,
                                 summary_lib.selection_records(tables, evaluation))
  run_plots.write_plots(folder, tables, curves, options, int(config.batch_problems))
  now = time.perf_counter()
  timing["summary_seconds"] = now - summary_started
  timing["total_seconds"] = now - started
  summary = summary_lib.summary_record(tables, evaluation, curves, options, task, timing)
  traces.write_json_atomic(folder / run_folder.SUMMARY_FILE, summary)
  return summary


def _start_or_resume(config: Any, requested: dict, plan: Sequence[batches_lib.ProblemBatch],
                     problem_ids: Sequence[str]) -> np.ndarray:
  """Write config.json and return which batches are finished, [len(plan)] bool (process 0)."""
  folder = pathlib.Path(config.output_dir)
  run_folder.write_config(folder, requested)
  state = run_folder.resume_state(folder, plan, problem_ids, int(config.num_samples),
                                  bool(config.greedy))
  finished = np.zeros(len(plan), bool)
  finished[list(state.finished)] = True
  return finished


def run(config: Any) -> RunResult:
  """Run the best_of_n job of a config (see configs/best_of_n.py) and write its run folder.

  Raises:
    ConfigError: an invalid value, task, data file or model (nothing is written).
    RunFolderError: output_dir contains another config's run or foreign records.
    PromptTooLongError: a prompt plus max_new_tokens exceeds the context (nothing sampled).
    ModelLoadError: the weights or tokenizer cannot be used.
  """
  started = time.perf_counter()
  checks.check_config(config)
  requested = results_folder.config_json(config)
  writer = parallel.is_primary()
  folder = pathlib.Path(config.output_dir)
  # Only process 0 reads and writes the folder, so every process acts on the same folder
  # state. run_on_primary raises process 0's error on every process.
  parallel.run_on_primary(lambda: run_folder.check_output_dir(folder, requested),
                         (run_folder.RunFolderError,))
  task, problems = _load_problems(config)
  problem_ids = [problem.problem_id for problem in problems]
  plan = batches_lib.plan_batches(len(problems), int(config.batch_problems))
  mesh = parallel.mesh_from_config(config)
  logging.info("Devices: %s.", parallel.describe_mesh(mesh))

  finished = parallel.run_on_primary(
      lambda: _start_or_resume(config, requested, plan, problem_ids),
      (run_folder.RunFolderError,))
  if jax.process_count() > 1:
    # Process 0 read the folder; the others follow its plan.
    finished = parallel.broadcast_from_primary(
        np.zeros(len(plan), bool) if finished is None else finished)
  pending = [batch.index for batch in plan if not finished[batch.index]]
  logging.info("%d problems in %d batches of %d; %d batches to sample.", len(problems),
               len(plan), int(config.batch_problems), len(pending))

  timing: dict[str, Any] = {}
  if pending:
    _sample_pending(config, task, problems, plan, pending, mesh, writer, timing)
  if not writer:
    return RunResult(output_dir=folder, summary=None)
  options = summary_lib.scoring_options(config, batch_sampling.phase_settings(config))
  summary = _summarise(config, task, problem_ids, options, timing, started)
  logging.info("Results in %s:\n%s", folder, table.format_methods_table(summary["methods"]))
  return RunResult(output_dir=folder, summary=summary)


# Errors caused by the config or the inputs, which the command reports as one line.
USER_ERRORS = (config_checks.ConfigError, run_folder.RunFolderError,
               model_loading.ModelLoadError, chat_template.PromptTooLongError)
