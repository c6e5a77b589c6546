"""Logical axis names -> mesh axes: one table for parameters and activations.

The model names the dimensions of its weights and of its main activations; this table
says which mesh axes split each name (MaxText style). The model reads it here (no
import of the training code) and constrains its activations only when a mesh is set
(``jax.set_mesh``): without one every helper is a no-op, so the blocks run unsharded
on one device, as a user who imports them expects.

The mesh axes, outermost first (the order ``training.sharding.make_mesh`` builds):

- ``data``: rows; one gradient reduction per step (the least frequent collective).
- ``fsdp``: rows too, and the weights' ``embed`` dimension (ZeRO-3): a layer's
  weights are gathered when it runs, a collective that overlaps with compute.
- ``context``: the sequence (context parallelism). Linear attention needs one
  state-sized gather per layer (LASP-2), but it sits on the layer's critical path, so
  it goes inside the data axes, onto the fast links of a host.
- ``tensor``: heads, MLP width, vocabulary (Megatron style); activation-sized
  collectives in every layer, so innermost (neighbouring devices).

Processes split the outer axes first, so each host loads rows of its own, whole, as
long as ``data × fsdp`` is a multiple of the hosts.
"""
from __future__ import annotations

import math
import warnings
from typing import Any, Iterable

import jax
from jax.sharding import NamedSharding, PartitionSpec as P

MESH_AXES = ("data", "fsdp", "context", "tensor")

# Parameters: vocab, embed, heads, mlp, layers. Activations: batch, seq and
# act_embed (the model width of the residual stream: replicated, so that FSDP's
# `embed` split of the weights never gathers activations); their head, MLP and
# vocabulary dimensions use `heads`, `mlp` and `vocab`, split like the weights.
LOGICAL_AXIS_RULES: tuple[tuple[str, Any], ...] = (
    ("batch", ("data", "fsdp")),
    ("seq", "context"),
    ("act_embed", None),
    ("vocab", "tensor"),
    ("embed", "fsdp"),
    ("heads", "tensor"),
    ("mlp", "tensor"),
    ("layers", None),
)

Logical = tuple[str | None, ...]
# The residual stream (B, T, d): rows over the data axes, the sequence over context.
ACTIVATION: Logical = ("batch", "seq", "act_embed")


def mesh_axes(logical: str | None) -> tuple[str, ...]:
    """The mesh axes that split the logical axis ``logical`` (``()``: none)."""
    if logical is None:
        return ()
    for name, axes in LOGICAL_AXIS_RULES:
        if name == logical:
            return () if axes is None else (axes,) if isinstance(axes, str) else tuple(axes)
    raise ValueError(f"logical axis {logical!r} has no rule in LOGICAL_AXIS_RULES "
                     f"(known: {[name for name, _ in LOGICAL_AXIS_RULES]})")


def spec_for(logical: Logical, shape: tuple[int, ...], mesh: Any, *,
             usable: Iterable[str] | None = None, warn: bool = True) -> P:
    """The PartitionSpec of an array of ``shape`` whose dimensions are named ``logical``.

    Mesh axes the mesh lacks (or not in ``usable``) and axes an earlier dimension took
    are left out; a dimension that its axes do not divide is replicated (with a
    warning if ``warn``).
    """
    if len(logical) != len(shape):
        raise ValueError(f"logical axes {logical} do not match shape {shape}")
    allowed = set(mesh.axis_names if usable is None else usable) & set(mesh.axis_names)
    taken: set[str] = set()
    out = []
    for name, size in zip(logical, shape):
        axes = tuple(a for a in mesh_axes(name) if a in allowed and a not in taken)
        parts = math.prod(mesh.shape[a] for a in axes)
        if axes and size % parts:
            if warn:
                warnings.warn(f"dimension '{name}' of size {size} is not divisible by mesh "
                              f"axes {axes} ({parts}); replicating it")
            axes = ()
        taken.update(axes)
        out.append(None if not axes else axes[0] if len(axes) == 1 else axes)
    return P(*out)


def _auto_mesh():
    """The current mesh if the model may constrain over it, else None: no mesh set, or
    one with ``Explicit`` axes (there the sharding is in the types and the model
    follows its inputs). Inside a ``shard_map`` only its ``Auto`` axes are usable."""
    mesh = jax.sharding.get_abstract_mesh()
    if mesh.empty or mesh.explicit_axes or not mesh.auto_axes:
        return None
    return mesh


def constrain(x: jax.Array, logical: Logical) -> jax.Array:
    """``x`` constrained to the sharding of its logical axes on the current mesh; ``x``
    itself when no mesh is set. A concrete ``x`` (a parameter created under the mesh)
    is placed so."""
    mesh = _auto_mesh()
    if mesh is None:
        return x
    spec = spec_for(logical, x.shape, mesh, usable=mesh.auto_axes, warn=False)
    sharding = NamedSharding(mesh, spec)
    if not isinstance(x, jax.core.Tracer):  # The abstract mesh's devices: known in jit.
        return _placed(x, sharding)
    return jax.lax.with_sharding_constraint(x, sharding)


_placed = jax.jit(jax.lax.with_sharding_constraint, static_argnums=1)


def split_axes(logical: Logical, shape: tuple[int, ...]) -> tuple[tuple[str, ...], ...] | None:
    """Per dimension, the mesh axes (of size > 1) that split it on the current mesh;
    ``None`` when no mesh is set (see ``constrain``)."""
    mesh = _auto_mesh()
    if mesh is None:
        return None
    spec = spec_for(logical, shape, mesh, usable=mesh.auto_axes, warn=False)
    entries = (() if e is None else (e,) if isinstance(e, str) else tuple(e) for e in spec)
    return tuple(tuple(a for a in axes if mesh.shape[a] > 1) for axes in entries)


def shard_counts(logical: Logical, shape: tuple[int, ...]) -> tuple[int, ...]:
    """Per dimension, into how many pieces the current mesh splits it (all 1 without a
    mesh): e.g. the rows and sequence positions each device holds of an activation."""
    axes = split_axes(logical, shape)
    if axes is None:
        return (1,) * len(shape)
    mesh = jax.sharding.get_abstract_mesh()
    return tuple(math.prod(mesh.shape[a] for a in dim) for dim in axes)


def require_one_device(setting: str, instead: str) -> None:
    """A ``ValueError`` while tracing when the current mesh has more than one device:
    for a ``setting`` that runs Pallas kernels on whole arrays (opaque to XLA's
    partitioner, which would gather every operand); ``instead`` names what to use."""
    mesh = jax.sharding.get_abstract_mesh()
    if mesh.size > 1:
        raise ValueError(f"{setting} runs on one device, and the mesh {dict(mesh.shape)} "
                         f"has more: use {instead}")
