"""Parameter creation with logical axis names, shared by every layer.

Logical names (mapped to mesh axes by ``tnl_jax.partitioning``'s rules): ``'vocab'``,
``'embed'``, ``'heads'``, ``'mlp'``, ``'layers'`` (the scanned stack axis) or ``None``.
Outside a mesh the annotation is kept as metadata only; under ``jax.set_mesh`` each
parameter is placed by the rules as it is created.
"""
from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
from flax import nnx

from tnl_jax.partitioning import constrain

Initializer = Callable[[jax.Array, tuple[int, ...], jnp.dtype], jax.Array]


def create_param(key: jax.Array, shape: tuple[int, ...], axes: tuple[str | None, ...],
                 dtype: jnp.dtype, init: Initializer) -> nnx.Param:
    """An ``nnx.Param`` initialised by ``init`` and annotated with ``axes``."""
    if len(axes) != len(shape):
        raise ValueError(f"axes {axes} do not match shape {shape}")
    placed = lambda *args: constrain(init(*args), axes)
    annotated = nnx.with_partitioning(placed, axes, eager_sharding=False)
    return nnx.Param(annotated(key, shape, dtype))


def normal(std: float) -> Initializer:
    return jax.nn.initializers.normal(std)
