"""Tokenizers built from GGUF metadata, a Hugging Face `tokenizer.json`, or a saved folder.

Each path produces a `tokenizers.Tokenizer` (the Rust library behind Hugging Face tokenizers)
wrapped in `Tokenizer`, which adds the model's BOS/EOS conventions, the stop set and the chat
template. `save_tokenizer` writes a `Tokenizer` to a folder as `tokenizer.json` plus
`tokenizer_settings.json` (the settings that `tokenizer.json` has no field for), and
`from_saved_folder` reads it back. `python -m ec_jax.weights convert` stores the tokenizer of a
converted model this way.

From GGUF, only byte-level BPE vocabularies (`tokenizer.ggml.model` = `gpt2`) are supported:
tokens, merges and token types come from the metadata, and the split before BPE comes from the
pre-tokenizer name (see `pre_tokenizers.py`). Control and user-defined tokens become added
tokens, matched whole in the input text before BPE; control tokens are marked special, so
`decode(..., skip_special_tokens=True)` drops them.
"""

from __future__ import annotations

import json
import os
import pathlib
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import gguf
import tokenizers
from tokenizers import decoders, models

from ec_jax.text import chat_template as chat_template_lib
from ec_jax.text import gguf_metadata
from ec_jax.text import pre_tokenizers


class TokenizerLoadError(ValueError):
  """Tokenizer files or metadata that cannot be turned into a tokenizer."""


# File names and format of a folder written by `save_tokenizer`.
SAVED_TOKENIZER_FILE = "tokenizer.json"
SAVED_SETTINGS_FILE = "tokenizer_settings.json"
SAVED_FORMAT_VERSION = 1
_SAVED_SETTINGS_KEYS = ("bos_id", "eos_ids", "add_bos", "chat_template", "context_length")


class Tokenizer:
  """A model's tokenizer: text <-> token ids, special ids, and the chat template.

  Attributes:
    backend: the underlying `tokenizers.Tokenizer`.
    bos_id: id of the BOS token, or None.
    eos_ids: the EOS ids from the metadata or configs, primary first.
    eos_id: the primary EOS id, or None.
    add_bos: whether `encode` prepends BOS by default (from metadata).
    stop_ids: ids that end generation, sorted (see `chat_template.stop_token_ids`).
    chat_template: Jinja2 source of the chat template, or None.
    context_length: the model's context length from the same metadata, or None.
    source: where the tokenizer was loaded from, for messages.
  """

  def __init__(
      self,
      backend: tokenizers.Tokenizer,
      *,
      bos_id: int | None,
      eos_ids: Sequence[int],
      add_bos: bool,
      chat_template: str | None,
      context_length: int | None = None,
      source: str = "",
  ):
    vocab_size = backend.get_vocab_size(with_added_tokens=True)
    for label, token_id in [("BOS", bos_id), *[("EOS", i) for i in eos_ids]]:
      if token_id is not None and not 0 <= token_id < vocab_size:
        raise TokenizerLoadError(
            f"{label} id {token_id} of {source} is outside the vocabulary [0, {vocab_size})."
        )
    if add_bos and bos_id is None:
      raise TokenizerLoadError(f"{source} sets add_bos but defines no BOS token.")
    self.backend = backend
    self.bos_id = bos_id
    self.eos_ids = tuple(int(i) for i in eos_ids)
    self.eos_id = self.eos_ids[0] if self.eos_ids else None
    self.add_bos = add_bos
    self.chat_template = chat_template
    self.context_length = context_length
    self.source = source
    self.stop_ids = chat_template_lib.stop_token_ids(eos_ids, chat_template, backend.token_to_id)

  @property
  def vocab_size(self) -> int:
    """Number of token ids, added tokens included."""
    return self.backend.get_vocab_size(with_added_tokens=True)

  @property
  def bos_token(self) -> str | None:
    return None if self.bos_id is None else self.backend.id_to_token(self.bos_id)

  @property
  def eos_token(self) -> str | None:
    return None if self.eos_id is None else self.backend.id_to_token(self.eos_id)

  def token_to_id(self, token: str) -> int | None:
    return self.backend.token_to_id(token)

  def id_to_token(self, token_id: int) -> str | None:
    return self.backend.id_to_token(token_id)

  def encode(self, text: str, *, add_bos: bool | None = None) -> list[int]:
    """Encodes text to token ids.

    Special-token text in `text` (e.g. `<|im_start|>`) becomes the special token's id.

    Args:
      text: the text to encode.
      add_bos: whether to prepend BOS; None uses the metadata default `self.add_bos`. BOS is not
        prepended when the encoded text already starts with it.
    """
    if not isinstance(text, str):
      raise TypeError(f"encode expects a str, got {type(text).__name__}.")
    ids = self.backend.encode(text, add_special_tokens=False).ids
    if self.add_bos if add_bos is None else add_bos:
      if self.bos_id is None:
        raise ValueError(f"add_bos=True but {self.source} defines no BOS token.")
      if not ids or ids[0] != self.bos_id:
        ids = [self.bos_id, *ids]
    return ids

  def decode(self, ids: Iterable[int], *, skip_special_tokens: bool = False) -> str:
    """Decodes token ids to text.

    Args:
      ids: token ids; numpy integer arrays are accepted.
      skip_special_tokens: whether to drop control tokens such as `<|im_end|>`.

    Raises:
      ValueError: an id outside `[0, vocab_size)`.
    """
    id_list = [int(i) for i in ids]
    vocab_size = self.vocab_size
    for token_id in id_list:
      if not 0 <= token_id < vocab_size:
        raise ValueError(
            f"Token id {token_id} is outside the vocabulary [0, {vocab_size}) of {self.source}."
        )
    return self.backend.decode(id_list, skip_special_tokens=skip_special_tokens)

  def render_chat(
      self, messages: str | chat_template_lib.Messages, *, add_generation_prompt: bool = True
  ) -> str:
    """Renders messages with the model's chat template (see `chat_template.render_chat_template`).

    Raises:
      ChatTemplateError: the model has no chat template, or rendering failed.
    """
    if not self.chat_template:
      raise chat_template_lib.ChatTemplateError(
          f"{self.source} has no chat template; encode raw text with encode(), or use a chat model."
      )
    return chat_template_lib.render_chat_template(
        self.chat_template,
        messages,
        bos_token=self.bos_token,
        eos_token=self.eos_token,
        add_generation_prompt=add_generation_prompt,
    )

  def encode_prompt(
      self,
      messages: str | chat_template_lib.Messages,
      max_new_tokens: int,
      context_length: int | None = None,
  ) -> list[int]:
    """Renders and encodes a chat prompt, checking it fits (see `chat_template.encode_prompt`).

    Args:
      messages: chat messages, or a string for one user message.
      max_new_tokens: the number of tokens to be generated after the prompt.
      context_length: the model's context length; None uses `self.context_length`.
    """
    if context_length is None:
      context_length = self.context_length
    if context_length is None:
      raise ValueError(f"{self.source} records no context length; pass context_length.")
    return chat_template_lib.encode_prompt(self, messages, max_new_tokens, context_length)


def _parse_merges(merges: Sequence[str], source: str) -> list[tuple[str, str]]:
  pairs = []
  for index, merge in enumerate(merges):
    parts = merge.split(" ")
    if len(parts) != 2 or not all(parts):
      raise TokenizerLoadError(
          f"Merge {index} of {source} is {merge!r}; expected two tokens separated by one space."
      )
    pairs.append((parts[0], parts[1]))
  return pairs


def _build_vocab(tokens: Sequence[str], source: str) -> dict[str, int]:
  vocab: dict[str, int] = {}
  for token_id, token in enumerate(tokens):
    if token in vocab:
      raise TokenizerLoadError(
          f"Token {token!r} appears twice in {source} (ids {vocab[token]} and {token_id}); "
          "a BPE vocabulary needs unique tokens."
      )
    vocab[token] = token_id
  return vocab


def from_gguf_metadata(metadata: Mapping[str, Any], source: str = "GGUF metadata") -> Tokenizer:
  """Builds a tokenizer from GGUF key-value metadata (see `gguf_metadata.read_gguf_metadata`).

  Args:
    metadata: GGUF metadata with at least `tokenizer.ggml.model` = `gpt2`,
      `tokenizer.ggml.tokens`, `tokenizer.ggml.merges` and `tokenizer.ggml.pre`.
    source: name of the file, for messages.

  Raises:
    TokenizerLoadError: an unsupported tokenizer model, missing or inconsistent fields.
    UnknownPreTokenizerError: a `tokenizer.ggml.pre` name outside the supported table.
  """
  keys = gguf.Keys.Tokenizer
  model_type = metadata.get(keys.MODEL)
  if model_type != "gpt2":
    raise TokenizerLoadError(
        f"{source} has tokenizer model {model_type!r} ({keys.MODEL}); only byte-level BPE ('gpt2') "
        "is read from GGUF metadata. Load the model's tokenizer.json instead."
    )
  for key in (keys.LIST, keys.MERGES, keys.PRE):
    if key not in metadata:
      raise TokenizerLoadError(f"{source} lacks the metadata field {key}.")
  rule = pre_tokenizers.get_rule(metadata[keys.PRE])

  tokens: list[str] = list(metadata[keys.LIST])
  token_types = list(metadata.get(keys.TOKEN_TYPE, [int(gguf.TokenType.NORMAL)] * len(tokens)))
  if len(token_types) != len(tokens):
    raise TokenizerLoadError(
        f"{source} has {len(tokens)} tokens but {len(token_types)} token types."
    )

  bpe = models.BPE(
      vocab=_build_vocab(tokens, source),
      merges=_parse_merges(metadata[keys.MERGES], source),
      ignore_merges=rule.ignore_merges,
  )
  backend = tokenizers.Tokenizer(bpe)
  backend.pre_tokenizer = pre_tokenizers.build_pre_tokenizer(rule)
  backend.decoder = decoders.ByteLevel()

  added = []
  for token_id, (token, token_type) in enumerate(zip(tokens, token_types)):
    if token_type in (gguf.TokenType.CONTROL, gguf.TokenType.USER_DEFINED) and token:
      added.append(
          (
              token_id,
              tokenizers.AddedToken(
                  token, special=token_type == gguf.TokenType.CONTROL, normalized=False
              ),
          )
      )
  backend.add_tokens([token for _, token in added])
  for token_id, token in added:
    if backend.token_to_id(token.content) != token_id:
      raise TokenizerLoadError(
          f"Added token {token.content!r} of {source} did not keep its id {token_id}."
      )

  eos_ids = [metadata[key] for key in (keys.EOS_ID, keys.EOT_ID) if key in metadata]
  architecture = metadata.get("general.architecture")
  context_length = metadata.get(f"{architecture}.context_length") if architecture else None
  return Tokenizer(
      backend,
      bos_id=metadata.get(keys.BOS_ID),
      eos_ids=eos_ids,
      add_bos=bool(metadata.get(keys.ADD_BOS, rule.add_bos)),
      chat_template=metadata.get(keys.CHAT_TEMPLATE),
      context_length=int(context_length) if context_length is not None else None,
      source=source,
  )


def from_gguf(path: os.PathLike[str] | str) -> Tokenizer:
  """Builds the tokenizer of a GGUF file from its metadata (see `from_gguf_metadata`)."""
  path = pathlib.Path(path)
  if not path.is_file():
    raise FileNotFoundError(f"GGUF file {path} does not exist.")
  return from_gguf_metadata(gguf_metadata.read_gguf_metadata(path), source=str(path))


def _read_json(path: pathlib.Path) -> dict[str, Any]:
  if not path.is_file():
    return {}
  with open(path, encoding="utf-8") as f:
    return json.load(f)


def _token_text(value: Any) -> str | None:
  """Returns the text of a special-token entry of tokenizer_config.json (str or AddedToken dict)."""
  if isinstance(value, Mapping):
    value = value.get("content")
  return value if isinstance(value, str) else None


def _as_id_list(value: Any) -> list[int]:
  if value is None:
    return []
  if isinstance(value, int):
    return [value]
  return [int(v) for v in value]


def _config_chat_template(folder: pathlib.Path, tokenizer_config: Mapping[str, Any]) -> str | None:
  template = tokenizer_config.get("chat_template")
  if isinstance(template, list):
    # A list of named templates; the one named "default" is the chat template.
    named = {
        entry.get("name"): entry.get("template") for entry in template if isinstance(entry, Mapping)
    }
    template = named.get("default")
  if template is None and (folder / "chat_template.jinja").is_file():
    template = (folder / "chat_template.jinja").read_text(encoding="utf-8")
  return template


def from_hf_folder(
    folder: os.PathLike[str] | str, tokenizer_file: os.PathLike[str] | str | None = None
) -> Tokenizer:
  """Builds a tokenizer from a Hugging Face checkpoint folder.

  Reads `tokenizer.json` (or `tokenizer_file`) and, when present, `tokenizer_config.json`
  (BOS/EOS tokens, `add_bos_token`, `chat_template`), `chat_template.jinja`,
  `generation_config.json` and `config.json` (EOS ids, `max_position_embeddings`).

  When `tokenizer_config.json` does not say whether to add BOS, the tokenizer's own
  post-processor decides: BOS is added if encoding with special tokens prepends it.
  """
  folder = pathlib.Path(folder)
  tokenizer_path = (
      pathlib.Path(tokenizer_file) if tokenizer_file is not None else folder / "tokenizer.json"
  )
  if not tokenizer_path.is_file():
    raise FileNotFoundError(f"Tokenizer file {tokenizer_path} does not exist.")
  backend = tokenizers.Tokenizer.from_file(str(tokenizer_path))
  tokenizer_config = _read_json(folder / "tokenizer_config.json")
  generation_config = _read_json(folder / "generation_config.json")
  model_config = _read_json(folder / "config.json")

  def token_id(text: str | None) -> int | None:
    if text is None:
      return None
    found = backend.token_to_id(text)
    if found is None:
      raise TokenizerLoadError(
          f"Special token {text!r} of {folder} is not in the vocabulary of {tokenizer_path}."
      )
    return found

  bos_id = token_id(_token_text(tokenizer_config.get("bos_token")))
  if bos_id is None:
    bos_id = generation_config.get("bos_token_id", model_config.get("bos_token_id"))

  eos_ids: list[int] = []
  for candidate in [
      token_id(_token_text(tokenizer_config.get("eos_token"))),
      *_as_id_list(generation_config.get("eos_token_id")),
      *_as_id_list(model_config.get("eos_token_id")),
  ]:
    if candidate is not None and candidate not in eos_ids:
      eos_ids.append(candidate)

  add_bos = tokenizer_config.get("add_bos_token")
  if add_bos is None:
    with_special = backend.encode("a", add_special_tokens=True).ids
    without = backend.encode("a", add_special_tokens=False).ids
    add_bos = bos_id is not None and len(with_special) > len(without) and with_special[0] == bos_id

  context_length = model_config.get("max_position_embeddings")
  return Tokenizer(
      backend,
      bos_id=bos_id,
      eos_ids=eos_ids,
      add_bos=bool(add_bos),
      chat_template=_config_chat_template(folder, tokenizer_config),
      context_length=int(context_length) if context_length is not None else None,
      source=str(tokenizer_path),
  )


def has_saved_tokenizer(folder: os.PathLike[str] | str) -> bool:
  """Returns whether `folder` contains the files that `save_tokenizer` writes."""
  folder = pathlib.Path(folder)
  return (folder / SAVED_SETTINGS_FILE).is_file() and (folder / SAVED_TOKENIZER_FILE).is_file()


def save_tokenizer(tokenizer: Tokenizer, folder: os.PathLike[str] | str) -> None:
  """Writes `tokenizer.json` and `tokenizer_settings.json` into an existing folder.

  `tokenizer.json` is the backend as `tokenizers.Tokenizer.save` writes it. The settings file
  stores what `Tokenizer` adds to the backend: BOS and EOS ids, `add_bos`, the chat template and
  the context length, plus the tokenizer's `source` for reference. The stop ids are not stored,
  because `from_saved_folder` derives them from the EOS ids and the template as every other
  loader does.

  Raises:
    FileExistsError: the folder already contains one of the two files.
  """
  folder = pathlib.Path(folder)
  for name in (SAVED_TOKENIZER_FILE, SAVED_SETTINGS_FILE):
    if (folder / name).exists():
      raise FileExistsError(f"{folder / name} already exists; save the tokenizer to a new folder.")
  settings = {
      "format_version": SAVED_FORMAT_VERSION,
      "bos_id": tokenizer.bos_id,
      "eos_ids": list(tokenizer.eos_ids),
      "add_bos": tokenizer.add_bos,
      "chat_template": tokenizer.chat_template,
      "context_length": tokenizer.context_length,
      "source": tokenizer.source,
  }
  tokenizer.backend.save(str(folder / SAVED_TOKENIZER_FILE))
  with open(folder / SAVED_SETTINGS_FILE, "w", encoding="utf-8") as f:
    json.dump(settings, f, indent=2, ensure_ascii=False)
    f.write("\n")


def _optional_int(settings: Mapping[str, Any], key: str, path: pathlib.Path) -> int | None:
  value = settings[key]
  if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
    raise TokenizerLoadError(f"{key} in {path} must be an integer or null, got {value!r}.")
  return value


def from_saved_folder(folder: os.PathLike[str] | str) -> Tokenizer:
  """Builds the tokenizer that `save_tokenizer` wrote into `folder`.

  Raises:
    FileNotFoundError: a file of the pair is missing.
    TokenizerLoadError: the settings file is not valid JSON, lacks a field, has a field of the
      wrong type, or has a format version other than `SAVED_FORMAT_VERSION`.
  """
  folder = pathlib.Path(folder)
  settings_path = folder / SAVED_SETTINGS_FILE
  tokenizer_path = folder / SAVED_TOKENIZER_FILE
  for path in (settings_path, tokenizer_path):
    if not path.is_file():
      raise FileNotFoundError(f"Tokenizer file {path} does not exist.")
  try:
    settings = json.loads(settings_path.read_text(encoding="utf-8"))
  except json.JSONDecodeError as e:
    raise TokenizerLoadError(f"{settings_path} is not valid JSON: {e}") from e
  if not isinstance(settings, dict):
    raise TokenizerLoadError(f"{settings_path} must contain a JSON object.")
  version = settings.get("format_version")
  if version != SAVED_FORMAT_VERSION:
    raise TokenizerLoadError(
        f"{settings_path} has format_version {version!r}; this ec_jax reads version "
        f"{SAVED_FORMAT_VERSION}. Save the tokenizer again with this version of ec_jax."
    )
  missing = [key for key in _SAVED_SETTINGS_KEYS if key not in settings]
  if missing:
    raise TokenizerLoadError(f"{settings_path} lacks the fields {missing}.")
  eos_ids = settings["eos_ids"]
  if not isinstance(eos_ids, list) or not all(
      isinstance(i, int) and not isinstance(i, bool) for i in eos_ids
  ):
    raise TokenizerLoadError(f"eos_ids in {settings_path} must be a list of integers.")
  if not isinstance(settings["add_bos"], bool):
    raise TokenizerLoadError(f"add_bos in {settings_path} must be true or false.")
  chat_template = settings["chat_template"]
  if chat_template is not None and not isinstance(chat_template, str):
    raise TokenizerLoadError(f"chat_template in {settings_path} must be a string or null.")
  return Tokenizer(
      tokenizers.Tokenizer.from_file(str(tokenizer_path)),
      bos_id=_optional_int(settings, "bos_id", settings_path),
      eos_ids=eos_ids,
      add_bos=settings["add_bos"],
      chat_template=chat_template,
      context_length=_optional_int(settings, "context_length", settings_path),
      source=str(folder),
  )


def load_tokenizer(path: os.PathLike[str] | str) -> Tokenizer:
  """Loads the tokenizer of a model path.

  Args:
    path: a `.gguf` file, a folder written by `save_tokenizer`, a Hugging Face checkpoint folder,
      or a `tokenizer.json` file (its folder's config files are read too).
      `ec_jax.weights.embedded.resolve_model_spec` turns a config's `model` value into such a
      path.

  Raises:
    FileNotFoundError: the path does not exist.
    TokenizerLoadError: the path is neither of the above.
  """
  path = pathlib.Path(path)
  if path.is_dir():
    if has_saved_tokenizer(path):
      return from_saved_folder(path)
    return from_hf_folder(path)
  if not path.exists():
    raise FileNotFoundError(f"Tokenizer path {path} does not exist.")
  if path.suffix == ".gguf":
    return from_gguf(path)
  if path.suffix == ".json":
    return from_hf_folder(path.parent, tokenizer_file=path)
  raise TokenizerLoadError(
      f"Cannot load a tokenizer from {path}: expected a .gguf file, a tokenizer.json or a "
      "checkpoint folder."
  )
