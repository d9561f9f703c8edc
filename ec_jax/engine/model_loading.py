"""Model and tokenizer from the config key `model`, with the configured dtype and placement.

`model` is an embedded model name, a `.gguf` file, a Hugging Face checkpoint folder,
`hf:ORG/NAME`, a folder written by `python -m ec_jax.weights convert`, or `tiny:<preset>` (a
random test model built in-process, see `tiny_model`). `check_model_spec` resolves the spec
without reading weights, so a bad spec stops the job before any work; `load_model` then reads
the weights.

Every process reads a whole GGUF file or safetensors checkpoint into host memory before it
places its shards. From a converted folder, Orbax reads each array straight into its sharding,
so a process reads only the shards of its own devices.
"""

from __future__ import annotations

import dataclasses
import pathlib
import time

from absl import logging
import jax
from flax import nnx

from ec_jax import parallel
from ec_jax.engine import tiny_model
from ec_jax.model import config as model_config_lib
from ec_jax.model import decoder as decoder_lib
from ec_jax.model import params as params_lib
from ec_jax.model import testing as model_testing
from ec_jax.text import tokenizer as tokenizer_lib
from ec_jax.weights import embedded

DTYPES = tuple(model_config_lib.DTYPES)


class ModelLoadError(ValueError):
  """Raised for a `model` or `dtype` value that names no usable model; the message has the fix."""


@dataclasses.dataclass(frozen=True, eq=False)
class LoadedModel:
  """A decoder split for `generate_jit`, its tokenizer and where it came from.

  Attributes:
    graphdef: static model structure (`nnx.split`).
    state: the weights, placed on the mesh.
    config: the decoder's config (dtypes applied).
    tokenizer: the model's tokenizer (chat template, stop ids).
    spec: the config's `model` value.
    path: the resolved file or folder, or None for a tiny model.
    context_length: positions available to a prompt plus its new tokens.
  """

  graphdef: nnx.GraphDef
  state: nnx.State
  config: model_config_lib.ModelConfig
  tokenizer: tokenizer_lib.Tokenizer
  spec: str
  path: pathlib.Path | None
  context_length: int


def check_model_spec(spec: str) -> pathlib.Path | None:
  """Resolve `spec` to its file or folder (None for `tiny:` specs) without reading weights.

  Raises:
    ModelLoadError: the spec names no model, an embedded model is not installed (the
      message gives the install command), or a converted folder has no tokenizer files.
  """
  if tiny_model.is_tiny_spec(spec):
    try:
      tiny_model.preset_name(spec)
    except ValueError as error:
      raise ModelLoadError(str(error)) from error
    return None
  try:
    path = embedded.resolve_model_spec(spec)
  except (embedded.EmbeddedModelError, embedded.ModelSpecError) as error:
    raise ModelLoadError(str(error)) from error
  if embedded.is_converted_folder(path) and not tokenizer_lib.has_saved_tokenizer(path):
    raise ModelLoadError(
        f"The converted folder {path} is missing {tokenizer_lib.SAVED_TOKENIZER_FILE} or "
        f"{tokenizer_lib.SAVED_SETTINGS_FILE}, because it was converted with --weights-only, "
        "by an ec_jax version that did not store the tokenizer, or not to the end. Convert the "
        "model again into a new folder with `python -m ec_jax.weights convert SOURCE DEST` and "
        "set `model` to DEST.")
  return path


def _read_decoder(path: pathlib.Path | None, spec: str, dtype: str,
                  mesh: jax.sharding.Mesh) -> decoder_lib.Decoder:
  """Read the decoder of `path`, or of a tiny `spec`, sharded with `parallel.param_shardings`."""
  if path is not None and embedded.is_converted_folder(path):
    # Imported here: Orbax is needed only for converted folders.
    from ec_jax.weights import orbax_io  # pylint: disable=import-outside-toplevel
    config = orbax_io.read_config(path).with_dtypes(dtype)
    return orbax_io.restore_decoder(
        path, param_dtype=dtype, shardings=parallel.param_shardings(config, mesh))
  if path is None:
    config = tiny_model.tiny_model_config(spec, dtype)
    params = model_testing.random_params(config, seed=tiny_model.WEIGHT_SEED)
  elif path.is_dir():
    # Imported here: the readers pull in gguf and safetensors, which tiny models do not need.
    from ec_jax.weights import hf_checkpoint  # pylint: disable=import-outside-toplevel
    config, params = hf_checkpoint.read_hf_checkpoint(path)
  else:
    from ec_jax.weights import gguf_reader  # pylint: disable=import-outside-toplevel
    config, params = gguf_reader.read_gguf(path)
  config = config.with_dtypes(dtype)
  shardings = parallel.param_shardings(config, mesh)
  return params_lib.decoder_from_params(config, params, shardings)


def load_tokenizer(spec: str) -> tokenizer_lib.Tokenizer:
  """Load the tokenizer of `spec` without reading the weights (GGUF metadata or tokenizer files).

  Raises:
    ModelLoadError: see `check_model_spec`.
  """
  path = check_model_spec(spec)
  if path is None:
    return tiny_model.byte_tokenizer(tiny_model.CONTEXT_LENGTH)
  return tokenizer_lib.load_tokenizer(path)


def load_model(spec: str, dtype: str, mesh: jax.sharding.Mesh,
               tokenizer: tokenizer_lib.Tokenizer) -> LoadedModel:
  """Read the weights of `spec`, cast them to `dtype` and place them on `mesh`.

  Parameters follow `ec_jax.parallel.LOGICAL_AXIS_RULES`: heads, MLP width and vocabulary are
  split over the `model` axis and replicated over `data`.

  Args:
    spec: the config's `model` value.
    dtype: `float32`, `bfloat16` or `float16`, for weights and activations (logits and token
      statistics stay float32).
    mesh: the (`data`, `model`) device mesh.
    tokenizer: the tokenizer of `spec` (`load_tokenizer`).

  Raises:
    ModelLoadError: see `check_model_spec`, an unknown dtype, or a tokenizer with more ids than
      the model has embeddings.
  """
  if dtype not in DTYPES:
    raise ModelLoadError(f"dtype {dtype!r} is not supported; use one of {', '.join(DTYPES)}.")
  path = check_model_spec(spec)
  started = time.perf_counter()
  decoder = _read_decoder(path, spec, dtype, mesh)
  if tokenizer.vocab_size > decoder.config.vocab_size:
    raise ModelLoadError(
        f"The tokenizer of {spec!r} has {tokenizer.vocab_size} ids but the model only "
        f"{decoder.config.vocab_size} embeddings; the tokenizer and weights do not match.")
  graphdef, state = nnx.split(decoder)
  context_length = decoder.config.max_position
  if tokenizer.context_length is not None:
    context_length = min(context_length, tokenizer.context_length)
  logging.info("Loaded model %s (%s) in %.1f s: %s", spec, path or "built in-process",
               time.perf_counter() - started, decoder.config)
  return LoadedModel(graphdef=graphdef, state=state, config=decoder.config, tokenizer=tokenizer,
                     spec=spec, path=path, context_length=context_length)
