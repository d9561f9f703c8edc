"""Device mesh, logical-axis sharding, multi-process start-up and gathering.

Importing this package starts no JAX backend; `initialize()` must run before any device use.
The memory calculator is `python -m ec_jax.parallel.memory`, and `python -m
ec_jax.parallel.selfcheck` checks a multi-process set-up (see docs/multihost.md).
"""

from ec_jax.parallel.distributed import (
    PrimaryProcessError,
    StartupPlan,
    broadcast_from_primary,
    gather_to_host,
    global_array_from_local,
    initialize,
    is_primary,
    local_row_slice,
    log_runtime,
    plan_startup,
    run_on_primary,
    runtime_summary,
)
from ec_jax.parallel.mesh import (
    DATA_AXIS,
    LOGICAL_AXIS_RULES,
    MODEL_AXIS,
    batch_sharding,
    cache_sharding,
    check_model_axis,
    describe_mesh,
    logical_sharding,
    logical_to_spec,
    make_mesh,
    mesh_from_config,
    pad_rows,
    param_shardings,
    resolve_mesh_shape,
)

__all__ = [
    "DATA_AXIS",
    "LOGICAL_AXIS_RULES",
    "MODEL_AXIS",
    "PrimaryProcessError",
    "StartupPlan",
    "batch_sharding",
    "broadcast_from_primary",
    "cache_sharding",
    "check_model_axis",
    "describe_mesh",
    "gather_to_host",
    "global_array_from_local",
    "initialize",
    "is_primary",
    "local_row_slice",
    "log_runtime",
    "logical_sharding",
    "logical_to_spec",
    "make_mesh",
    "mesh_from_config",
    "pad_rows",
    "param_shardings",
    "plan_startup",
    "resolve_mesh_shape",
    "run_on_primary",
    "runtime_summary",
]
