"""The device mesh, the placement of parameters and batches, and joining a
multi-process run.

The mesh axes and the one table of logical-axis rules live in ``tnl_jax.partitioning``
(the model reads them too; see there why the axes are ordered data, fsdp, context,
tensor). Parameters carry logical names (``nnx.with_partitioning``); a batch's rows
are split over ``batch`` (data, fsdp) and its sequence over ``seq`` (context). With
``fsdp`` the weights' ``embed`` axis is split as well (ZeRO-3 style: XLA gathers a
layer's weights when it needs them); with ``tensor``, heads, MLP width and vocabulary
are split (Megatron style). A parameter dimension that the mesh axis does not divide
is replicated instead, with a warning.
"""
from __future__ import annotations

import functools
import math
import os

import jax
import numpy as np
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from tnl_jax.partitioning import LOGICAL_AXIS_RULES, MESH_AXES, mesh_axes, spec_for
from tnl_jax.training.config_checks import batch_split_problems, mesh_problems, raise_problems

__all__ = ["LOGICAL_AXIS_RULES", "MESH_AXES", "batch_sharding", "check_batch", "global_batch",
           "make_mesh", "maybe_initialize_distributed", "mesh_shape", "param_shardings",
           "process_rows", "replicated", "spec_for"]

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


def mesh_shape(data: int, fsdp: int, context: int, tensor: int,
               device_count: int) -> tuple[int, ...]:
    """Axis sizes (in ``MESH_AXES`` order) with one -1 resolved to the devices left;
    their product must be all devices."""
    sizes = [data, fsdp, context, tensor]
    named = lambda: dict(zip(MESH_AXES, sizes))
    raise_problems(mesh_problems(named()), "mesh")
    known = math.prod(s for s in sizes if s != -1)
    if -1 in sizes:
        if device_count % known:
            raise ValueError(f"mesh: {device_count} devices do not split into {named()}")
        sizes[sizes.index(-1)] = device_count // known
    if math.prod(sizes) != device_count:
        raise ValueError(f"mesh {named()} needs {math.prod(sizes)} devices, have {device_count}")
    return tuple(sizes)


def make_mesh(data: int = -1, fsdp: int = 1, context: int = 1, tensor: int = 1) -> Mesh:
    """A mesh over every device of every process (GSPMD-style ``Auto`` axes)."""
    shape = mesh_shape(data, fsdp, context, tensor, jax.device_count())
    return jax.make_mesh(shape, MESH_AXES,
                         axis_types=(jax.sharding.AxisType.Auto,) * len(MESH_AXES))


def param_shardings(params: nnx.State, mesh: Mesh) -> nnx.State:
    """NamedShardings for a state of annotated parameters (unannotated: replicated)."""
    logical = nnx.get_partition_spec(params)
    return jax.tree.map(lambda spec, x: NamedSharding(mesh, spec_for(tuple(spec), x.shape, mesh)),
                        logical, params)


def _entry(axes: tuple[str, ...]):
    return None if not axes else axes[0] if len(axes) == 1 else axes


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """A batch array ``(B, T)``: rows over the ``batch`` axes (data, fsdp), the sequence
    over the ``seq`` axis (context)."""
    return NamedSharding(mesh, P(_entry(mesh_axes("batch")), _entry(mesh_axes("seq"))))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


@functools.lru_cache(maxsize=None)
def process_rows(mesh: Mesh) -> tuple[int, int]:
    """``(index, count)``: this process loads row group ``index`` of ``count``, a
    ``1/count`` share of the global batch (``count`` is the process count when the
    processes split the rows; processes that hold the same rows, the sequence being
    split over ``context`` across them, share a group and load the same rows)."""
    sharding = batch_sharding(mesh)
    shape = tuple(math.prod(mesh.shape[a] for a in mesh_axes(name)) for name in ("batch", "seq"))
    rows: dict[int, set[int]] = {}
    for device, index in sharding.devices_indices_map(shape).items():
        rows.setdefault(device.process_index, set()).update(range(shape[0])[index[0]])
    groups = sorted({tuple(sorted(r)) for r in rows.values()})
    if sum(len(g) for g in groups) != shape[0]:
        raise ValueError(f"mesh {dict(mesh.shape)}: processes hold overlapping row sets "
                         f"{groups}; give data x fsdp a multiple of the process count")
    return groups.index(tuple(sorted(rows[jax.process_index()]))), len(groups)


def check_batch(batch_size: int, seq_len: int, grad_accum: int, mesh: Mesh) -> None:
    """A ``ValueError`` naming the setting unless the mesh splits the batch evenly
    (checked once the mesh is made, before anything compiles)."""
    raise_problems(batch_split_problems(
        batch_size, seq_len, grad_accum,
        batch_shards=math.prod(mesh.shape[a] for a in mesh_axes("batch")),
        seq_shards=math.prod(mesh.shape[a] for a in mesh_axes("seq")),
        process_groups=process_rows(mesh)[1]), f"mesh {dict(mesh.shape)}")


def global_batch(local: dict[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
    """This process's rows (whole sequences) -> one global array per key, rows split
    over the batch axes and sequences over the context axis."""
    sharding, count = batch_sharding(mesh), process_rows(mesh)[1]
    return {k: jax.make_array_from_process_local_data(
                sharding, v, (v.shape[0] * count, *v.shape[1:]))
            for k, v in local.items()}
