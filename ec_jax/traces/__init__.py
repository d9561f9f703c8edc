"""Trace import (reference and vLLM-style files), ec_jax's record files, and packing.

NumPy only: nothing here imports JAX. The record format is described in FORMAT.md.
"""

from ec_jax.traces.batch import group_by_problem
from ec_jax.traces.batch import group_packed
from ec_jax.traces.batch import pack
from ec_jax.traces.batch import PackedTraces
from ec_jax.traces.batch import ProblemGroups
from ec_jax.traces.detect import detect_format
from ec_jax.traces.detect import iter_traces
from ec_jax.traces.detect import load_traces
from ec_jax.traces.detect import LoadedTraces
from ec_jax.traces.detect import read_traces
from ec_jax.traces.labels import attach_labels
from ec_jax.traces.labels import find_labels_file
from ec_jax.traces.labels import LabelMatch
from ec_jax.traces.labels import read_evaluation_cache
from ec_jax.traces.labels import read_labels
from ec_jax.traces.records import JsonlWriter
from ec_jax.traces.records import read_jsonl
from ec_jax.traces.records import to_json_value
from ec_jax.traces.records import write_json_atomic
from ec_jax.traces.run_folder import read_run_folder
from ec_jax.traces.shards import read_shard
from ec_jax.traces.shards import shard_path
from ec_jax.traces.shards import write_npz
from ec_jax.traces.shards import write_shard
from ec_jax.traces.trajectory import TraceFormatError
from ec_jax.traces.trajectory import Trajectory

__all__ = [
    "attach_labels",
    "detect_format",
    "find_labels_file",
    "group_by_problem",
    "group_packed",
    "iter_traces",
    "JsonlWriter",
    "LabelMatch",
    "load_traces",
    "LoadedTraces",
    "pack",
    "PackedTraces",
    "ProblemGroups",
    "read_evaluation_cache",
    "read_jsonl",
    "read_labels",
    "read_run_folder",
    "read_shard",
    "read_traces",
    "shard_path",
    "to_json_value",
    "TraceFormatError",
    "Trajectory",
    "write_json_atomic",
    "write_npz",
    "write_shard",
]
