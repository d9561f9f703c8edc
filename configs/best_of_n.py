r"""Best-of-N sampling with a real model: sample N answers per problem, score, select, grade.

Run from the repository root (the default: 24 GSM8K problems, N = 8, Qwen2.5-Coder-0.5B-Instruct
on a CPU):

  python -m experiments.best_of_n --config=configs/best_of_n.py

Variants, comma-separated after a colon, override a few keys of the base:

  python -m experiments.best_of_n --config=configs/best_of_n.py:smollm2
  python -m experiments.best_of_n --config=configs/best_of_n.py:math500
  python -m experiments.best_of_n --config=configs/best_of_n.py:aime2025
  python -m experiments.best_of_n --config=configs/best_of_n.py:svamp
  python -m experiments.best_of_n --config=configs/best_of_n.py:humaneval
  python -m experiments.best_of_n --config=configs/best_of_n.py:gsm8k_full
  python -m experiments.best_of_n --config=configs/best_of_n.py:paper,math500
  python -m experiments.best_of_n --config=configs/best_of_n.py:tiny

`paper` is the paper's sampling setting (N = 64, up to 32,768 new tokens, bfloat16) and is meant
for accelerators. `tiny` samples a few short trajectories from a random 2-layer model built
in-process (`model = "tiny:llama"`, a byte-level tokenizer), which checks the whole pipeline in
seconds; its accuracies mean nothing. Any key can also be set on the command line, e.g.
`--config.num_problems=8 --config.output_dir=runs/try`. Rerunning a command with the same
config resumes its output_dir; the keys are described below and in configs/common.py.
"""

from __future__ import annotations

from ml_collections import config_dict

from configs import common

VARIANTS = ("smollm2", "math500", "aime2025", "svamp", "humaneval", "gsm8k_full", "paper", "tiny")


def get_config(arg: str | None = None) -> config_dict.ConfigDict:
  """Return the best_of_n config; `arg` is a comma-separated list of VARIANTS."""
  config = config_dict.ConfigDict()
  # An embedded model name, a .gguf file, a Hugging Face checkpoint folder, hf:ORG/NAME, a
  # folder written by `python -m ec_jax.weights convert` (each process reads only its weight
  # shards), or tiny:llama / tiny:qwen2 (a random test model built in-process).
  config.model = "qwen2.5-coder-0.5b-instruct"
  # gsm8k, math500, aime2024, aime2025, svamp, humaneval or jsonl.
  config.task = "gsm8k"
  # The task's data file; empty uses the file shipped with ec_jax (jsonl needs one).
  config.data_path = ""
  # The first problems of the file, in file order; -1 takes all.
  config.num_problems = 24
  # N, the trajectories sampled per problem.
  config.num_samples = 8
  config.max_new_tokens = 512
  # Sampling temperature (0 is greedy), nucleus mass in (0, 1], top-k (0: whole candidate set).
  config.temperature = 0.7
  config.top_p = 0.95
  config.top_k = 0
  # Static size of the candidate set sampled from (lax.top_k of the logits); >= entropy_k.
  config.candidate_k = 64
  # Problems sampled together in one compiled call (batch_problems x N rows). On 2 CPU cores a
  # decode step of Qwen2.5-Coder-0.5B costs about 3x less per row at 64 rows than at 8.
  config.batch_problems = 8
  # Prompts are left-padded to a multiple of this many tokens (one compile per length bucket).
  config.prompt_bucket = 64
  # Also sample one temperature-0 trajectory per problem into greedy.jsonl (method `greedy`).
  config.greedy = False
  # Weights and activations: float32, bfloat16 or float16 (token statistics stay float32).
  config.dtype = "float32"
  # Devices: mesh.data x mesh.model = all devices; data = -1 takes all devices / mesh.model.
  config.mesh = config_dict.ConfigDict({"data": -1, "model": 1})
  # The run folder; a rerun with the same config resumes it.
  config.output_dir = "runs/best_of_n"
  # Also score every setting of sweep_grid in the same compiled call.
  config.sweep = False
  common.add_scoring_groups(config)
  config.pass_k = (2, 4)
  # Short answers: DeepConf's window and tail of 2048 tokens would cover whole trajectories.
  config.deepconf.window = 64
  config.deepconf.tail = 64

  variants = [name.strip() for name in (arg or "").split(",") if name.strip()]
  for variant in variants:
    if variant not in VARIANTS:
      raise ValueError(
          f"Unknown best_of_n config variant {variant!r}; use one of {', '.join(VARIANTS)}, "
          "e.g. configs/best_of_n.py:smollm2.")
    _VARIANT_SETTERS[variant](config)
  if variants:
    config.output_dir = "runs/best_of_n_" + "_".join(variants)
  return config


def _smollm2(config: config_dict.ConfigDict) -> None:
  config.model = "smollm2-135m-instruct"


def _math500(config: config_dict.ConfigDict) -> None:
  config.task = "math500"
  config.max_new_tokens = 1024


def _aime2025(config: config_dict.ConfigDict) -> None:
  config.task = "aime2025"
  config.num_problems = -1
  config.max_new_tokens = 2048


def _svamp(config: config_dict.ConfigDict) -> None:
  config.task = "svamp"


def _humaneval(config: config_dict.ConfigDict) -> None:
  config.task = "humaneval"
  config.max_new_tokens = 768


def _gsm8k_full(config: config_dict.ConfigDict) -> None:
  config.task = "gsm8k"
  config.num_problems = -1


def _paper(config: config_dict.ConfigDict) -> None:
  config.num_samples = 64
  config.max_new_tokens = 32_768
  config.dtype = "bfloat16"
  config.batch_problems = 8
  config.pass_k = (2, 4, 8, 16, 32)
  config.deepconf.window = 2048
  config.deepconf.tail = 2048


def _tiny(config: config_dict.ConfigDict) -> None:
  config.model = "tiny:llama"
  config.num_problems = 3
  config.num_samples = 4
  config.max_new_tokens = 16
  config.batch_problems = 2
  config.candidate_k = 16
  config.pass_k = (2,)
  config.deepconf.window = 8
  config.deepconf.tail = 8
  config.bootstrap.samples = 200


_VARIANT_SETTERS = {
    "smollm2": _smollm2,
    "math500": _math500,
    "aime2025": _aime2025,
    "svamp": _svamp,
    "humaneval": _humaneval,
    "gsm8k_full": _gsm8k_full,
    "paper": _paper,
    "tiny": _tiny,
}
