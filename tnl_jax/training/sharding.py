"""The device mesh and the one table that maps logical axis names to its axes.

Parameters carry logical names (`nnx.with_partitioning`); arrays of the batch are
split over `batch`. With `fsdp` the weights' `embed` axis is split as well (ZeRO-3
style: XLA gathers a layer's weights when it needs them); with `tensor`, heads,
MLP width and vocabulary are split (Megatron style). A dimension that the mesh
axis does not divide is replicated instead, with a warning.
"""
from __future__ import annotations

import math
import os
import warnings
from typing import Any

import jax
import numpy as np
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

MESH_AXES = ("data", "fsdp", "tensor")

LOGICAL_AXIS_RULES: tuple[tuple[str, Any], ...] = (
    ("batch", ("data", "fsdp")),
    ("vocab", "tensor"),
    ("embed", "fsdp"),
    ("heads", "tensor"),
    ("mlp", "tensor"),
    ("layers", None),
    ("seq", None),
)


DISTRIBUTED_VARIABLES = ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID")


def maybe_initialize_distributed() -> None:
    """Joins a multi-process run when the environment describes one.

    Under SLURM (`srun`, more than one task) `jax.distributed.initialize()` reads
    SLURM's variables itself. Elsewhere every process is started with
    JAX_COORDINATOR_ADDRESS (host:port of process 0), JAX_NUM_PROCESSES and
    JAX_PROCESS_ID, which are passed on here (jax reads only the first of them). A
    single process needs nothing.
    """
    if jax.distributed.is_initialized():
        return
    given = {name: os.environ[name] for name in DISTRIBUTED_VARIABLES if name in os.environ}
    if given:
        missing = [name for name in DISTRIBUTED_VARIABLES if name not in given]
        if missing:
            raise ValueError(f"a multi-process run needs all of {DISTRIBUTED_VARIABLES}; "
                             f"{', '.join(missing)} not set (got {given})")
        try:
            count, index = int(given["JAX_NUM_PROCESSES"]), int(given["JAX_PROCESS_ID"])
        except ValueError:
            raise ValueError(f"JAX_NUM_PROCESSES and JAX_PROCESS_ID must be integers, got "
                             f"{given}") from None
        if not 0 <= index < count:
            raise ValueError(f"JAX_PROCESS_ID={index} must be in [0, JAX_NUM_PROCESSES={count})")
        jax.distributed.initialize(given["JAX_COORDINATOR_ADDRESS"], num_processes=count,
                                   process_id=index)
    elif int(os.environ.get("SLURM_NTASKS", "1")) > 1:
        jax.distributed.initialize()


def mesh_shape(data: int, fsdp: int, tensor: int, device_count: int) -> tuple[int, int, int]:
    """Axis sizes with one -1 resolved to the devices left; their product must be all devices."""
    sizes = [data, fsdp, tensor]
    if sizes.count(-1) > 1:
        raise ValueError(f"mesh: at most one axis may be -1, got {dict(zip(MESH_AXES, sizes))}")
    known = math.prod(s for s in sizes if s != -1)
    if -1 in sizes:
        if device_count % known:
            raise ValueError(f"mesh: {device_count} devices do not split into "
                             f"{dict(zip(MESH_AXES, sizes))}")
        sizes[sizes.index(-1)] = device_count // known
    if math.prod(sizes) != device_count:
        raise ValueError(f"mesh {dict(zip(MESH_AXES, sizes))} needs {math.prod(sizes)} devices, "
                         f"have {device_count}")
    return tuple(sizes)


def make_mesh(data: int = -1, fsdp: int = 1, tensor: int = 1) -> Mesh:
    """A mesh over every device of every process (GSPMD-style `Auto` axes)."""
    shape = mesh_shape(data, fsdp, tensor, jax.device_count())
    return jax.make_mesh(shape, MESH_AXES, axis_types=(jax.sharding.AxisType.Auto,) * 3)


def _mesh_axes_of(logical: str | None) -> Any:
    if logical is None:
        return None
    for name, mesh_axes in LOGICAL_AXIS_RULES:
        if name == logical:
            return mesh_axes
    raise ValueError(f"logical axis {logical!r} has no rule in LOGICAL_AXIS_RULES")


def spec_for(logical: tuple[str | None, ...], shape: tuple[int, ...], mesh: Mesh) -> P:
    """The mesh PartitionSpec of an array with these logical axis names."""
    out = []
    for name, size in zip(logical, shape):
        axes = _mesh_axes_of(name)
        parts = math.prod(mesh.shape[a] for a in ((axes,) if isinstance(axes, str) else axes or ()))
        if axes is not None and size % parts:
            warnings.warn(f"dimension '{name}' of size {size} is not divisible by mesh axes "
                          f"{axes} ({parts}); replicating it")
            axes = None
        out.append(axes)
    return P(*out)


def param_shardings(params: nnx.State, mesh: Mesh) -> nnx.State:
    """NamedShardings for a state of annotated parameters (unannotated: replicated)."""
    logical = nnx.get_partition_spec(params)
    return jax.tree.map(lambda spec, x: NamedSharding(mesh, spec_for(tuple(spec), x.shape, mesh)),
                        logical, params)


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Rows over the data-parallel axes; the sequence stays whole on each device."""
    return NamedSharding(mesh, P(_mesh_axes_of("batch"), None))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def global_batch(local: dict[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
    """This process's rows -> one global array per key, split over the batch axes."""
    sharding = batch_sharding(mesh)
    return {k: jax.make_array_from_process_local_data(sharding, v) for k, v in local.items()}
