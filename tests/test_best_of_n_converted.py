"""The main job from a folder written by `python -m ec_jax.weights convert`, against its source.

The source is a Hugging Face checkpoint folder written here: the weights of the tiny random
Llama of `configs/best_of_n.py:tiny` as safetensors, plus the byte-level ChatML tokenizer of
`tiny_model` as tokenizer.json and tokenizer_config.json. The job runs once from that folder and
once from its conversion, and both runs must write the same records, selections and arrays.
"""

import json
import pathlib

import numpy as np
import pytest
from flax import nnx

from configs import best_of_n
from ec_jax import parallel
from ec_jax import text
from ec_jax.engine import checks
from ec_jax.engine import model_loading
from ec_jax.engine import run as run_lib
from ec_jax.engine import tiny_model
from ec_jax.model import params as params_lib
from ec_jax.model.testing import random_params
from ec_jax.weights import convert
from ec_jax.weights import embedded
from ec_jax.weights import orbax_io
from test_weights_hf import write_checkpoint

NUM_PROBLEMS = 2
NUM_SAMPLES = 4
MAX_NEW_TOKENS = 10
SHARD_NAMES = ("batch_0.npz",)
WEIGHT_SEED = 61


def write_tiny_source(folder: pathlib.Path) -> pathlib.Path:
  """Write the tiny Llama and the byte tokenizer as a Hugging Face checkpoint folder."""
  config = tiny_model.tiny_model_config("tiny:llama")
  write_checkpoint(folder, config, random_params(config, seed=WEIGHT_SEED), "llama")
  tokenizer = tiny_model.byte_tokenizer()
  tokenizer.backend.save(str(folder / "tokenizer.json"))
  tokenizer_config = {"eos_token": tiny_model.TURN_END, "add_bos_token": False,
                      "chat_template": tiny_model.CHATML_TEMPLATE}
  (folder / "tokenizer_config.json").write_text(json.dumps(tokenizer_config))
  return folder


def job_config(model: pathlib.Path, output_dir: pathlib.Path):
  config = best_of_n.get_config("tiny")
  config.model = str(model)
  config.output_dir = str(output_dir)
  config.num_problems = NUM_PROBLEMS
  config.num_samples = NUM_SAMPLES
  config.batch_problems = NUM_PROBLEMS
  config.max_new_tokens = MAX_NEW_TOKENS
  config.greedy = True
  config.prompt_bucket = 512
  return config


def read_lines(path: pathlib.Path) -> list[dict]:
  return [json.loads(line) for line in path.read_text("utf-8").splitlines()]


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
  """The source folder and its conversion."""
  root = tmp_path_factory.mktemp("converted")
  source = write_tiny_source(root / "source")
  converted = convert.convert(source, root / "orbax", group_bytes=0)
  return source, converted


@pytest.fixture(scope="module")
def runs(folders, tmp_path_factory):
  """Run folders of the job from the source and from the converted folder."""
  source, converted = folders
  root = tmp_path_factory.mktemp("runs")
  run_lib.run(job_config(source, root / "from_source"))
  run_lib.run(job_config(converted, root / "from_converted"))
  return root / "from_source", root / "from_converted"


def test_convert_stores_tokenizer(folders):
  source, converted = folders
  for name in ("model_config.json", "params", "tokenizer.json", "tokenizer_settings.json"):
    assert (converted / name).exists(), name
  expected = text.load_tokenizer(source)
  tokenizer = text.load_tokenizer(converted)
  assert tokenizer.source == str(converted)
  for attribute in ("bos_id", "eos_ids", "add_bos", "stop_ids", "chat_template",
                    "context_length", "vocab_size"):
    assert getattr(tokenizer, attribute) == getattr(expected, attribute), attribute
  prompt = tokenizer.render_chat("Natalia sold 48 clips. How many?")
  assert tokenizer.encode(prompt) == expected.encode(prompt)


def test_converted_folder_is_a_model_spec(folders):
  _, converted = folders
  assert embedded.resolve_model_spec(str(converted)) == converted
  assert model_loading.check_model_spec(str(converted)) == converted


def test_run_from_converted_folder_matches_source(runs):
  from_source, from_converted = runs
  records = read_lines(from_converted / "trajectories.jsonl")
  expected_records = read_lines(from_source / "trajectories.jsonl")
  assert len(expected_records) == NUM_PROBLEMS * NUM_SAMPLES
  assert [r["token_ids"] for r in records] == [r["token_ids"] for r in expected_records]
  assert records == expected_records

  assert read_lines(from_converted / "greedy.jsonl") == read_lines(from_source / "greedy.jsonl")
  selected = read_lines(from_converted / "selected.jsonl")
  assert selected
  assert selected == read_lines(from_source / "selected.jsonl")

  for name in SHARD_NAMES:
    with np.load(from_converted / "arrays" / name) as arrays, \
         np.load(from_source / "arrays" / name) as expected_arrays:
      assert sorted(arrays.files) == sorted(expected_arrays.files), name
      for key in expected_arrays.files:
        np.testing.assert_array_equal(arrays[key], expected_arrays[key], err_msg=f"{name} {key}")

  summary = json.loads((from_converted / "summary.json").read_text("utf-8"))
  expected_summary = json.loads((from_source / "summary.json").read_text("utf-8"))
  assert summary["methods"] == expected_summary["methods"]


def test_converted_weights_use_mesh_shardings(folders):
  source, converted = folders
  mesh = parallel.make_mesh(data=2, model=4)
  tokenizer = model_loading.load_tokenizer(str(converted))
  model = model_loading.load_model(str(converted), "float32", mesh, tokenizer)
  expected_model = model_loading.load_model(str(source), "float32", mesh,
                                            model_loading.load_tokenizer(str(source)))
  assert model.config == expected_model.config
  assert model.context_length == expected_model.context_length
  assert model.path == converted

  shardings = parallel.param_shardings(model.config, mesh)
  restored = params_lib.flatten_params(model.state)
  expected = params_lib.flatten_params(expected_model.state)
  assert set(restored) == set(shardings)
  for path, array in restored.items():
    assert array.sharding == shardings[path], path
    assert array.sharding == expected[path].sharding, path
    np.testing.assert_array_equal(np.asarray(array), np.asarray(expected[path]), str(path))


def test_load_model_casts_converted_weights(folders):
  _, converted = folders
  mesh = parallel.make_mesh(data=8, model=1)
  tokenizer = model_loading.load_tokenizer(str(converted))
  model = model_loading.load_model(str(converted), "bfloat16", mesh, tokenizer)
  assert model.config.param_dtype == "bfloat16"
  assert model.config.compute_dtype == "bfloat16"
  dtypes = {str(array.dtype) for array in params_lib.flatten_params(model.state).values()}
  assert dtypes == {"bfloat16"}
  # The folder itself stays float32.
  assert orbax_io.read_config(converted).param_dtype == "float32"


@pytest.mark.parametrize("write_folder", ["weights_only", "save_params"])
def test_folder_without_tokenizer_is_rejected(tmp_path, folders, write_folder):
  source, _ = folders
  folder = tmp_path / "no_tokenizer"
  if write_folder == "weights_only":
    convert.convert(source, folder, weights_only=True)
  else:
    config = tiny_model.tiny_model_config("tiny:llama")
    orbax_io.save_params(folder, config, random_params(config, seed=WEIGHT_SEED))
  assert not (folder / "tokenizer.json").exists()

  with pytest.raises(model_loading.ModelLoadError) as raised:
    model_loading.load_tokenizer(str(folder))
  message = str(raised.value)
  assert f"The converted folder {folder} is missing tokenizer.json" in message
  assert "python -m ec_jax.weights convert SOURCE DEST" in message

  config = job_config(folder, tmp_path / "run")
  problems = checks.resource_problems(config)
  assert len(problems) == 1
  assert problems[0].startswith(f"model = '{folder}' is invalid")
  assert "Convert the model again into a new folder" in problems[0]


def test_unfinished_conversion_is_rejected(tmp_path):
  folder = tmp_path / "unfinished"
  folder.mkdir()
  (folder / "model_config.json").write_text("{}")
  with pytest.raises(model_loading.ModelLoadError, match="has model_config.json but no params/"):
    model_loading.check_model_spec(str(folder))


def test_convert_rejects_converted_source(tmp_path, folders):
  _, converted = folders
  with pytest.raises(embedded.ModelSpecError, match="is already a converted folder"):
    convert.convert(converted, tmp_path / "again")
  assert not (tmp_path / "again").exists()
