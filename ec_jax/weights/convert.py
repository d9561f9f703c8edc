"""Convert a GGUF file or a Hugging Face checkpoint to an Orbax folder, one tensor at a time.

The source is read through the iterators of `gguf_reader.open_gguf` and
`hf_checkpoint.open_hf_checkpoint`, and `orbax_io.save_tensors` writes each group of converted
tensors before the next is read. For a model larger than a group (1 GiB by default), host
memory therefore contains about one group plus one tensor rather than the whole model.
`orbax_io.restore_decoder` reads the folder back onto a mesh.

The source's tokenizer (from GGUF metadata or the checkpoint's tokenizer files) is built before
any tensor is read and stored beside the weights with `ec_jax.text.save_tokenizer`, so the
folder can be the `model` of the best_of_n job.
"""

from __future__ import annotations

import os
import pathlib
import shutil
from collections.abc import Iterator

import numpy as np

from ec_jax.model import params as params_lib
from ec_jax.model.config import ModelConfig
from ec_jax.text import tokenizer as tokenizer_lib
from ec_jax.weights import embedded
from ec_jax.weights import gguf_reader
from ec_jax.weights import hf_checkpoint
from ec_jax.weights import orbax_io


def open_source(source: str | os.PathLike[str], cache: str | None = None) -> tuple[
    ModelConfig, Iterator[tuple[params_lib.ParamPath, np.ndarray]]]:
  """Return the config of a model and an iterator over its parameters in model layout.

  Args:
    source: an embedded model name, a `.gguf` file, a Hugging Face checkpoint folder or
      `hf:ORG/NAME` (see `embedded.resolve_model_spec`).
    cache: cache folder of the embedded models; default `embedded.cache_dir()`.

  Raises:
    EmbeddedModelError: an embedded model is not installed.
    ModelSpecError: the source names no model file or checkpoint folder, or names a folder
      that `convert` wrote.
    FileNotFoundError, ValueError: from the GGUF or safetensors reader.
  """
  return _open_path(_resolve_source(source, cache))


def _resolve_source(source: str | os.PathLike[str], cache: str | None) -> pathlib.Path:
  """Resolve a source to its GGUF file or checkpoint folder, rejecting converted folders."""
  path = embedded.resolve_model_spec(os.fspath(source), cache)
  if embedded.is_converted_folder(path):
    raise embedded.ModelSpecError(
        f"{path} is already a converted folder. Use it as the `model` of a job instead of "
        "converting it again.")
  return path


def _open_path(path: pathlib.Path) -> tuple[
    ModelConfig, Iterator[tuple[params_lib.ParamPath, np.ndarray]]]:
  if path.is_dir():
    return hf_checkpoint.open_hf_checkpoint(path)
  return gguf_reader.open_gguf(path)


def read_source_tokenizer(path: pathlib.Path) -> tokenizer_lib.Tokenizer:
  """Build the tokenizer of a resolved source (GGUF file or checkpoint folder).

  Raises:
    ValueError: the source has no tokenizer that ec_jax can build. The message names the cause
      and the `--weights-only` option.
  """
  try:
    return tokenizer_lib.load_tokenizer(path)
  except (FileNotFoundError, ValueError) as error:
    # TokenizerLoadError, UnknownPreTokenizerError and the readers' errors are ValueErrors.
    raise ValueError(
        f"Cannot build the tokenizer of {path}: {str(error).rstrip('.')}. Fix the source, or "
        "convert the weights alone with --weights-only (weights_only=True). Such a folder "
        "cannot be the `model` of a job.") from error


def convert(source: str | os.PathLike[str], destination: str | os.PathLike[str],
            dtype: str | None = None, group_bytes: int = orbax_io.DEFAULT_GROUP_BYTES,
            cache: str | None = None, weights_only: bool = False) -> pathlib.Path:
  """Convert a model (see `open_source`) and its tokenizer to a new Orbax folder; return it.

  The folder contains `model_config.json`, the checkpoint `params/` and, unless weights_only,
  the tokenizer files of `ec_jax.text.save_tokenizer`.

  Args:
    source: the model to read.
    destination: the new folder.
    dtype: dtype name of the stored weights; default float32, the readers' output.
    group_bytes: bytes of converted tensors written together (see `orbax_io.save_tensors`).
    cache: cache folder of the embedded models.
    weights_only: store no tokenizer, for a source without one that ec_jax can build.

  Raises:
    FileExistsError: destination exists (checked before the source is opened).
    ValueError: the source has no usable tokenizer, or the tokenizer has more ids than the
      model has embeddings (both checked before any tensor is read).
    EmbeddedModelError, ModelSpecError, FileNotFoundError, ValueError: see `open_source` and
      `orbax_io.save_tensors`. A failed conversion removes the destination.
  """
  destination = pathlib.Path(destination).absolute()
  if destination.exists():
    raise FileExistsError(f"{destination} already exists; choose a new folder or remove it.")
  path = _resolve_source(source, cache)
  tokenizer = None if weights_only else read_source_tokenizer(path.absolute())
  config, tensors = _open_path(path)
  if tokenizer is not None and tokenizer.vocab_size > config.vocab_size:
    raise ValueError(
        f"The tokenizer of {path} has {tokenizer.vocab_size} ids but the model only "
        f"{config.vocab_size} embeddings; the tokenizer and weights do not match.")
  folder = orbax_io.save_tensors(destination, config, tensors, dtype, group_bytes)
  if tokenizer is not None:
    try:
      tokenizer_lib.save_tokenizer(tokenizer, folder)
    except BaseException:
      shutil.rmtree(folder, ignore_errors=True)
      raise
  return folder
