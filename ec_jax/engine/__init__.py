"""Orchestration of the main job `experiments/best_of_n.py`, one concept per module.

- `checks`: config validation before any work.
- `tiny_model`, `model_loading`: the `model` spec, its tokenizer and weights.
- `prompts`, `batches`: chat prompts padded to length buckets, and problem batches.
- `batch_sampling`: one sampler call per batch.
- `records`, `run_folder`: per-trajectory records and shards, the run folder and resume.
- `summary`, `run_plots`: the end of a run (methods, summary.json, figures).
- `run`: the whole job.
"""
