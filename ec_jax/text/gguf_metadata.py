"""Key-value metadata of a GGUF file, read with the `gguf` package."""

from __future__ import annotations

import os
from typing import Any

import gguf


def read_gguf_metadata(path: os.PathLike[str] | str) -> dict[str, Any]:
  """Reads every key-value field of a GGUF file into plain Python values.

  Strings become `str`, numbers `int`/`float`/`bool`, arrays `list`. The `GGUF.*` header pseudo
  fields that `gguf.GGUFReader` adds (version, counts) are left out.

  Args:
    path: a GGUF file.

  Returns:
    `{key: value}` for the file's metadata, e.g. `tokenizer.ggml.tokens` -> `list[str]`.

  Raises:
    FileNotFoundError: the file does not exist.
    ValueError: the file is not a GGUF file (`gguf.GGUFReader` checks the magic number).
  """
  # NOTE: GGUFReader parses the whole header, tensor descriptions included, and builds one
  # numpy view per array element, so a 150k-token vocabulary takes several seconds to read.
  reader = gguf.GGUFReader(os.fspath(path))
  metadata: dict[str, Any] = {}
  for key, field in reader.fields.items():
    if key.startswith("GGUF."):
      continue
    metadata[key] = field.contents()
  return metadata
