r"""Memory calculator for best-of-N sampling with a decoder split over a (data, model) mesh.

  python -m ec_jax.parallel.memory                          # table for every preset and chip
  python -m ec_jax.parallel.memory --model=qwen2.5-72b --chip=tpu-v5p --mesh_model=8 \
      --mesh_data=2
  python -m ec_jax.parallel.memory --model=/path/to/config.json   # a Hugging Face config

Per chip, with rows = batch_problems x num_samples sequences of `seq_len` tokens:

  weights     each parameter's bytes divided by the `model` axis size where the logical-axis
              table (`ec_jax.parallel.mesh.LOGICAL_AXIS_RULES`) splits it: heads, kv_heads,
              mlp and vocab. Norm scales stay whole. Every data slice contains a full copy.
  KV cache    2 (keys and values) x layers x kv_heads / model x head_dim x bytes
              x ceil(rows / data) x seq_len
  logits      ceil(rows / data) x vocab / model x 4 bytes (float32 logits of one decode step)
  outputs     ceil(rows / data) x seq_len x 7 x 4 bytes: an estimate of the per-token arrays the
              sampler keeps (token ids, log-probability, three entropies, confidence,
              self-certainty)

Activations of a long prefill, compiler workspace and fragmentation are not counted, so a
configuration is reported as fitting only when the total is at most `--usable_fraction`
(default 0.9) of the chip's memory.

Presets. The dense models are Qwen2.5-14B, -32B and -72B (Qwen2 architecture, which ec_jax's
decoder runs). Qwen3-Coder-480B-A35B is a mixture-of-experts model: ec_jax's decoder is dense and
does not run it. Its row gives the memory it would need with every expert's weights resident,
each expert's width split over `model`. The architecture numbers are the values of the
config.json fields hidden_size, intermediate_size (moe_intermediate_size for the experts),
num_hidden_layers, num_attention_heads, num_key_value_heads, head_dim, vocab_size,
num_experts and tie_word_embeddings published with each model on Hugging Face. They are quoted
from memory of those files, not re-read for this table. The parameter counts computed from them
(14.8B, 32.8B, 72.7B and 480B) agree with the sizes in the model names.

Chip memory: TPU v5p 95 GiB per chip; NVIDIA H100 80 GB and H200 141 GB, taken as 10^9-byte
gigabytes as marketed (the devices report slightly more).
"""

from __future__ import annotations

import dataclasses
import json
import math
import pathlib
import sys
from collections.abc import Sequence

from absl import app
from absl import flags

from ec_jax.model.config import ModelConfig

GIB = 2**30

# Chip name -> (memory in bytes, description).
CHIPS: dict[str, tuple[int, str]] = {
    "tpu-v5p": (95 * GIB, "TPU v5p (95 GiB HBM)"),
    "h100": (80 * 10**9, "H100 (80 GB)"),
    "h200": (141 * 10**9, "H200 (141 GB)"),
}

DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2, "int8": 1}

# Per-token arrays the sampler keeps per row (an estimate; see the module docstring).
OUTPUT_ARRAYS_PER_TOKEN = 7


@dataclasses.dataclass(frozen=True)
class ModelShape:
  """Sizes of a Llama/Qwen-style decoder, dense or mixture-of-experts.

  Attributes:
    name: display name.
    num_layers: decoder blocks.
    hidden_size: residual width (`embed`).
    num_heads: query heads.
    num_kv_heads: key/value heads.
    head_dim: width of one head.
    intermediate_size: SwiGLU width of a dense layer, or of one expert when num_experts > 0.
    vocab_size: embedding rows.
    tie_embeddings: whether the output projection reuses the embedding.
    attention_bias: whether q/k/v projections have biases (Qwen2).
    qk_norm: whether queries and keys get an RMSNorm over head_dim (Qwen3).
    num_experts: experts per layer; 0 for a dense model.
    experts_per_token: experts each token uses (memory does not depend on it).
  """

  name: str
  num_layers: int
  hidden_size: int
  num_heads: int
  num_kv_heads: int
  head_dim: int
  intermediate_size: int
  vocab_size: int
  tie_embeddings: bool = False
  attention_bias: bool = False
  qk_norm: bool = False
  num_experts: int = 0
  experts_per_token: int = 0

  @property
  def is_moe(self) -> bool:
    return self.num_experts > 0

  @classmethod
  def from_model_config(cls, config: ModelConfig, name: str = "model") -> ModelShape:
    """Return the shape of an ec_jax decoder config."""
    return cls(
        name=name, num_layers=config.num_layers, hidden_size=config.hidden_size,
        num_heads=config.num_heads, num_kv_heads=config.num_kv_heads,
        head_dim=config.head_dim, intermediate_size=config.intermediate_size,
        vocab_size=config.vocab_size, tie_embeddings=config.tie_embeddings,
        attention_bias=config.attention_bias)

  def parameter_groups(self) -> list[tuple[str, int, str | None]]:
    """Return (name, parameter count, logical axis split over `model` or None) per group.

    Each group's count is its total over all layers. The split axis is the dimension that
    `LOGICAL_AXIS_RULES` puts on `model`; its size decides whether the split is exact.
    """
    layers, embed, head_dim = self.num_layers, self.hidden_size, self.head_dim
    q_width, kv_width = self.num_heads * head_dim, self.num_kv_heads * head_dim
    groups = [("embedding", self.vocab_size * embed, "vocab")]
    if not self.tie_embeddings:
      groups.append(("lm_head", self.vocab_size * embed, "vocab"))
    groups += [
        ("q_proj, o_proj", layers * 2 * embed * q_width, "heads"),
        ("k_proj, v_proj", layers * 2 * embed * kv_width, "kv_heads"),
    ]
    if self.attention_bias:
      groups += [("q_bias", layers * q_width, "heads"),
                 ("k_bias, v_bias", layers * 2 * kv_width, "kv_heads")]
    if self.is_moe:
      groups += [
          ("experts", layers * self.num_experts * 3 * embed * self.intermediate_size, "mlp"),
          ("router", layers * embed * self.num_experts, None),
      ]
    else:
      groups.append(("mlp", layers * 3 * embed * self.intermediate_size, "mlp"))
    norms = (2 * layers + 1) * embed + (2 * layers * head_dim if self.qk_norm else 0)
    groups.append(("norms", norms, None))
    return groups

  def num_parameters(self) -> int:
    return sum(count for _, count, _ in self.parameter_groups())

  def axis_size(self, logical: str) -> int:
    return {"vocab": self.vocab_size, "heads": self.num_heads, "kv_heads": self.num_kv_heads,
            "mlp": self.intermediate_size}[logical]


# Published configs; see the module docstring for the fields and how they were obtained.
PRESETS: dict[str, ModelShape] = {
    "qwen2.5-14b": ModelShape(
        name="Qwen2.5-14B", num_layers=48, hidden_size=5120, num_heads=40, num_kv_heads=8,
        head_dim=128, intermediate_size=13824, vocab_size=152064, attention_bias=True),
    "qwen2.5-32b": ModelShape(
        name="Qwen2.5-32B", num_layers=64, hidden_size=5120, num_heads=40, num_kv_heads=8,
        head_dim=128, intermediate_size=27648, vocab_size=152064, attention_bias=True),
    "qwen2.5-72b": ModelShape(
        name="Qwen2.5-72B", num_layers=80, hidden_size=8192, num_heads=64, num_kv_heads=8,
        head_dim=128, intermediate_size=29568, vocab_size=152064, attention_bias=True),
    "qwen3-coder-480b-a35b": ModelShape(
        name="Qwen3-Coder-480B-A35B (MoE)", num_layers=62, hidden_size=6144, num_heads=96,
        num_kv_heads=8, head_dim=128, intermediate_size=2560, vocab_size=151936,
        qk_norm=True, num_experts=160, experts_per_token=8),
}


@dataclasses.dataclass(frozen=True)
class Workload:
  """Sampling workload: rows = batch_problems x num_samples sequences of seq_len tokens.

  Attributes:
    num_samples: N, samples per problem.
    batch_problems: problems decoded together.
    seq_len: cache slots per row (prompt + new tokens).
    param_bytes: bytes per weight (2 for bfloat16).
    cache_bytes: bytes per key/value element.
  """

  num_samples: int = 64
  batch_problems: int = 1
  seq_len: int = 32768
  param_bytes: int = 2
  cache_bytes: int = 2

  @property
  def rows(self) -> int:
    return self.batch_problems * self.num_samples


@dataclasses.dataclass(frozen=True)
class ChipMemory:
  """Bytes per chip of one model, workload and mesh."""

  weights: int
  kv_cache: int
  logits: int
  outputs: int

  @property
  def total(self) -> int:
    return self.weights + self.kv_cache + self.logits + self.outputs


def check_mesh(shape: ModelShape, data: int, model: int) -> None:
  """Raise ValueError unless the mesh sizes are positive and `model` divides the head counts."""
  for name, value in (("data", data), ("model", model)):
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
      raise ValueError(f"mesh {name} size must be a positive integer, got {value!r}.")
  for name, count in (("num_kv_heads", shape.num_kv_heads), ("num_heads", shape.num_heads)):
    if count % model:
      raise ValueError(
          f"mesh model size {model} does not divide {shape.name}'s {name} = {count}; use one "
          f"of {model_axis_sizes(shape)}.")


def model_axis_sizes(shape: ModelShape) -> list[int]:
  """Return the model-axis sizes that divide both head counts."""
  return [size for size in range(1, shape.num_kv_heads + 1)
          if shape.num_kv_heads % size == 0 and shape.num_heads % size == 0]


def total_weight_bytes(shape: ModelShape, workload: Workload) -> int:
  return shape.num_parameters() * workload.param_bytes


def total_kv_cache_bytes(shape: ModelShape, workload: Workload) -> int:
  """Return 2 x layers x kv_heads x head_dim x bytes x rows x seq_len."""
  return (2 * shape.num_layers * shape.num_kv_heads * shape.head_dim * workload.cache_bytes
          * workload.rows * workload.seq_len)


def chip_memory(shape: ModelShape, workload: Workload, data: int, model: int) -> ChipMemory:
  """Return the bytes one chip holds on a (data, model) mesh.

  A group whose split axis `model` does not divide is counted whole on every chip, as
  `param_shardings` replicates it. Rows are padded to a multiple of `data` (`pad_rows`).

  Raises:
    ValueError: invalid mesh sizes, or `model` does not divide the head counts.
  """
  check_mesh(shape, data, model)
  weights = 0
  for _, count, logical in shape.parameter_groups():
    split = model if logical is not None and shape.axis_size(logical) % model == 0 else 1
    weights += math.ceil(count / split) * workload.param_bytes
  rows_per_chip = math.ceil(workload.rows / data)
  kv_cache = (2 * shape.num_layers * (shape.num_kv_heads // model) * shape.head_dim
              * workload.cache_bytes * rows_per_chip * workload.seq_len)
  vocab_split = model if shape.vocab_size % model == 0 else 1
  logits = rows_per_chip * math.ceil(shape.vocab_size / vocab_split) * 4
  outputs = rows_per_chip * workload.seq_len * OUTPUT_ARRAYS_PER_TOKEN * 4
  return ChipMemory(weights=weights, kv_cache=kv_cache, logits=logits, outputs=outputs)


def smallest_fitting_mesh(shape: ModelShape, workload: Workload, capacity: int,
                          usable_fraction: float = 0.9, max_chips: int = 4096
                          ) -> tuple[int, int, ChipMemory] | None:
  """Return (data, model, memory) of the fewest chips whose per-chip total fits, or None.

  Chip counts are powers of two up to max_chips. For each count, every model size that divides
  the head counts is tried, with data = chips / model no larger than the number of rows, and
  the one with the smallest per-chip total is kept.
  """
  limit = capacity * usable_fraction
  chips = 1
  while chips <= max_chips:
    best = None
    for model in model_axis_sizes(shape):
      if chips % model or chips // model > workload.rows:
        continue
      memory = chip_memory(shape, workload, chips // model, model)
      if best is None or memory.total < best[2].total:
        best = (chips // model, model, memory)
    if best is not None and best[2].total <= limit:
      return best
    chips *= 2
  return None


def shape_from_argument(argument: str) -> ModelShape:
  """Return a preset by name, or the shape of a Hugging Face config.json at this path.

  Raises:
    ValueError: not a preset name, and not a readable config.json of a supported model type.
  """
  if argument.lower() in PRESETS:
    return PRESETS[argument.lower()]
  path = pathlib.Path(argument)
  if not path.is_file():
    raise ValueError(
        f"--model {argument!r} is neither a preset ({', '.join(PRESETS)}) nor a config.json "
        "file.")
  # Imported here because only this option needs the checkpoint reader and its dependencies.
  from ec_jax.weights import hf_checkpoint  # pylint: disable=g-import-not-at-top
  try:
    values = json.loads(path.read_text())
  except json.JSONDecodeError as error:
    raise ValueError(f"{path} is not valid JSON: {error}.") from None
  return ModelShape.from_model_config(hf_checkpoint.config_from_hf(values), name=path.parent.name
                                      or path.name)


def _gib(value: int | float, decimals: int = 1) -> str:
  return f"{value / GIB:,.{decimals}f}"


def format_table(shapes: Sequence[ModelShape], chips: Sequence[str], workload: Workload,
                 usable_fraction: float) -> str:
  """Return a Markdown table: totals per model, and the smallest mesh that fits per chip."""
  header = ["model", "parameters", "weights GiB", "KV cache GiB"]
  for chip in chips:
    header.append(f"{CHIPS[chip][1]}: fewest chips (data x model), GiB per chip")
  lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
  for shape in shapes:
    row = [shape.name, f"{shape.num_parameters() / 1e9:.1f}B",
           _gib(total_weight_bytes(shape, workload)),
           _gib(total_kv_cache_bytes(shape, workload))]
    for chip in chips:
      found = smallest_fitting_mesh(shape, workload, CHIPS[chip][0], usable_fraction)
      if found is None:
        widest = max(model_axis_sizes(shape))
        weights = chip_memory(shape, workload, 1, widest).weights
        row.append(f"does not fit: weights alone are {_gib(weights)} GiB per chip at "
                   f"model = {widest}")
      else:
        data, model, memory = found
        row.append(f"{data * model} ({data} x {model}), {_gib(memory.total)}")
    lines.append("| " + " | ".join(row) + " |")
  return "\n".join(lines)


def format_breakdown(shape: ModelShape, workload: Workload, data: int, model: int,
                     chip: str | None, usable_fraction: float) -> str:
  """Return the per-chip breakdown of one model on one mesh, and whether it fits."""
  memory = chip_memory(shape, workload, data, model)
  lines = [
      f"{shape.name}: {shape.num_parameters() / 1e9:.2f}B parameters; rows "
      f"{workload.rows} (batch_problems {workload.batch_problems} x N {workload.num_samples}), "
      f"{workload.seq_len} tokens; mesh data {data} x model {model} = {data * model} chips.",
      f"  weights   {_gib(memory.weights, 3):>10} GiB per chip",
      f"  KV cache  {_gib(memory.kv_cache, 3):>10} GiB per chip",
      f"  logits    {_gib(memory.logits, 3):>10} GiB per chip",
      f"  outputs   {_gib(memory.outputs, 3):>10} GiB per chip (estimate)",
      f"  total     {_gib(memory.total, 3):>10} GiB per chip",
  ]
  for name in ([chip] if chip else list(CHIPS)):
    capacity, description = CHIPS[name]
    verdict = "fits" if memory.total <= capacity * usable_fraction else "does not fit"
    lines.append(f"  {description}: {verdict} within {usable_fraction:.0%} of "
                 f"{_gib(capacity)} GiB.")
  if shape.is_moe:
    lines.append("  ec_jax's decoder is dense and does not run mixture-of-experts models; this "
                 "is the memory the model would need with every expert resident.")
  return "\n".join(lines)


_MODEL = flags.DEFINE_string(
    "model", None, f"Preset ({', '.join(PRESETS)}) or path to a Hugging Face config.json; "
    "default: every preset.")
_CHIP = flags.DEFINE_enum("chip", None, list(CHIPS), "Chip; default: every chip.")
_NUM_SAMPLES = flags.DEFINE_integer("num_samples", 64, "N, samples per problem.")
_BATCH_PROBLEMS = flags.DEFINE_integer("batch_problems", 1, "Problems decoded together.")
_SEQ_LEN = flags.DEFINE_integer("seq_len", 32768, "Tokens per row (prompt + new tokens).")
_DTYPE = flags.DEFINE_enum("dtype", "bfloat16", list(DTYPE_BYTES), "Dtype of the weights.")
_CACHE_DTYPE = flags.DEFINE_enum(
    "cache_dtype", None, list(DTYPE_BYTES), "Dtype of the KV cache; default --dtype.")
_MESH_DATA = flags.DEFINE_integer(
    "mesh_data", None, "Data axis size; with --mesh_model, prints one mesh's breakdown.")
_MESH_MODEL = flags.DEFINE_integer(
    "mesh_model", None, "Model axis size; with --mesh_data, prints one mesh's breakdown.")
_USABLE_FRACTION = flags.DEFINE_float(
    "usable_fraction", 0.9, "Share of chip memory the counted bytes may use.")


def main(argv: Sequence[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  for name, value in (("num_samples", _NUM_SAMPLES.value),
                      ("batch_problems", _BATCH_PROBLEMS.value), ("seq_len", _SEQ_LEN.value)):
    if value < 1:
      raise app.UsageError(f"--{name} must be a positive integer, got {value}.")
  if not 0 < _USABLE_FRACTION.value <= 1:
    raise app.UsageError(f"--usable_fraction must be in (0, 1], got {_USABLE_FRACTION.value}.")
  workload = Workload(
      num_samples=_NUM_SAMPLES.value, batch_problems=_BATCH_PROBLEMS.value,
      seq_len=_SEQ_LEN.value, param_bytes=DTYPE_BYTES[_DTYPE.value],
      cache_bytes=DTYPE_BYTES[_CACHE_DTYPE.value or _DTYPE.value])
  try:
    shapes = ([shape_from_argument(_MODEL.value)] if _MODEL.value
              else list(PRESETS.values()))
  except ValueError as error:
    sys.exit(f"memory: error: {error}")

  if (_MESH_DATA.value is None) != (_MESH_MODEL.value is None):
    raise app.UsageError("Pass both --mesh_data and --mesh_model, or neither.")
  if _MESH_DATA.value is not None:
    for shape in shapes:
      try:
        print(format_breakdown(shape, workload, _MESH_DATA.value, _MESH_MODEL.value,
                               _CHIP.value, _USABLE_FRACTION.value))
      except ValueError as error:
        sys.exit(f"memory: error: {error}")
    return
  chips = [_CHIP.value] if _CHIP.value else list(CHIPS)
  print(f"N = {workload.num_samples}, batch_problems = {workload.batch_problems}, "
        f"{workload.seq_len} tokens per row, {_DTYPE.value} weights, "
        f"{_CACHE_DTYPE.value or _DTYPE.value} KV cache; fits = at most "
        f"{_USABLE_FRACTION.value:.0%} of chip memory.\n")
  print(format_table(shapes, chips, workload, _USABLE_FRACTION.value))
  for shape in shapes:
    if shape.is_moe:
      needed = total_weight_bytes(shape, workload) + total_kv_cache_bytes(shape, workload)
      print(f"\n{shape.name}: ec_jax's decoder is dense and does not run mixture-of-experts "
            "models. The row gives the memory needed with every expert resident, each expert "
            f"split over model. Weights and KV cache total {_gib(needed)} GiB; spread evenly "
            "over all chips (expert parallelism, which ec_jax does not implement) they would "
            "need at least " + ", ".join(
                f"{math.ceil(needed / (CHIPS[chip][0] * _USABLE_FRACTION.value))} {chip}"
                for chip in chips) + " chips.")


if __name__ == "__main__":
  app.run(main)
