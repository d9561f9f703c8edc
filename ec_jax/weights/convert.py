"""Convert a GGUF file or a Hugging Face checkpoint to an Orbax folder, one tensor at a time.

The source is read through the iterators of `gguf_reader.open_gguf` and
`hf_checkpoint.open_hf_checkpoint`, and `orbax_io.save_tensors` writes each group of converted
tensors before the next is read. For a model larger than a group (1 GiB by default), host
memory therefore contains about one group plus one tensor rather than the whole model.
`orbax_io.restore_decoder` reads the folder back onto a mesh.
"""

from __future__ import annotations

import os
import pathlib
from collections.abc import Iterator

import numpy as np

from ec_jax.model import params as params_lib
from ec_jax.model.config import ModelConfig
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
    ModelSpecError: the source names no model file or checkpoint folder.
    FileNotFoundError, ValueError: from the GGUF or safetensors reader.
  """
  path = embedded.resolve_model_spec(os.fspath(source), cache)
  if path.is_dir():
    return hf_checkpoint.open_hf_checkpoint(path)
  return gguf_reader.open_gguf(path)


def convert(source: str | os.PathLike[str], destination: str | os.PathLike[str],
            dtype: str | None = None, group_bytes: int = orbax_io.DEFAULT_GROUP_BYTES,
            cache: str | None = None) -> pathlib.Path:
  """Convert a model (see `open_source`) to a new Orbax folder; return the folder.

  Args:
    source: the model to read.
    destination: the new folder.
    dtype: dtype name of the stored weights; default float32, the readers' output.
    group_bytes: bytes of converted tensors written together (see `orbax_io.save_tensors`).
    cache: cache folder of the embedded models.

  Raises:
    FileExistsError: destination exists (checked before the source is opened).
    EmbeddedModelError, ModelSpecError, FileNotFoundError, ValueError: see `open_source` and
      `orbax_io.save_tensors`.
  """
  destination = pathlib.Path(destination).absolute()
  if destination.exists():
    raise FileExistsError(f"{destination} already exists; choose a new folder or remove it.")
  config, tensors = open_source(source, cache)
  return orbax_io.save_tensors(destination, config, tensors, dtype, group_bytes)
